"""cache-dit: training-free cache acceleration for diffusion transformers in diffusers.

The cache API is loaded on first use, so `cache_dit.metrics` and its CLI start without importing torch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BasicCacheConfig",
    "BasicPruneConfig",
    "CFGConfig",
    "CacheStats",
    "CacheType",
    "DBCacheConfig",
    "DBPruneConfig",
    "TaylorSeerCalibratorConfig",
    "TaylorSeerConfig",
    "apply_cache_on_pipe",
    "apply_cache_on_transformer",
    "calibrate",
    "denoising_run",
    "disable_cache",
    "enable_cache",
    "load_calibration",
    "save_calibration",
    "set_compile_configs",
    "summary",
    "uniform_schedule",
]
_LAZY = set(__all__)
# cache-dit 1.x's entry point and config names (cache_dit.compat); DBCacheConfig / DBPruneConfig there build this
# library's objects from this library's names and the 1.x form from 1.x names
_COMPAT = {
    "BasicCacheConfig",
    "BasicPruneConfig",
    "DBCacheConfig",
    "DBPruneConfig",
    "TaylorSeerCalibratorConfig",
    "enable_cache",
}
# cache-dit 1.x names with no counterpart here: an AttributeError that says what to use
_V1_ONLY = {
    "BlockAdapter",
    "DMDCalibratorConfig",
    "FoCaCalibratorConfig",
    "ForwardPattern",
    "ParallelismConfig",
    "ParamsModifier",
    "refresh_context",
    "steps_mask",
}
__all__ += ["set_verbose"]

if TYPE_CHECKING:
    from .cache_factory import (
        CacheStats,
        CacheType,
        CFGConfig,
        DBCacheConfig,
        DBPruneConfig,
        TaylorSeerConfig,
        apply_cache_on_pipe,
        apply_cache_on_transformer,
        calibrate,
        denoising_run,
        disable_cache,
        load_calibration,
        save_calibration,
        set_compile_configs,
        summary,
        uniform_schedule,
    )
    from .compat import BasicCacheConfig, BasicPruneConfig, TaylorSeerCalibratorConfig, enable_cache


def __getattr__(name: str) -> Any:
    if name in _COMPAT:
        from . import compat

        return getattr(compat, name)
    if name in _LAZY:
        from . import cache_factory

        return getattr(cache_factory, name)
    if name in _V1_ONLY:
        from .compat import MISSING_V1_NAMES

        raise AttributeError(
            f"cache_dit.{name} is cache-dit 1.x's and not available here: {MISSING_V1_NAMES[name]}"
        )
    raise AttributeError(f"module 'cache_dit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


logger = logging.getLogger("cache_dit")
_verbose_handler: logging.Handler | None = None


def set_verbose(enabled: bool = True) -> None:
    """Log every cache decision (step, branch, diff, cached or computed) on stderr; off by default.

    The same as `logging.getLogger("cache_dit").setLevel(logging.DEBUG)` with a stderr handler attached;
    use the logger directly to route the messages elsewhere.
    """
    global _verbose_handler
    if enabled:
        if _verbose_handler is None:
            _verbose_handler = logging.StreamHandler()
            _verbose_handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            logger.addHandler(_verbose_handler)
        logger.setLevel(logging.DEBUG)
    else:
        if _verbose_handler is not None:
            logger.removeHandler(_verbose_handler)
            _verbose_handler = None
        logger.setLevel(logging.NOTSET)
