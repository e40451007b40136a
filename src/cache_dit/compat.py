"""cache-dit 1.x's entry point on this library: `cache_dit.enable_cache(pipe, cache_config=..., calibrator_config=...)`.

cache-dit 1.x (the upstream line) configures a cache with `DBCacheConfig(max_warmup_steps=8, ...)` (an alias of its
`BasicCacheConfig`), `DBPruneConfig(...)` and `TaylorSeerCalibratorConfig(taylorseer_order=1)`, passed to
`enable_cache`. Here those calls run unchanged: each 1.x option is mapped onto this library's
(`apply_cache_on_pipe` / `apply_cache_on_transformer` options), with one warning line naming this library's spelling
wherever it differs, and a 1.x feature this library does not have raises a `ValueError` that says so.

| cache-dit 1.x | here |
| --- | --- |
| `Fn_compute_blocks`, `Bn_compute_blocks`, `residual_diff_threshold`, `max_cached_steps`, `max_continuous_cached_steps`, `cfg_compute_first`, `cfg_diff_compute_separate` | the same names |
| `max_warmup_steps` | `warmup_steps` |
| `enable_separate_cfg` | `do_separate_classifier_free_guidance` |
| `steps_computation_mask` with `steps_computation_policy="static"` | `compute_steps` (the mask's 1 steps; a fixed schedule) |
| `num_inference_steps` | a bare transformer's `num_inference_steps`; not needed for a pipeline (each call is one run) |
| `TaylorSeerCalibratorConfig(taylorseer_order=m, ...)` | `enable_taylorseer`, `enable_encoder_taylorseer`, `taylorseer_cache_type`, `taylorseer_kwargs={"n_derivatives": m}` |
| DBPrune: `non_prune_block_ids`, `max_cached_steps` | `non_prune_blocks_ids`, `max_pruned_steps` |
| not available | `warmup_interval != 1`, `steps_computation_policy="dynamic"` with a mask, `max_accumulated_residual_diff_threshold`, FoCa / DMD calibrators, `BlockAdapter`, `ParamsModifier`, `parallelism_config`, `attention_backend` |

Options left out take 1.x's defaults (Fn 8, Bn 0, threshold 0.08, warmup 8, TaylorSeer order 1), not this
library's (Bn 8, threshold 0.12, order 2); a left-out Fn shrinks on a model with fewer blocks, with a warning.

The name clash: this library has its own `cache_dit.DBCacheConfig` and `cache_dit.DBPruneConfig` (frozen, this
library's names). `cache_dit.DBCacheConfig(...)` builds this library's object when given this library's names (or only
names both share), and the 1.x form (`BasicCacheConfig`) when given any 1.x-only name (`max_warmup_steps`,
`enable_separate_cfg`, ...); mixing both kinds of names is a `TypeError`. The same for `DBPruneConfig`. `isinstance`
accepts either form.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from ._warnings import warn_at_caller
from .cache_factory import config as _native
from .cache_factory.cache_types import CacheType
from .cache_factory.options import merge_options as _merge_options

__all__ = [
    "BasicCacheConfig",
    "BasicPruneConfig",
    "DBCacheConfig",
    "DBPruneConfig",
    "TaylorSeerCalibratorConfig",
    "enable_cache",
]

# cache-dit 1.x's BasicCacheConfig (= its DBCacheConfig) fields and defaults
_CACHE_FIELDS: dict[str, Any] = {
    "cache_type": CacheType.DBCache,
    "Fn_compute_blocks": 8,
    "Bn_compute_blocks": 0,
    "residual_diff_threshold": 0.08,
    "max_accumulated_residual_diff_threshold": None,
    "max_warmup_steps": 8,
    "warmup_interval": 1,
    "max_cached_steps": -1,
    "max_continuous_cached_steps": -1,
    "enable_separate_cfg": None,
    "cfg_compute_first": False,
    "cfg_diff_compute_separate": True,
    "num_inference_steps": None,
    "steps_computation_mask": None,
    "steps_computation_policy": "dynamic",
}
# cache-dit 1.x's DBPruneConfig: the same plus the pruning options
_PRUNE_FIELDS: dict[str, Any] = {
    **_CACHE_FIELDS,
    "cache_type": CacheType.DBPrune,
    "enable_dynamic_prune_threshold": False,
    "max_dynamic_prune_threshold": None,
    "dynamic_prune_threshold_relax_ratio": 1.25,
    "non_prune_block_ids": [],
    "force_reduce_calibrator_vram": False,
}
_CALIBRATOR_FIELDS: dict[str, Any] = {
    "enable_calibrator": True,
    "enable_encoder_calibrator": True,
    "calibrator_type": "taylorseer",
    "calibrator_cache_type": "residual",
    "calibrator_kwargs": {},
    "taylorseer_order": 1,
}
# 1.x's enable_cache(**kwargs): its config fields given directly, and the TaylorSeer switches
_KWARG_CALIBRATOR = {
    "enable_taylorseer": "enable_calibrator",
    "enable_encoder_taylorseer": "enable_encoder_calibrator",
    "taylorseer_cache_type": "calibrator_cache_type",
    "taylorseer_order": "taylorseer_order",
}
# 1.x names with no counterpart here, for `cache_dit.<name>` (a clear AttributeError)
MISSING_V1_NAMES: dict[str, str] = {
    "BlockAdapter": "pass the pipeline or transformer itself; a model the registry does not know takes "
    "adapter='auto' or adapter=dict(blocks=[...]) in apply_cache_on_pipe / apply_cache_on_transformer",
    "ForwardPattern": "block layouts are declared with adapter=dict(blocks=[...], returns=...) instead",
    "ParamsModifier": "per-denoiser options go in apply_cache_on_pipe(per_denoiser={'transformer_2': {...}})",
    "FoCaCalibratorConfig": "the FoCa calibrator is not available; use TaylorSeerCalibratorConfig or cache_dit.calibrate",
    "DMDCalibratorConfig": "the DMD calibrator is not available; use TaylorSeerCalibratorConfig or cache_dit.calibrate",
    "ParallelismConfig": "use diffusers' transformer.enable_parallelism(...); the cache follows its group",
    "refresh_context": "not needed: every pipeline call (or denoising_run) starts with fresh cache state",
    "steps_mask": "give the steps to compute as compute_steps=[...] (or cache_dit.uniform_schedule)",
}


def _close(name: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class _V1Config:
    """A cache-dit 1.x config: its fields with 1.x's defaults; `given` holds the names the caller set."""

    _fields: dict[str, Any] = {}

    def __init__(self, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in self._fields:
                raise TypeError(
                    f"{type(self).__name__} (cache-dit 1.x) has no option {key!r}{_close(key, self._fields)}; "
                    f"its options: {', '.join(self._fields)}"
                )
        self.given = frozenset(kwargs)
        for key, default in self._fields.items():
            value = kwargs.get(key, default)
            setattr(
                self,
                key,
                dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value,
            )

    def update(self, **kwargs: Any) -> _V1Config:
        """1.x's update: set the given options (None leaves one as it is)."""
        for key, value in kwargs.items():
            if key not in self._fields:
                raise TypeError(
                    f"{type(self).__name__} (cache-dit 1.x) has no option {key!r}{_close(key, self._fields)}"
                )
            if value is not None:
                setattr(self, key, value)
                self.given = self.given | {key}
        return self

    def as_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._fields}

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={getattr(self, key)!r}" for key in self._fields if key in self.given)
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.as_dict() == self.as_dict()  # type: ignore[attr-defined]


