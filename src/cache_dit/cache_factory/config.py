"""Validated, frozen configs built from the user's `**options`.

Every check happens here, before anything touches a model: a bad option raises a `ValueError` or `TypeError`
naming the option, the value and what is allowed. Checks that need the model (Fn + Bn against the number of
blocks, block ids in range) live in `CacheConfig.check_blocks`, called once the adapter knows the count.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from .cache_types import CacheType


class TaylorSeerCacheType(str, Enum):
    """What TaylorSeer forecasts on a cached step."""

    RESIDUAL = "residual"  # the middle blocks' residual, added to the current input
    HIDDEN_STATES = "hidden_states"  # the hidden states after the middle blocks, used as they are
    # the transformer's whole output (the model's prediction): a cached step runs no part of the transformer.
    # Needs a fixed schedule (compute_steps) with Fn_compute_blocks=0 and Bn_compute_blocks=0.
    OUTPUT = "output"


# ----------------------------------------------------------------------------------------------------------
# Field checks (user input: never `assert`)
# ----------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """numpy scalars (and 0-d / 1-d arrays) as the Python numbers they hold; lists, tuples, dicts inside."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim <= 1:
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _plain_fields(config: Any) -> None:
    """Replace numpy scalars in a frozen dataclass's fields by Python numbers (before the checks)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        plain = _plain(value)
        if plain is not value:
            object.__setattr__(config, f.name, plain)


def _check_int(name: str, value: Any, minimum: int | None = None, allow_minus_one: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if allow_minus_one and value == -1:
        return
    if minimum is not None and value < minimum:
        extra = " or -1 (no limit)" if allow_minus_one else ""
        raise ValueError(f"{name} must be >= {minimum}{extra}, got {value}")


def _check_float(name: str, value: Any, minimum: float = 0.0, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}: {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {minimum}, got {value}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}: {value!r}")


def _check_ids(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of ints, got {type(value).__name__}: {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"{name} must be a list of ints, got item {item!r} in {list(value)!r}")
        if item < 0:
            raise ValueError(f"{name} must hold ids >= 0, got {item} in {list(value)!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} has duplicate ids: {list(value)!r}")
    return tuple(sorted(value))


# ----------------------------------------------------------------------------------------------------------
# One frozen dataclass per algorithm
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DBCacheConfig:
    """Dual-block cache (FBCache is the special case Fn=1, Bn=0).

    Attributes:
        Fn_compute_blocks: first blocks always computed; their residual decides. Higher: better quality,
            less speed (default 8).
        Bn_compute_blocks: last blocks always computed, correcting the cached middle. Higher: better quality,
            less speed (default 8).
        residual_diff_threshold: a step is cached when the relative L1 change of the first Fn blocks'
            residual is below it. Higher: more cached steps, more speed, lower quality. 0 disables caching
            (default 0.12; FBCache 0.08).
        warmup_steps: steps 0 .. warmup_steps-1 are never cached (default 8).
        max_cached_steps: cap on cached steps per call and CFG branch, -1 = no cap (default -1; FBCache 8).
        max_continuous_cached_steps: after this many cached steps in a row the next one is computed fully,
            -1 = no cap (default -1).
        Bn_compute_blocks_ids: positions 0..Bn-1 within the last Bn blocks that still run on cached steps;
            the others reuse their own residual when their input moved less than
            `non_compute_blocks_diff_threshold`. None (default): all Bn blocks run.
        non_compute_blocks_diff_threshold: see above (default 0.08).
        compute_steps: a fixed schedule instead of the threshold gate: the denoising steps (0-based, per
            call and CFG branch) that run in full; every other step is served from the cache (forecast with
            TaylorSeer when it is enabled). No host sync decides a step, and the speedup is known in advance.
            `Fn_compute_blocks=0` is allowed only with a schedule (nothing needs to run to decide). The
            threshold, warmup and caps do not apply. `cache_dit.calibrate` searches one for a pipeline.
            None (default): the threshold gate.
    """

    Fn_compute_blocks: int = 8
    Bn_compute_blocks: int = 8
    residual_diff_threshold: float = 0.12
    warmup_steps: int = 8
    max_cached_steps: int = -1
    max_continuous_cached_steps: int = -1
    Bn_compute_blocks_ids: tuple[int, ...] | None = None
    non_compute_blocks_diff_threshold: float = 0.08
    compute_steps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _plain_fields(self)
        if self.compute_steps is not None:
            object.__setattr__(self, "compute_steps", _check_ids("compute_steps", self.compute_steps))
        _check_int("Fn_compute_blocks", self.Fn_compute_blocks)  # an int first: 0.0 and False are not ints
        if self.compute_steps is not None and self.Fn_compute_blocks == 0:
            pass  # a fixed schedule needs no first blocks to decide
        elif self.Fn_compute_blocks == 0:
            raise ValueError(
                "Fn_compute_blocks=0 needs compute_steps (a fixed schedule): the threshold gate decides from "
                "the first Fn blocks' residual; allowed: Fn_compute_blocks >= 1, or pass compute_steps"
            )
        else:
            _check_int("Fn_compute_blocks", self.Fn_compute_blocks, minimum=1)
        _check_int("Bn_compute_blocks", self.Bn_compute_blocks, minimum=0)
        _check_float("residual_diff_threshold", self.residual_diff_threshold)
        _check_int("warmup_steps", self.warmup_steps, minimum=0)
        _check_int("max_cached_steps", self.max_cached_steps, minimum=0, allow_minus_one=True)
        _check_int(
            "max_continuous_cached_steps", self.max_continuous_cached_steps, minimum=1, allow_minus_one=True
        )
        _check_float("non_compute_blocks_diff_threshold", self.non_compute_blocks_diff_threshold)
        if self.Bn_compute_blocks_ids is not None:
            ids = _check_ids("Bn_compute_blocks_ids", self.Bn_compute_blocks_ids)
            bad = [i for i in ids if i >= self.Bn_compute_blocks]
            if bad and self.Bn_compute_blocks == 0:
                raise ValueError(
                    f"Bn_compute_blocks_ids={list(ids)} needs Bn_compute_blocks >= 1 (it selects among the last "
                    "Bn_compute_blocks blocks, and Bn_compute_blocks=0); use None or raise Bn_compute_blocks"
                )
            if bad:
                raise ValueError(
                    f"Bn_compute_blocks_ids={list(ids)} has ids {bad} outside the last "
                    f"Bn_compute_blocks={self.Bn_compute_blocks} blocks; allowed: 0..{self.Bn_compute_blocks - 1}"
                )
            object.__setattr__(self, "Bn_compute_blocks_ids", ids)


@dataclass(frozen=True)
class DBPruneConfig:
    """Dynamic block prune: each middle block is skipped when its own input barely moved.

    Attributes:
        residual_diff_threshold: a block is pruned when the relative L1 change of its input since it was last
            computed is below it. Higher: more pruning, more speed, lower quality. 0 disables (default 0.08).
        Fn_compute_blocks / Bn_compute_blocks: first / last blocks never pruned (default 8 / 8).
        warmup_steps: no pruning on steps 0 .. warmup_steps-1 (default 8).
        max_pruned_steps: after this many steps with any pruned block, stop pruning; -1 = no cap (default -1).
        enable_dynamic_prune_threshold: within a step, raise the threshold to the mean of the diffs already
            seen in that step times `dynamic_prune_threshold_relax_ratio`, capped by
            `max_dynamic_prune_threshold` (default False).
        max_dynamic_prune_threshold: the cap; None = 2 x residual_diff_threshold.
        dynamic_prune_threshold_relax_ratio: see above (default 1.25).
        residual_cache_update_interval: a computed block refreshes its stored input and residual only on steps
            where step % interval == 0 (default 1: every step). Higher: cheaper, staler.
        non_prune_blocks_ids: global block ids never pruned (FLUX: single blocks after the dual blocks).
    """

    residual_diff_threshold: float = 0.08
    Fn_compute_blocks: int = 8
    Bn_compute_blocks: int = 8
    warmup_steps: int = 8
    max_pruned_steps: int = -1
    enable_dynamic_prune_threshold: bool = False
    max_dynamic_prune_threshold: float | None = None
    dynamic_prune_threshold_relax_ratio: float = 1.25
    residual_cache_update_interval: int = 1
    non_prune_blocks_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _plain_fields(self)
        _check_float("residual_diff_threshold", self.residual_diff_threshold)
        _check_int("Fn_compute_blocks", self.Fn_compute_blocks, minimum=0)
        _check_int("Bn_compute_blocks", self.Bn_compute_blocks, minimum=0)
        _check_int("warmup_steps", self.warmup_steps, minimum=0)
        _check_int("max_pruned_steps", self.max_pruned_steps, minimum=0, allow_minus_one=True)
        _check_bool("enable_dynamic_prune_threshold", self.enable_dynamic_prune_threshold)
        if self.max_dynamic_prune_threshold is None:
            object.__setattr__(self, "max_dynamic_prune_threshold", 2.0 * self.residual_diff_threshold)
        else:
            _check_float("max_dynamic_prune_threshold", self.max_dynamic_prune_threshold)
            if self.max_dynamic_prune_threshold < self.residual_diff_threshold:
                raise ValueError(
                    f"max_dynamic_prune_threshold={self.max_dynamic_prune_threshold} must be >= "
                    f"residual_diff_threshold={self.residual_diff_threshold} (or None for 2x the threshold)"
                )
        _check_float(
            "dynamic_prune_threshold_relax_ratio", self.dynamic_prune_threshold_relax_ratio, 0.0, True
        )
        _check_int("residual_cache_update_interval", self.residual_cache_update_interval, minimum=1)
        object.__setattr__(
            self, "non_prune_blocks_ids", _check_ids("non_prune_blocks_ids", self.non_prune_blocks_ids)
        )


@dataclass(frozen=True)
class TaylorSeerConfig:
    """Forecast the cached quantity with a Taylor expansion instead of re-using it as it is.

    Memory: (n_derivatives + 1) tensors per forecast stream and CFG branch.
    """

    enable_taylorseer: bool = False  # forecast the hidden stream
    enable_encoder_taylorseer: bool = False  # forecast the encoder (text) stream, where blocks update it
    taylorseer_cache_type: TaylorSeerCacheType = TaylorSeerCacheType.RESIDUAL
    n_derivatives: int = 2  # order m of the expansion; 0 = plain reuse
    # mix the order-0..m forecasts, weighted by how well each forecast the last computed value (see taylorseer.py)
    mix_orders: bool = False

    def __post_init__(self) -> None:
        _plain_fields(self)
        _check_bool("enable_taylorseer", self.enable_taylorseer)
        _check_bool("enable_encoder_taylorseer", self.enable_encoder_taylorseer)
        value = self.taylorseer_cache_type
        if not isinstance(value, (str, TaylorSeerCacheType)):
            raise TypeError(f"taylorseer_cache_type must be a str, got {type(value).__name__}: {value!r}")
        try:
            object.__setattr__(self, "taylorseer_cache_type", TaylorSeerCacheType(value))
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in TaylorSeerCacheType)
            raise ValueError(f"taylorseer_cache_type={value!r} is not allowed; allowed: {allowed}") from None
        _check_int("taylorseer_kwargs['n_derivatives']", self.n_derivatives, minimum=0)
        _check_bool("taylorseer_kwargs['mix_orders']", self.mix_orders)

    @property
    def enabled(self) -> bool:
        return self.enable_taylorseer or self.enable_encoder_taylorseer


@dataclass(frozen=True)
class CFGConfig:
    """How the conditional and unconditional (CFG) transformer calls are kept apart.

    Attributes:
        do_separate_classifier_free_guidance: the pipeline runs two transformer calls per step; each branch
            gets its own buffers and stats. None: the model's adapter default. Explicit branch marks from the
            pipeline (`transformer.cache_context("cond"/"uncond")`) win over this option.
        cfg_compute_first: without marks, the first call of each step is the unconditional one.
        cfg_diff_compute_separate: False: the first call of a step decides for both branches.
    """

    do_separate_classifier_free_guidance: bool | None = None
    cfg_compute_first: bool = False
    cfg_diff_compute_separate: bool = True

    def __post_init__(self) -> None:
        _plain_fields(self)
        if self.do_separate_classifier_free_guidance is not None:
            _check_bool("do_separate_classifier_free_guidance", self.do_separate_classifier_free_guidance)
        _check_bool("cfg_compute_first", self.cfg_compute_first)
        _check_bool("cfg_diff_compute_separate", self.cfg_diff_compute_separate)


@dataclass(frozen=True)
class CacheConfig:
    """Everything `apply_cache_on_pipe` was asked for, validated. `options` is the resolved option dict."""

    cache_type: CacheType
    dbcache: DBCacheConfig | None = None
    dbprune: DBPruneConfig | None = None
    taylorseer: TaylorSeerConfig = field(default_factory=TaylorSeerConfig)
    cfg: CFGConfig = field(default_factory=CFGConfig)
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def Fn(self) -> int:  # noqa: N802 - the option's own name
        block_cfg = self.dbcache or self.dbprune
        return block_cfg.Fn_compute_blocks if block_cfg else 0

    @property
    def Bn(self) -> int:  # noqa: N802
        block_cfg = self.dbcache or self.dbprune
        return block_cfg.Bn_compute_blocks if block_cfg else 0

    def check_blocks(self, num_blocks: int, model_name: str) -> None:
        """Checks that need the model's block count (raised before anything is patched)."""
        if self.cache_type is CacheType.NONE:
            return
        if self.Fn + self.Bn > num_blocks:
            raise ValueError(
                f"Fn_compute_blocks + Bn_compute_blocks = {self.Fn} + {self.Bn} = {self.Fn + self.Bn} exceeds "
                f"the {num_blocks} transformer blocks of {model_name}; allowed: Fn + Bn <= {num_blocks}"
            )
        if self.dbprune is not None:
            bad = [i for i in self.dbprune.non_prune_blocks_ids if i >= num_blocks]
            if bad:
                raise ValueError(
                    f"non_prune_blocks_ids has ids {bad} outside the {num_blocks} blocks of {model_name}; "
                    f"allowed: 0..{num_blocks - 1}"
                )


