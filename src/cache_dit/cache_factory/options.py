"""Options objects alongside `**options`, and defaults that fit small models.

`merge_options` turns `apply_cache_on_pipe(pipe, DBCacheConfig(...), TaylorSeerConfig(...), **kw)` into one
keyword dict (an option given twice raises); `fit_default_blocks` shrinks the default Fn/Bn for a model with few
blocks, never a value the user gave.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .._warnings import warn_at_caller
from .cache_types import CacheType
from .config import (
    CacheConfig,
    CFGConfig,
    DBCacheConfig,
    DBPruneConfig,
    TaylorSeerCacheType,
    TaylorSeerConfig,
)

OptionsObject = DBCacheConfig | DBPruneConfig | TaylorSeerConfig | CFGConfig | CacheConfig
_OBJECT_CACHE_TYPE = {DBCacheConfig: CacheType.DBCache, DBPruneConfig: CacheType.DBPrune}


def _object_options(obj: Any) -> dict[str, Any]:
    """The options an options object sets: its fields that differ from the dataclass defaults.

    Fields left at their default are left out, so they take the cache type's defaults exactly as a left-out
    keyword does (and may adapt to a small model, see `fit_default_blocks`).
    """
    if isinstance(obj, CacheConfig):
        return {k: v for k, v in obj.options.items() if k != "cache_type"}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value, default = getattr(obj, f.name), f.default
        if isinstance(obj, DBPruneConfig) and f.name == "max_dynamic_prune_threshold":
            default = 2.0 * obj.residual_diff_threshold  # None was resolved to this in __post_init__
        if (
            isinstance(obj, DBCacheConfig)
            and f.name in ("Bn_compute_blocks_ids", "compute_steps")
            and value is not None
        ):
            value = list(value)
        if value == default:
            continue
        if isinstance(obj, TaylorSeerConfig) and f.name in ("n_derivatives", "mix_orders"):
            out.setdefault("taylorseer_kwargs", {"n_derivatives": obj.n_derivatives})[f.name] = value
        elif isinstance(obj, TaylorSeerConfig) and f.name == "taylorseer_cache_type":
            out[f.name] = TaylorSeerCacheType(value).value
        else:
            out[f.name] = value
    return out


def merge_options(objects: Sequence[Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """Turn options objects (`DBCacheConfig(...)`, `TaylorSeerConfig(...)`, ...) plus keywords into one dict.

    An object of each kind at most; an option set both by an object and as a keyword raises (nothing is
    silently overridden); `DBCacheConfig` means cache_type DBCache and `DBPruneConfig` DBPrune (a `cache_type`
    keyword must agree). The result goes through `build_config`, so it is validated like keywords.
    """
    merged = dict(options)
    seen: dict[type, Any] = {}
    object_type: CacheType | None = None
    for obj in objects:
        kind = type(obj)
        if kind not in (DBCacheConfig, DBPruneConfig, TaylorSeerConfig, CFGConfig, CacheConfig):
            raise TypeError(
                f"options objects must be DBCacheConfig, DBPruneConfig, TaylorSeerConfig, CFGConfig or "
                f"CacheConfig, got {kind.__name__}: {obj!r} (other options go as keywords)"
            )
        if kind in seen:
            raise TypeError(f"got two {kind.__name__} objects; pass one of each kind")
        seen[kind] = obj
        implied = obj.cache_type if isinstance(obj, CacheConfig) else _OBJECT_CACHE_TYPE.get(kind)
        if implied is not None:
            if object_type is not None and object_type is not implied:
                raise ValueError(
                    f"{kind.__name__} (cache_type={implied.value}) conflicts with an options object for "
                    f"cache_type={object_type.value}; pass one algorithm"
                )
            object_type = implied
        for key, value in _object_options(obj).items():
            if key in merged:
                raise ValueError(
                    f"option {key!r} is given twice: {value!r} in {kind.__name__} and {merged[key]!r} "
                    f"as a keyword (or in another object); give it once"
                )
            merged[key] = value
    if object_type is not None:
        if "cache_type" in options and CacheType.type(options["cache_type"]) is not object_type:
            raise ValueError(
                f"cache_type={CacheType.type(options['cache_type']).value} conflicts with the options object "
                f"for cache_type={object_type.value}; leave cache_type out"
            )
        merged["cache_type"] = object_type
    return merged


def fit_default_blocks(
    config: CacheConfig, num_blocks: int, model_name: str, explicit: Collection[str]
) -> CacheConfig:
    """Shrink *defaulted* Fn/Bn to a model with fewer blocks than they need, with a warning naming the values.

    The defaults (Fn=8, Bn=8) are sized for FLUX.1-dev's 57 blocks. When Fn + Bn exceeds the model's blocks
    and the user left one or both out, the left-out ones shrink (both left out: Fn = Bn = max(1, blocks // 4);
    one left out: it shrinks to leave at least one middle block). Values the user gave are never changed:
    if they do not fit, `CacheConfig.check_blocks` raises. Also warns when DBPrune has no prunable block.
    """
    block_cfg = config.dbcache or config.dbprune
    if block_cfg is None:
        return config
    fn, bn = config.Fn, config.Bn
    if fn + bn > num_blocks:
        fn_default = "Fn_compute_blocks" not in explicit
        bn_default = "Bn_compute_blocks" not in explicit and "Bn_compute_blocks_ids" not in explicit
        min_fn = 1 if config.dbcache is not None else 0
        if fn_default and bn_default:
            fn = bn = max(1, num_blocks // 4)
            bn = max(0, min(bn, num_blocks - fn))
        elif fn_default:
            fn = max(min_fn, min(fn, num_blocks - bn - 1))
        elif bn_default:
            bn = max(0, min(bn, num_blocks - fn - 1))
        if (fn, bn) == (config.Fn, config.Bn) or fn + bn > num_blocks:
            return config  # explicit values that do not fit: check_blocks raises
        defaulted = [
            n for n, d in (("Fn_compute_blocks", fn_default), ("Bn_compute_blocks", bn_default)) if d
        ]
        warn_at_caller(
            f"cache-dit: Fn_compute_blocks + Bn_compute_blocks = {config.Fn} + {config.Bn} (default: "
            f"{', '.join(defaulted)}) exceeds the {num_blocks} transformer blocks of {model_name}; using "
            f"Fn_compute_blocks={fn}, Bn_compute_blocks={bn} (pass both to choose)",
            UserWarning,
        )
        block_cfg = dataclasses.replace(block_cfg, Fn_compute_blocks=fn, Bn_compute_blocks=bn)
        options = {**config.options, "Fn_compute_blocks": fn, "Bn_compute_blocks": bn}
        if config.dbcache is not None:
            config = dataclasses.replace(config, dbcache=block_cfg, options=options)
        else:
            config = dataclasses.replace(config, dbprune=block_cfg, options=options)
    prune = config.dbprune
    if prune is not None and prune.residual_diff_threshold > 0 and fn + bn <= num_blocks:
        never = set(prune.non_prune_blocks_ids)
        if not [i for i in range(fn, num_blocks - bn) if i not in never]:
            warn_at_caller(
                f"cache-dit: DBPrune has no block to prune on {model_name}: its {num_blocks} blocks are all "
                f"first/last compute blocks (Fn_compute_blocks={fn}, Bn_compute_blocks={bn}) or in "
                f"non_prune_blocks_ids={sorted(never)}; lower them to prune anything",
                UserWarning,
            )
    return config