class BasicCacheConfig(_V1Config):
    """cache-dit 1.x's cache config (its `DBCacheConfig` is the same class): 1.x names and defaults
    (Fn_compute_blocks=8, Bn_compute_blocks=0, residual_diff_threshold=0.08, max_warmup_steps=8, ...), for
    `cache_dit.enable_cache`. See `cache_dit.compat` for how each maps onto this library's options."""

    _fields = _CACHE_FIELDS


class BasicPruneConfig(_V1Config):
    """cache-dit 1.x's `DBPruneConfig`: 1.x names and defaults, for `cache_dit.enable_cache`."""

    _fields = _PRUNE_FIELDS


class TaylorSeerCalibratorConfig(_V1Config):
    """cache-dit 1.x's TaylorSeer calibrator: `taylorseer_order` (default 1) on the hidden and encoder streams;
    maps onto `enable_taylorseer`, `enable_encoder_taylorseer`, `taylorseer_cache_type` and
    `taylorseer_kwargs={"n_derivatives": taylorseer_order}`."""

    _fields = _CALIBRATOR_FIELDS


# ----------------------------------------------------------------------------------------------------------
# cache_dit.DBCacheConfig / DBPruneConfig: this library's object, or the 1.x form for 1.x names
# ----------------------------------------------------------------------------------------------------------


