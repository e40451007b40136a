"""The public verbs: apply_cache_on_pipe, apply_cache_on_transformer, disable_cache, summary.

`pipe(...)` looks `__call__` up on the pipeline's *type*, so an instance attribute cannot see a call start.
`apply_cache_on_pipe` therefore gives that one pipeline instance its own subclass (same name, module and
qualname, so configs and `save_pretrained` are unchanged) whose `__call__` opens a fresh cache state per call.
Two pipelines, even of one class, never share it; `disable_cache` puts the original class back.
"""

from __future__ import annotations

from typing import Any

import torch

from .adapters import find_adapter
from .cache_types import CacheType
from .config import OptionsObject, build_config, fit_default_blocks, merge_options
from .runner import CacheRunner, get_runner
from .stats import CacheStats

_PIPE_MARK = "_cache_dit_original_class"


def _pipeline_call(self: Any, *args: Any, **kwargs: Any) -> Any:
    runner = get_runner(getattr(self, "transformer", None))
    original = type(self).__dict__[_PIPE_MARK]
    if runner is None:
        return original.__call__(self, *args, **kwargs)
    runner.begin_pipeline_call()
    try:
        return original.__call__(self, *args, **kwargs)
    finally:
        runner.end_pipeline_call()


def _cached_class(cls: type) -> type:
    return type(
        cls.__name__,
        (cls,),
        {
            "__call__": _pipeline_call,
            _PIPE_MARK: cls,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        },
    )


def _is_patched(pipe: Any) -> bool:
    return _PIPE_MARK in type(pipe).__dict__


def _transformer_of(pipe: Any) -> torch.nn.Module:
    transformer = getattr(pipe, "transformer", None)
    if not isinstance(transformer, torch.nn.Module):
        raise TypeError(
            f"apply_cache_on_pipe expects a diffusers pipeline with a `transformer` module, got "
            f"{type(pipe).__name__} (transformer={type(transformer).__name__}); for a bare transformer use "
            "apply_cache_on_transformer"
        )
    return transformer


def _build_runner(transformer: torch.nn.Module, options: dict[str, Any]) -> CacheRunner | None:
    """Validate everything and build the runner without touching the model. None: cache_type NONE."""
    config = build_config(**options)
    if config.cache_type is CacheType.NONE:
        return None
    adapter = find_adapter(transformer)
    name = type(transformer).__name__
    config = fit_default_blocks(config, len(adapter.blocks(transformer)), name, explicit=options)
    return CacheRunner(transformer, adapter, config)


def _swap_runner(transformer: torch.nn.Module, runner: CacheRunner | None) -> None:
    """Replace the installed runner (if any) by `runner`; on failure the old one is back in place."""
    old = get_runner(transformer)
    if old is not None:
        old.uninstall()
    if runner is None:
        return
    try:
        runner.install()
    except BaseException:
        if old is not None:
            old.install()
        raise


def apply_cache_on_transformer(
    transformer: torch.nn.Module, *configs: OptionsObject, **options: Any
) -> torch.nn.Module:
    """Cache a bare transformer (you drive the denoising loop).

    A new denoising run is detected when the timestep goes up (timesteps fall within a run); pipelines
    should use `apply_cache_on_pipe`, which sees call boundaries directly. Options: see `apply_cache_on_pipe`.
    """
    options = merge_options(configs, options)
    if not isinstance(transformer, torch.nn.Module):
        raise TypeError(
            f"apply_cache_on_transformer expects a torch.nn.Module, got {type(transformer).__name__}"
        )
    runner = _build_runner(transformer, options)
    _swap_runner(transformer, runner)
    return transformer


def apply_cache_on_pipe(pipe: Any, *configs: OptionsObject, **options: Any) -> Any:
    """Cache the transformer of a diffusers pipeline; returns the pipeline.

    Options come as keywords, as typed options objects, or both (an option given twice raises)::

        apply_cache_on_pipe(pipe, cache_type="DBCache", Fn_compute_blocks=4, residual_diff_threshold=0.1)
        apply_cache_on_pipe(pipe, DBCacheConfig(Fn_compute_blocks=4, residual_diff_threshold=0.1),
                            TaylorSeerConfig(enable_taylorseer=True, n_derivatives=1))

    The objects (`cache_dit.DBCacheConfig`, `DBPruneConfig`, `TaylorSeerConfig`, `CFGConfig`) document every
    option with its default and which way it trades speed for quality; see also `CacheType.default_options`.
    Keywords: `cache_type` (DBCache default, FBCache, DBPrune, NONE), the fields of those objects, and
    `taylorseer_kwargs={"n_derivatives": m}`. numpy scalars are accepted where a number is.

    Options left out take `CacheType.default_options(cache_type)`; if the default Fn/Bn do not fit a small
    model they shrink, with a warning naming the values used (values you give are never changed). Calling it
    again replaces the previous options; `cache_type=CacheType.NONE` removes the cache. If it raises, the
    pipeline is exactly as it was. Unknown or misplaced options raise a ValueError naming them.
    """
    options = merge_options(configs, options)
    transformer = _transformer_of(pipe)
    runner = _build_runner(transformer, options)  # all validation happens here, before any change
    if runner is None:
        disable_cache(pipe)
        return pipe
    _swap_runner(transformer, runner)
    if not _is_patched(pipe):
        pipe.__class__ = _cached_class(type(pipe))
    return pipe


def disable_cache(pipe_or_transformer: Any) -> Any:
    """Remove the cache: forwards, block lists and the pipeline class are restored exactly."""
    _check_pipe_or_transformer(pipe_or_transformer, "disable_cache")
    if _is_patched(pipe_or_transformer):
        pipe_or_transformer.__class__ = type(pipe_or_transformer).__dict__[_PIPE_MARK]
    transformer = pipe_or_transformer
    if not isinstance(pipe_or_transformer, torch.nn.Module):
        transformer = getattr(pipe_or_transformer, "transformer", None)
    runner = get_runner(transformer)
    if runner is not None:
        runner.uninstall()
    return pipe_or_transformer


def summary(pipe_or_transformer: Any) -> CacheStats:
    """Stats of the last pipeline call (empty `CacheStats` with cache_type "NONE" when no cache is applied)."""
    _check_pipe_or_transformer(pipe_or_transformer, "summary")
    transformer = pipe_or_transformer
    if not isinstance(pipe_or_transformer, torch.nn.Module):
        transformer = getattr(pipe_or_transformer, "transformer", None)
    runner = get_runner(transformer)
    return runner.stats() if runner is not None else CacheStats()


def _check_pipe_or_transformer(obj: Any, verb: str) -> None:
    """TypeError for anything that is neither a torch module nor a pipeline holding a `transformer` module."""
    if isinstance(obj, torch.nn.Module) or isinstance(getattr(obj, "transformer", None), torch.nn.Module):
        return
    raise TypeError(
        f"{verb} expects a diffusers pipeline with a `transformer` module or a transformer (torch.nn.Module), "
        f"got {type(obj).__name__}"
    )
