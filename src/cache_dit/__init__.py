"""cache-dit: training-free cache acceleration for diffusion transformers in diffusers."""

from .cache_factory import (
    CacheStats,
    CacheType,
    apply_cache_on_pipe,
    apply_cache_on_transformer,
    disable_cache,
    summary,
)

__version__ = "0.1.0"

__all__ = [
    "CacheStats",
    "CacheType",
    "apply_cache_on_pipe",
    "apply_cache_on_transformer",
    "disable_cache",
    "summary",
]