class _EitherForm(type):
    """`Cls(...)` builds this library's config from this library's names, the 1.x form from 1.x-only names."""

    _native: type
    _v1: type

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        native_fields = set(cls._native.__dataclass_fields__)
        v1_only = sorted(set(kwargs) & (set(cls._v1._fields) - native_fields))
        native_only = sorted(set(kwargs) & (native_fields - set(cls._v1._fields)))
        if v1_only and native_only:
            raise TypeError(
                f"{cls.__name__}(...) mixes this library's names ({', '.join(native_only)}) with cache-dit 1.x's "
                f"({', '.join(v1_only)}); use one set (see cache_dit.compat for the mapping)"
            )
        if v1_only and not args:
            return cls._v1(**kwargs)
        return cls._native(*args, **kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, (cls._native, cls._v1))


class DBCacheConfig(_native.DBCacheConfig, metaclass=_EitherForm):
    __doc__ = (
        f"{_native.DBCacheConfig.__doc__}\n"
        "    Given any cache-dit 1.x-only name (max_warmup_steps, enable_separate_cfg, steps_computation_mask, ...),\n"
        "    `cache_dit.DBCacheConfig(...)` builds cache-dit 1.x's form (`cache_dit.BasicCacheConfig`) instead, for\n"
        "    `cache_dit.enable_cache`.\n"
    )
    _native = _native.DBCacheConfig
    _v1 = BasicCacheConfig


class DBPruneConfig(_native.DBPruneConfig, metaclass=_EitherForm):
    __doc__ = (
        f"{_native.DBPruneConfig.__doc__}\n"
        "    Given any cache-dit 1.x-only name (max_warmup_steps, non_prune_block_ids, ...), `cache_dit.DBPruneConfig(...)`\n"
        "    builds cache-dit 1.x's form (`cache_dit.BasicPruneConfig`) instead, for `cache_dit.enable_cache`.\n"
    )
    _native = _native.DBPruneConfig
    _v1 = BasicPruneConfig


# ----------------------------------------------------------------------------------------------------------
# The mapping
# ----------------------------------------------------------------------------------------------------------


def _missing(feature: str, instead: str) -> ValueError:
    return ValueError(f"cache-dit 1.x's {feature} is not available in this cache-dit; {instead}")