_DBCACHE_KEYS = {f for f in DBCacheConfig.__dataclass_fields__}
# the threshold gate's options: meaningless with a fixed schedule (compute_steps)
_GATE_KEYS = {"residual_diff_threshold", "warmup_steps", "max_cached_steps", "max_continuous_cached_steps"}
_DBPRUNE_KEYS = {f for f in DBPruneConfig.__dataclass_fields__}
_TAYLORSEER_KEYS = {
    "enable_taylorseer",
    "enable_encoder_taylorseer",
    "taylorseer_cache_type",
    "taylorseer_kwargs",
}
_CFG_KEYS = {f for f in CFGConfig.__dataclass_fields__}
_PARALLEL_KEYS = {"parallel_group"}  # any cache type; checked by cache_dit.parallel when the runner is built
_ALL_KEYS = {"cache_type"} | _DBCACHE_KEYS | _DBPRUNE_KEYS | _TAYLORSEER_KEYS | _CFG_KEYS | _PARALLEL_KEYS


def build_config(**options: Any) -> CacheConfig:
    """Validate `**options` into a `CacheConfig`. Left-out options take `CacheType.default_options`."""
    options = {key: _plain(value) for key, value in options.items()}
    cache_type = CacheType.type(options.get("cache_type", CacheType.DBCache))
    unknown = sorted(set(options) - _ALL_KEYS)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(_ALL_KEYS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown option {key!r}{hint} (allowed options: {', '.join(sorted(_ALL_KEYS))})")

    defaults = CacheType.default_options(cache_type)
    misplaced = sorted(
        k for k in options if k not in defaults and k != "cache_type" and k not in _PARALLEL_KEYS
    )
    if misplaced and cache_type is CacheType.NONE:
        raise ValueError(
            f"option {misplaced[0]!r} does not apply to cache_type=NONE, which takes no other options "
            "(it removes the cache)"
        )
    if misplaced:
        raise ValueError(
            f"option {misplaced[0]!r} does not apply to cache_type={cache_type.value}; "
            f"options for {cache_type.value}: {', '.join(sorted(k for k in defaults if k != 'cache_type'))}"
        )
    if cache_type is CacheType.FBCache:
        for key, fixed in (("Fn_compute_blocks", 1), ("Bn_compute_blocks", 0)):
            if key in options and options[key] != fixed:
                raise ValueError(
                    f"{key}={options[key]!r} is not allowed with cache_type=FBCache, which is DBCache with "
                    f"Fn_compute_blocks=1, Bn_compute_blocks=0; use cache_type=DBCache for other values"
                )

    if options.get("compute_steps") is not None:
        gate = sorted(k for k in _GATE_KEYS if k in options)
        if gate:
            raise ValueError(
                f"option {gate[0]!r} does not apply with compute_steps (a fixed schedule decides which steps "
                "run); leave it out, or drop compute_steps to use the threshold gate"
            )
    resolved = {**defaults, **options, "cache_type": cache_type}
    if cache_type is CacheType.NONE:
        return CacheConfig(cache_type=cache_type, options=resolved)

    cfg = CFGConfig(**{k: resolved[k] for k in _CFG_KEYS})
    if cache_type is CacheType.DBPrune:
        prune = DBPruneConfig(**{k: resolved[k] for k in _DBPRUNE_KEYS})
        return CacheConfig(cache_type=cache_type, dbprune=prune, cfg=cfg, options=resolved)

    db_kwargs = {k: resolved[k] for k in _DBCACHE_KEYS}
    for key in ("Bn_compute_blocks_ids", "compute_steps"):
        ids = db_kwargs[key]
        if ids is not None and not isinstance(ids, (str, bytes)) and isinstance(ids, Sequence):
            db_kwargs[key] = tuple(ids)
    db = DBCacheConfig(**db_kwargs)

    ts_kwargs = resolved["taylorseer_kwargs"]
    if ts_kwargs is None:
        ts_kwargs = {}
    if not isinstance(ts_kwargs, Mapping):
        raise TypeError(f"taylorseer_kwargs must be a dict, got {type(ts_kwargs).__name__}: {ts_kwargs!r}")
    unknown_ts = sorted(set(ts_kwargs) - {"n_derivatives", "mix_orders"})
    if unknown_ts:
        raise ValueError(
            f"taylorseer_kwargs has unknown key {unknown_ts[0]!r}; allowed keys: 'n_derivatives', 'mix_orders'"
        )
    taylorseer = TaylorSeerConfig(
        enable_taylorseer=resolved["enable_taylorseer"],
        enable_encoder_taylorseer=resolved["enable_encoder_taylorseer"],
        taylorseer_cache_type=resolved["taylorseer_cache_type"],
        n_derivatives=ts_kwargs.get("n_derivatives", 2),
        mix_orders=ts_kwargs.get("mix_orders", False),
    )
    if taylorseer.taylorseer_cache_type is TaylorSeerCacheType.OUTPUT:
        _check_output_forecast(cache_type, db, taylorseer)
    return CacheConfig(cache_type=cache_type, dbcache=db, taylorseer=taylorseer, cfg=cfg, options=resolved)


def _check_output_forecast(cache_type: CacheType, db: DBCacheConfig, ts: TaylorSeerConfig) -> None:
    """taylorseer_cache_type='output' forecasts the whole transformer output on a fixed schedule."""
    needs = "taylorseer_cache_type='output' (forecast the transformer's whole output)"
    if cache_type is CacheType.FBCache:
        raise ValueError(
            f"{needs} runs no block on a cached step, but cache_type=FBCache always runs its first block; use "
            "cache_type=DBCache with Fn_compute_blocks=0, Bn_compute_blocks=0 and compute_steps"
        )
    if not ts.enable_taylorseer:
        raise ValueError(f"{needs} needs enable_taylorseer=True")
    if ts.enable_encoder_taylorseer:
        raise ValueError(
            f"{needs} forecasts no encoder stream: a cached step runs no block; leave enable_encoder_taylorseer "
            "False"
        )
    if db.compute_steps is None:
        raise ValueError(f"{needs} needs compute_steps (a fixed schedule): no block runs to decide a step")
    if db.Fn_compute_blocks != 0 or db.Bn_compute_blocks != 0:
        raise ValueError(
            f"{needs} runs no block on a cached step; allowed: Fn_compute_blocks=0 and Bn_compute_blocks=0, "
            f"got {db.Fn_compute_blocks} and {db.Bn_compute_blocks}"
        )
