"""cache-dit: training-free cache acceleration for diffusion transformers in diffusers.

The cache API is loaded on first use, so `cache_dit.metrics` and its CLI start without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CacheStats",
    "CacheType",
    "apply_cache_on_pipe",
    "apply_cache_on_transformer",
    "denoising_run",
    "disable_cache",
    "set_compile_configs",
    "summary",
]

if TYPE_CHECKING:
    from .cache_factory import (
        CacheStats,
        CacheType,
        apply_cache_on_pipe,
        apply_cache_on_transformer,
        denoising_run,
        disable_cache,
        set_compile_configs,
        summary,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import cache_factory

        return getattr(cache_factory, name)
    raise AttributeError(f"module 'cache_dit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