def _number(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # 1.x accepts a tensor threshold
        return value.item()
    return value


def _cache_options(config: _V1Config, transformer_only: bool) -> tuple[dict[str, Any], list[str]]:
    """(this library's options, the renames to point at) for a 1.x cache config."""
    prune = isinstance(config, BasicPruneConfig) or CacheType.type(config.cache_type) is CacheType.DBPrune
    options: dict[str, Any] = {"cache_type": CacheType.type(config.cache_type)}
    renames: list[str] = []
    if options["cache_type"] is CacheType.NONE:
        return options, renames
    if config.warmup_interval != 1:
        raise _missing(
            f"warmup_interval={config.warmup_interval}", "steps 0 .. max_warmup_steps-1 are all computed here"
        )
    if config.max_accumulated_residual_diff_threshold is not None:
        raise _missing(
            "max_accumulated_residual_diff_threshold", "cap the cache with max_cached_steps instead"
        )
    if "Fn_compute_blocks" in config.given:  # left out: this library's default (8, the same as 1.x's)
        options["Fn_compute_blocks"] = config.Fn_compute_blocks
    options["Bn_compute_blocks"] = config.Bn_compute_blocks
    options["residual_diff_threshold"] = _number(config.residual_diff_threshold)
    options["warmup_steps"] = config.max_warmup_steps
    if "max_warmup_steps" in config.given:
        renames.append(
            f"max_warmup_steps={config.max_warmup_steps} -> warmup_steps={config.max_warmup_steps}"
        )
    if config.enable_separate_cfg is not None:
        options["do_separate_classifier_free_guidance"] = config.enable_separate_cfg
        renames.append(
            f"enable_separate_cfg={config.enable_separate_cfg} -> "
            f"do_separate_classifier_free_guidance={config.enable_separate_cfg}"
        )
    for key in ("cfg_compute_first", "cfg_diff_compute_separate"):
        if key in config.given:
            options[key] = getattr(config, key)
    if prune:

        def field(
            key: str,
        ) -> Any:  # a BasicCacheConfig(cache_type=DBPrune) has no pruning fields: 1.x defaults
            return getattr(config, key, _PRUNE_FIELDS[key])

        if config.max_continuous_cached_steps != -1:
            raise _missing(
                "max_continuous_cached_steps with DBPrune", "DBPrune here caps with max_pruned_steps"
            )
        if field("force_reduce_calibrator_vram"):
            raise _missing("force_reduce_calibrator_vram", "DBPrune here keeps full-size residuals")
        options["max_pruned_steps"] = config.max_cached_steps
        if "max_cached_steps" in config.given:
            renames.append(
                f"max_cached_steps={config.max_cached_steps} -> max_pruned_steps={config.max_cached_steps}"
            )
        for key in (
            "enable_dynamic_prune_threshold",
            "max_dynamic_prune_threshold",
            "dynamic_prune_threshold_relax_ratio",
        ):
            if key in config.given:
                options[key] = field(key)
        if field("non_prune_block_ids"):
            ids = list(field("non_prune_block_ids"))
            options["non_prune_blocks_ids"] = ids
            renames.append(f"non_prune_block_ids={ids} -> non_prune_blocks_ids={ids}")
    else:
        options["max_cached_steps"] = config.max_cached_steps
        options["max_continuous_cached_steps"] = config.max_continuous_cached_steps
    if config.num_inference_steps is not None and transformer_only:
        options["num_inference_steps"] = config.num_inference_steps
    elif config.num_inference_steps is not None:
        renames.append(
            f"num_inference_steps={config.num_inference_steps}: not needed (each pipeline call is one run)"
        )
    mask = config.steps_computation_mask
    if mask is not None:
        _mask_options(options, config, mask, renames)
    return options, renames


def _mask_options(options: dict[str, Any], config: _V1Config, mask: Any, renames: list[str]) -> None:
    """steps_computation_mask with the static policy is a fixed schedule: compute_steps = the mask's 1 steps."""
    if isinstance(mask, (str, bytes)) or not isinstance(mask, Sequence) or any(m not in (0, 1) for m in mask):
        raise ValueError(f"steps_computation_mask must be a list of 0 (cache) and 1 (compute), got {mask!r}")
    if config.steps_computation_policy not in ("dynamic", "static"):
        raise ValueError(
            f"steps_computation_policy={config.steps_computation_policy!r} is not allowed; allowed: 'dynamic', 'static'"
        )
    if config.steps_computation_policy == "dynamic":
        raise _missing(
            "steps_computation_policy='dynamic' (the threshold deciding the mask's 0 steps)",
            "pass steps_computation_policy='static' for a fixed schedule (compute_steps), or leave the mask out "
            "for the threshold alone",
        )
    compute = [step for step, m in enumerate(mask) if m == 1]
    for key in ("residual_diff_threshold", "warmup_steps", "max_cached_steps", "max_continuous_cached_steps"):
        options.pop(key, None)  # 1.x's static policy ignores them too
    options["compute_steps"] = compute
    renames[:] = [r for r in renames if not r.startswith("max_warmup_steps")]
    renames.append(f"steps_computation_mask + 'static' -> compute_steps={compute}")


def _calibrator_options(calibrator: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(calibrator, TaylorSeerCalibratorConfig):
        name = type(calibrator).__name__
        raise _missing(
            f"calibrator {name}",
            "use cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=...) (TaylorSeer)",
        )
    if str(calibrator.calibrator_type).lower() != "taylorseer":
        raise _missing(
            f"calibrator_type={calibrator.calibrator_type!r}",
            "the calibrator here is TaylorSeer ('taylorseer')",
        )
    if calibrator.calibrator_kwargs:
        raise _missing(
            f"calibrator_kwargs={calibrator.calibrator_kwargs!r}", "TaylorSeer here takes taylorseer_order"
        )
    options = {
        "enable_taylorseer": bool(calibrator.enable_calibrator),
        "enable_encoder_taylorseer": bool(calibrator.enable_encoder_calibrator),
        "taylorseer_cache_type": calibrator.calibrator_cache_type,
        "taylorseer_kwargs": {"n_derivatives": calibrator.taylorseer_order},
    }
    rename = (
        f"TaylorSeerCalibratorConfig(taylorseer_order={calibrator.taylorseer_order}) -> enable_taylorseer="
        f"{options['enable_taylorseer']}, enable_encoder_taylorseer={options['enable_encoder_taylorseer']}, "
        f"taylorseer_kwargs={options['taylorseer_kwargs']}"
    )
    return options, [rename]


def _native_options(config: Any) -> dict[str, Any]:
    """This library's DBCacheConfig / DBPruneConfig as options (fields left at their defaults left out)."""
    return _merge_options([config], {})


def v1_options(
    cache_config: Any = None, calibrator_config: Any = None, *, transformer_only: bool = False, **kwargs: Any
) -> tuple[dict[str, Any], list[str]]:
    """This library's options for a 1.x `enable_cache(..., cache_config, calibrator_config, **kwargs)` call, and the
    renames to point at. Raises `ValueError` for a 1.x feature this library lacks, `TypeError` for unknown names."""
    cache_kwargs = {k: v for k, v in kwargs.items() if k in _PRUNE_FIELDS}
    calibrator_kwargs = {_KWARG_CALIBRATOR[k]: v for k, v in kwargs.items() if k in _KWARG_CALIBRATOR}
    unknown = sorted(set(kwargs) - set(cache_kwargs) - set(_KWARG_CALIBRATOR))
    if unknown:
        allowed = [*_PRUNE_FIELDS, *_KWARG_CALIBRATOR]
        raise TypeError(f"enable_cache() got an unknown option {unknown[0]!r}{_close(unknown[0], allowed)}")
    if cache_kwargs:  # 1.x's older keyword form: they update the config (or make one)
        if cache_config is None:
            cache_config = (BasicPruneConfig if "non_prune_block_ids" in cache_kwargs else BasicCacheConfig)(
                **cache_kwargs
            )
        elif isinstance(cache_config, _V1Config):
            cache_config.update(**cache_kwargs)
        else:
            raise TypeError(
                "enable_cache(): give the cache options either in cache_config or as keywords, not both"
            )
    if (
        calibrator_kwargs
        and calibrator_config is None
        and calibrator_kwargs.get("enable_calibrator") is not False
    ):
        calibrator_config = TaylorSeerCalibratorConfig(**calibrator_kwargs)

    if cache_config is None:
        cache_config = BasicCacheConfig()
    if isinstance(cache_config, _V1Config) and not isinstance(cache_config, TaylorSeerCalibratorConfig):
        options, renames = _cache_options(cache_config, transformer_only)
    elif type(cache_config) in (_native.DBCacheConfig, _native.DBPruneConfig):
        options, renames = _native_options(cache_config), []
        defaulted = [k for k in ("Bn_compute_blocks", "residual_diff_threshold") if k not in options]
        if type(cache_config) is _native.DBCacheConfig and defaulted:
            ours = CacheType.default_options(CacheType.DBCache)
            renames.append(
                f"DBCacheConfig with this library's names only is this library's config: "
                f"{', '.join(f'{k}={ours[k]}' for k in defaulted)} when left out (cache-dit 1.x: "
                f"{', '.join(f'{k}={_CACHE_FIELDS[k]}' for k in defaulted)}; give them, or add a 1.x name such as "
                "max_warmup_steps for 1.x's defaults)"
            )
    else:
        raise TypeError(
            f"cache_config must be cache_dit.DBCacheConfig(...) / DBPruneConfig(...) (1.x or this library's names) "
            f"or BasicCacheConfig(...), got {type(cache_config).__name__}: {cache_config!r}"
        )
    if calibrator_config is not None:
        extra, more = _calibrator_options(calibrator_config)
        clash = sorted(set(extra) & set(options))
        if clash:
            raise TypeError(
                f"{clash[0]} is given twice: in cache_config and in calibrator_config; give it once"
            )
        options.update(extra)
        renames += more
    return options, renames


def _is_pipeline(obj: Any) -> bool:
    import torch

    return not isinstance(obj, torch.nn.Module) and isinstance(
        getattr(obj, "transformer", None), torch.nn.Module
    )


def enable_cache(
    pipe_or_adapter: Any,
    cache_config: Any = None,
    calibrator_config: Any = None,
    params_modifiers: Any = None,
    parallelism_config: Any = None,
    attention_backend: str | None = None,
    **kwargs: Any,
) -> Any:
    """cache-dit 1.x's `enable_cache`, on this library: the 1.x options mapped onto `apply_cache_on_pipe` (a
    pipeline) or `apply_cache_on_transformer` (a bare transformer), which it calls; returns what it was given.

    `cache_config`: `cache_dit.DBCacheConfig(...)` / `DBPruneConfig(...)` with 1.x names (or `BasicCacheConfig`),
    or this library's own config objects; None: 1.x's defaults (DBCache F8B0, threshold 0.08, warmup 8).
    `calibrator_config`: `TaylorSeerCalibratorConfig(taylorseer_order=...)`. `**kwargs`: 1.x's older form, the
    config's options given directly (and `enable_taylorseer`, `taylorseer_order`, ...). One warning line names this
    library's spelling of every renamed option; see `cache_dit.compat` for the table. A 1.x feature this library
    does not have (`params_modifiers`, `parallelism_config`, `attention_backend`, FoCa/DMD, `warmup_interval`, a
    dynamic step mask, ...) raises a `ValueError` naming it and what to use instead.
    """
    import torch

    from .cache_factory import apply_cache_on_pipe, apply_cache_on_transformer

    if params_modifiers is not None:
        raise _missing("params_modifiers (ParamsModifier)", MISSING_V1_NAMES["ParamsModifier"])
    if parallelism_config is not None:
        raise _missing("parallelism_config", MISSING_V1_NAMES["ParallelismConfig"])
    if attention_backend is not None:
        raise _missing(
            f"attention_backend={attention_backend!r}",
            "set it with diffusers: pipe.transformer.set_attention_backend(...)",
        )
    pipeline = _is_pipeline(pipe_or_adapter)
    if not pipeline and not isinstance(pipe_or_adapter, torch.nn.Module):
        raise TypeError(
            f"enable_cache() takes a diffusers pipeline or a transformer, got {type(pipe_or_adapter).__name__}; "
            f"cache-dit 1.x's BlockAdapter is not available: {MISSING_V1_NAMES['BlockAdapter']}"
        )
    options, renames = v1_options(cache_config, calibrator_config, transformer_only=not pipeline, **kwargs)
    if renames:
        verb = "apply_cache_on_pipe(pipe" if pipeline else "apply_cache_on_transformer(transformer"
        call = ", ".join(f"{k}={v.value if isinstance(v, CacheType) else v!r}" for k, v in options.items())
        warn_at_caller(
            f"cache-dit: enable_cache maps cache-dit 1.x's options: {'; '.join(renames)}; this library's call: "
            f"cache_dit.{verb}, {call})",
            UserWarning,
        )
    if pipeline:
        return apply_cache_on_pipe(pipe_or_adapter, **options)
    return apply_cache_on_transformer(pipe_or_adapter, **options)
