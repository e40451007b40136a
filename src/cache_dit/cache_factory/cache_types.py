"""`CacheType`: the cache algorithms, their aliases and their default options."""

from __future__ import annotations

import builtins
import numbers
from enum import Enum
from typing import Any

_ALIASES: dict[str, str] = {
    # NONE
    "none": "NONE",
    "no": "NONE",
    "nocache": "NONE",
    "no_cache": "NONE",
    "off": "NONE",
    # FBCache
    "fbcache": "FBCache",
    "fb": "FBCache",
    "first_block_cache": "FBCache",
    "firstblockcache": "FBCache",
    # DBCache
    "dbcache": "DBCache",
    "db": "DBCache",
    "dual_block_cache": "DBCache",
    "dualblockcache": "DBCache",
    # DBPrune
    "dbprune": "DBPrune",
    "dbp": "DBPrune",
    "prune": "DBPrune",
    "dynamic_block_prune": "DBPrune",
    "dynamicblockprune": "DBPrune",
}


class CacheType(str, Enum):
    """The cache algorithms. Accepts its members, their names and the aliases in `CacheType.type`."""

    NONE = "NONE"
    FBCache = "FBCache"
    DBCache = "DBCache"
    DBPrune = "DBPrune"

    def __str__(self) -> str:
        return self.value

    @staticmethod
    def type(cache_type: CacheType | str) -> CacheType:
        """Resolve a member, a name or an alias ("db", "fb", "dbprune", "none", ...), case-insensitively."""
        if isinstance(cache_type, CacheType):
            return cache_type
        if not isinstance(cache_type, str):
            raise TypeError(
                f"cache_type must be a CacheType or a str, got {type(cache_type).__name__}: {cache_type!r}"
            )
        key = cache_type.strip().lower().replace("-", "_")
        if key.startswith("cachetype."):
            key = key[len("cachetype.") :]
        if key not in _ALIASES:
            allowed = ", ".join(sorted({*(m.value for m in CacheType), *_ALIASES}))
            raise ValueError(f"cache_type={cache_type!r} is not a known cache type; allowed: {allowed}")
        return CacheType(_ALIASES[key])

    @staticmethod
    def default_options(cache_type: CacheType | str) -> dict[str, Any]:
        """The full option dict (including `cache_type`) a cache type runs with when options are left out."""
        ct = CacheType.type(cache_type)
        if ct is CacheType.NONE:
            return {"cache_type": ct}
        if ct is CacheType.DBPrune:
            return {
                "cache_type": ct,
                "residual_diff_threshold": 0.08,
                "Fn_compute_blocks": 8,
                "Bn_compute_blocks": 8,
                "warmup_steps": 8,
                "max_pruned_steps": -1,
                "enable_dynamic_prune_threshold": False,
                "max_dynamic_prune_threshold": None,
                "dynamic_prune_threshold_relax_ratio": 1.25,
                "residual_cache_update_interval": 1,
                "non_prune_blocks_ids": [],
                **_cfg_defaults(),
            }
        common = {
            "max_continuous_cached_steps": -1,
            "Bn_compute_blocks_ids": None,
            "non_compute_blocks_diff_threshold": 0.08,
            "compute_steps": None,
            "enable_taylorseer": False,
            "enable_encoder_taylorseer": False,
            "taylorseer_cache_type": "residual",
            "taylorseer_kwargs": {"n_derivatives": 2},
            **_cfg_defaults(),
        }
        if ct is CacheType.FBCache:
            return {
                "cache_type": ct,
                "Fn_compute_blocks": 1,
                "Bn_compute_blocks": 0,
                "residual_diff_threshold": 0.08,
                "warmup_steps": 8,
                "max_cached_steps": 8,
                **common,
            }
        return {
            "cache_type": ct,
            "Fn_compute_blocks": 8,
            "Bn_compute_blocks": 8,
            "residual_diff_threshold": 0.12,
            "warmup_steps": 8,
            "max_cached_steps": -1,
            **common,
        }

    @staticmethod
    def range(start: int, end: int, step: int = 1) -> list[int]:
        """Sorted block ids `start, start+step, ... < end`, always including 0 and `end - 1`.

        Handy for `Bn_compute_blocks_ids`: `CacheType.range(0, 8, 3) == [0, 3, 6, 7]`.
        """
        for name, value in (("start", start), ("end", end), ("step", step)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"CacheType.range: {name} must be an int, got {value!r}")
        start, end, step = int(start), int(end), int(step)  # numpy integers too
        if step <= 0:
            raise ValueError(f"CacheType.range: step must be >= 1, got {step}")
        if end <= 0 or start < 0 or start >= end:
            raise ValueError(f"CacheType.range: need 0 <= start < end, got start={start}, end={end}")
        return sorted({0, end - 1, *builtins.range(start, end, step)})


def _cfg_defaults() -> dict[str, Any]:
    return {
        # None: take what the model's adapter knows (Wan: True; FLUX, HunyuanVideo, CogVideoX, Mochi: False).
        "do_separate_classifier_free_guidance": None,
        "cfg_compute_first": False,
        "cfg_diff_compute_separate": True,
    }
