"""The public verbs: apply_cache_on_pipe, apply_cache_on_transformer, disable_cache, summary.

`pipe(...)` looks `__call__` up on the pipeline's *type*, so an instance attribute cannot see a call start.
`apply_cache_on_pipe` therefore gives that one pipeline instance its own subclass (same name, module and
qualname, so configs and `save_pretrained` are unchanged) whose `__call__` opens a fresh cache state per call.
Two pipelines, even of one class, never share it; `disable_cache` puts the original class back. The subclass
pickles and copies as "the original class, cached": `pickle`/`copy.deepcopy` give a cached pipeline whose
transformer holds its own copy of the cache.

The cache state itself belongs to the transformer: pipelines sharing one (`Pipeline.from_pipe`) may use it one
after another, and a call from a second thread while another is running raises (see `CacheRunner._claim`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from .adapters import find_adapter
from .cache_types import CacheType
from .config import build_config
from .runner import CacheRunner, foreign_cache_hooks, get_runner
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


def _reduce_cached_pipeline(self: Any, protocol: int) -> Any:
    """Pickle/copy as "a new instance of the original class, cached", then the usual state (`__dict__`)."""
    reduced = object.__reduce_ex__(self, max(protocol, 2))  # (copyreg.__newobj__, (cls,), state, ...)
    return (_new_cached_pipeline, (type(self).__dict__[_PIPE_MARK],), *reduced[2:])


def _new_cached_pipeline(original: type) -> Any:
    return object.__new__(_cached_class(original))


def _cached_class(cls: type) -> type:
    return type(
        cls.__name__,
        (cls,),
        {
            "__call__": _pipeline_call,
            "__reduce_ex__": _reduce_cached_pipeline,
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
    runner = CacheRunner(transformer, adapter, config)
    foreign = foreign_cache_hooks(transformer)
    if foreign:
        raise RuntimeError(
            f"{type(transformer).__name__} already has diffusers' own cache ({', '.join(foreign)}); a second "
            "cache on top would skip work twice and the errors add up. Remove it first with "
            "`transformer.disable_cache()` (or `HookRegistry.remove_hook(name)` for hooks applied with diffusers' "
            "`apply_*` functions), then apply cache-dit's."
        )
    return runner


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
    transformer: torch.nn.Module, num_inference_steps: int | None = None, **options: Any
) -> torch.nn.Module:
    """Cache a bare transformer (you drive the denoising loop). Options: see `apply_cache_on_pipe`.

    Each denoising run needs fresh cache state. Mark runs in one of these ways, best first:
    - `with cache_dit.denoising_run(transformer): ...` around each run's loop;
    - `num_inference_steps=N`: every N transformer calls per CFG branch make one run (each run must be complete);
    - neither: a run starts when the timestep goes up or repeats within a CFG branch, when the latents change
      shape/dtype/device, or after a marked run. A run that starts below where the previous one stopped (img2img
      after a half run) looks like its continuation: mark it. Schedulers that repeat timesteps (Heun) need a mark.
    """
    if not isinstance(transformer, torch.nn.Module):
        raise TypeError(
            f"apply_cache_on_transformer expects a torch.nn.Module, got {type(transformer).__name__}"
        )
    if num_inference_steps is not None and (
        isinstance(num_inference_steps, bool)
        or not isinstance(num_inference_steps, int)
        or num_inference_steps < 1
    ):
        raise ValueError(
            f"num_inference_steps must be an int >= 1 (transformer calls per CFG branch in one run) or None, "
            f"got {num_inference_steps!r}"
        )
    runner = _build_runner(transformer, options)
    if runner is not None:
        runner.num_inference_steps = num_inference_steps
    _swap_runner(transformer, runner)
    return transformer


@contextlib.contextmanager
def denoising_run(pipe_or_transformer: Any) -> Iterator[None]:
    """Mark one denoising run of a cached bare transformer: fresh cache state on entry, stats kept on exit.

    `with cache_dit.denoising_run(transformer): for t in timesteps: ...` is what a pipeline call does for its
    transformer; inside it nothing is guessed from timesteps. Without a cache applied it does nothing.
    """
    transformer = pipe_or_transformer
    if not isinstance(pipe_or_transformer, torch.nn.Module):
        transformer = getattr(pipe_or_transformer, "transformer", None)
    runner = get_runner(transformer)
    if runner is None:
        yield
        return
    runner.begin_pipeline_call()
    try:
        yield
    finally:
        runner.end_pipeline_call()


def apply_cache_on_pipe(pipe: Any, **options: Any) -> Any:
    """Cache the transformer of a diffusers pipeline; returns the pipeline.

    Options left out take `CacheType.default_options(cache_type)` (cache_type defaults to DBCache). Calling it
    again replaces the previous options; `cache_type=CacheType.NONE` removes the cache. If it raises, the
    pipeline is exactly as it was.
    """
    transformer = _transformer_of(pipe)
    if "num_inference_steps" in options:
        raise ValueError(
            "num_inference_steps is an option of apply_cache_on_transformer (bare transformers); a pipeline call "
            "marks its own run, so pass num_inference_steps to pipe(...) instead"
        )
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
    transformer = pipe_or_transformer
    if not isinstance(pipe_or_transformer, torch.nn.Module):
        transformer = getattr(pipe_or_transformer, "transformer", None)
    runner = get_runner(transformer)
    return runner.stats() if runner is not None else CacheStats()
