"""cache_factory: the seed's import path for the cache engine."""

from .adapters import (
    ArgSpec,
    BlockIO,
    TransformerAdapter,
    register_adapter,
    registered_adapter,
    supported_models,
)
from .apply import apply_cache_on_pipe, apply_cache_on_transformer, denoising_run, disable_cache, summary
from .cache_types import CacheType
from .calibration import CalibratedOptions, calibrate, load_calibration, save_calibration, uniform_schedule
from .compile import set_compile_configs
from .config import CacheConfig, CFGConfig, DBCacheConfig, DBPruneConfig, TaylorSeerConfig, build_config
from .stats import CacheStats

__all__ = [
    "ArgSpec",
    "BlockIO",
    "CFGConfig",
    "CalibratedOptions",
    "CacheConfig",
    "CacheStats",
    "CacheType",
    "DBCacheConfig",
    "DBPruneConfig",
    "TaylorSeerConfig",
    "TransformerAdapter",
    "apply_cache_on_pipe",
    "apply_cache_on_transformer",
    "build_config",
    "calibrate",
    "denoising_run",
    "disable_cache",
    "load_calibration",
    "register_adapter",
    "registered_adapter",
    "save_calibration",
    "set_compile_configs",
    "summary",
    "supported_models",
    "uniform_schedule",
]
