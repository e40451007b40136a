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
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ..parallel.native import lifted_cp_hooks
from .adapters import TransformerAdapter, find_adapter
from .adapters.declared import declare_adapter
from .cache_types import CacheType
from .compile import unwrap_compiled
from .config import build_config
from .options import OptionsObject, fit_default_blocks, merge_options
from .runner import CacheRunner, foreign_cache_hooks, get_runner
from .stats import CacheStats

_PIPE_MARK = "_cache_dit_original_class"
_DENOISERS_MARK = "_cache_dit_denoisers"  # names of the cached denoiser components, on the per-instance class


def _runners_of(pipe: Any) -> list[CacheRunner]:
    names = type(pipe).__dict__.get(_DENOISERS_MARK, ("transformer",))
    runners = (get_runner(getattr(pipe, name, None)) for name in names)
    return [r for r in runners if r is not None]


@contextlib.contextmanager
def _one_call(runners: list[CacheRunner], what: str = "a pipeline call") -> Iterator[None]:
    """Fresh state in every runner for one pipeline call (or marked run); each begun one is ended."""
    begun: list[CacheRunner] = []
    try:
        for runner in runners:
            runner.begin_pipeline_call(what)
            begun.append(runner)
        yield
    finally:
        for runner in begun:
            runner.end_pipeline_call()


def _pipeline_call(self: Any, *args: Any, **kwargs: Any) -> Any:
    original = type(self).__dict__[_PIPE_MARK]
    runners = _runners_of(self)
    with _one_call(runners):
        result = original.__call__(self, *args, **kwargs)
        if _ran_batched_cfg(self, original, args, kwargs):
            for runner in runners:
                runner.runs.label_batched_cfg()
        return result


def _ran_batched_cfg(pipe: Any, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Did this call run CFG? Pipelines that batch cond and uncond into one unmarked transformer call (SD3,
    PixArt, Sana, AuraFlow, ...) say so through `do_classifier_free_guidance` where they have it; the others
    run CFG when `guidance_scale > 1` and the transformer has no guidance embedding (FLUX's guidance_scale
    feeds its embedding, not CFG)."""
    try:
        flag = pipe.do_classifier_free_guidance
    except Exception:  # a missing property, or one that reads state this pipeline does not set
        flag = None
    if isinstance(flag, bool):
        return flag
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    if not isinstance(config, Mapping) or config.get("guidance_embeds"):
        return False
    try:
        bound = inspect.signature(cls.__call__).bind(pipe, *args, **kwargs)
    except (TypeError, ValueError):
        return False
    bound.apply_defaults()
    scale = bound.arguments.get("guidance_scale")
    return isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 1


def _reduce_cached_pipeline(self: Any, protocol: int) -> Any:
    """Pickle/copy as "a new instance of the original class, cached", then the usual state (`__dict__`)."""
    reduced = object.__reduce_ex__(self, max(protocol, 2))  # (copyreg.__newobj__, (cls,), state, ...)
    denoisers = type(self).__dict__.get(_DENOISERS_MARK, ("transformer",))
    return (_new_cached_pipeline, (type(self).__dict__[_PIPE_MARK], denoisers), *reduced[2:])


def _new_cached_pipeline(original: type, denoisers: tuple[str, ...] = ("transformer",)) -> Any:
    cls = _cached_class(original)
    setattr(cls, _DENOISERS_MARK, tuple(denoisers))
    return object.__new__(cls)


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


def _has_adapter(module: torch.nn.Module) -> bool:
    try:
        find_adapter(module)
    except ValueError:
        return False
    return True


def _denoisers_of(pipe: Any) -> dict[str, torch.nn.Module]:
    """The pipeline's denoisers: `transformer`, plus every other component a registered adapter knows
    (Wan 2.2's `transformer_2`, a `prior`), in the pipeline's component order."""
    # torch.compile(pipe.transformer) holds the transformer in an OptimizedModule: cache the one inside
    transformer = unwrap_compiled(getattr(pipe, "transformer", None))
    found: dict[str, torch.nn.Module] = {}
    if isinstance(transformer, torch.nn.Module):
        found["transformer"] = transformer
    components = getattr(pipe, "components", None)
    for name, module in components.items() if isinstance(components, Mapping) else ():
        module = unwrap_compiled(module)
        if name not in found and isinstance(module, torch.nn.Module) and _has_adapter(module):
            if all(module is not other for other in found.values()):
                found[name] = module
    if not found:
        raise TypeError(
            f"apply_cache_on_pipe expects a diffusers pipeline with a `transformer` module, got "
            f"{type(pipe).__name__} (transformer={type(transformer).__name__}); for a bare transformer use "
            "apply_cache_on_transformer"
        )
    return found


def _per_denoiser_options(
    denoisers: dict[str, torch.nn.Module], options: dict[str, Any]
) -> dict[str, dict[str, Any] | None]:
    """Options for each denoiser: the common ones, updated by `per_denoiser[name]` (False: leave it uncached)."""
    per = options.pop("per_denoiser", None) or {}
    if not isinstance(per, Mapping):
        raise TypeError(f"per_denoiser must be a dict of denoiser name -> options dict or False, got {per!r}")
    unknown = sorted(set(per) - set(denoisers))
    if unknown:
        raise ValueError(
            f"per_denoiser names {unknown[0]!r}, which is not a denoiser of this pipeline; allowed: "
            f"{', '.join(denoisers)}"
        )
    resolved: dict[str, dict[str, Any] | None] = {}
    for name in denoisers:
        extra = per.get(name, {})
        if extra is False:
            resolved[name] = None
        elif isinstance(extra, Mapping):
            resolved[name] = {**options, **extra}
        else:
            raise TypeError(f"per_denoiser[{name!r}] must be an options dict or False, got {extra!r}")
    return resolved


def _resolve_adapter(transformer: torch.nn.Module, adapter: Any) -> TransformerAdapter | None:
    """The `adapter=` option: None (the registry), "auto" (None: derived on the first call), a dict, an adapter."""
    if adapter is None:
        return find_adapter(transformer)
    if isinstance(adapter, str):
        if adapter != "auto":
            raise ValueError(
                f"adapter={adapter!r} is not allowed; allowed: None, 'auto', a dict, a TransformerAdapter"
            )
        return None
    if isinstance(adapter, TransformerAdapter):
        return adapter
    if isinstance(adapter, Mapping):
        return declare_adapter(transformer, adapter)
    raise TypeError(
        f"adapter must be None, 'auto', a dict or a TransformerAdapter, got {type(adapter).__name__}: {adapter!r}"
    )


def _build_runner(transformer: torch.nn.Module, options: dict[str, Any]) -> CacheRunner | None:
    """Validate everything and build the runner without touching the model. None: cache_type NONE."""
    options = dict(options)
    adapter = options.pop("adapter", None)
    validate = options.pop("validate", False)
    if not isinstance(validate, bool):
        raise TypeError(f"validate must be a bool, got {type(validate).__name__}: {validate!r}")
    config = build_config(**options)
    if config.cache_type is CacheType.NONE:
        return None
    resolved = _resolve_adapter(transformer, adapter)
    if resolved is not None:  # "auto" learns the block count on the first call
        name = type(transformer).__name__
        config = fit_default_blocks(config, len(resolved.blocks(transformer)), name, explicit=options)
    runner = CacheRunner(transformer, resolved, config, validate=validate)
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
    transformer: torch.nn.Module,
    *configs: OptionsObject,
    num_inference_steps: int | None = None,
    **options: Any,
) -> torch.nn.Module:
    """Cache a bare transformer (you drive the denoising loop). Options: see `apply_cache_on_pipe`.

    Each denoising run needs fresh cache state. Mark runs in one of these ways, best first:
    - `with cache_dit.denoising_run(transformer): ...` around each run's loop;
    - `num_inference_steps=N`: every N transformer calls per CFG branch make one run (each run must be complete);
    - neither: a run starts when the timestep goes up or repeats within a CFG branch, when the latents change
      shape/dtype/device, or after a marked run. A run that starts below where the previous one stopped (img2img
      after a half run) looks like its continuation: mark it. Schedulers that repeat timesteps (Heun) need a mark.
    """
    options = merge_options(configs, options)
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
    module = unwrap_compiled(transformer)  # torch.compile(transformer): cache the module inside
    runner = _build_runner(module, options)
    if runner is not None:
        runner.num_inference_steps = num_inference_steps
    with lifted_cp_hooks(module):  # diffusers' context-parallel hooks stay outside the cache
        _swap_runner(module, runner)
    return transformer


@contextlib.contextmanager
def denoising_run(pipe_or_transformer: Any) -> Iterator[None]:
    """Mark one denoising run of a cached bare transformer: fresh cache state on entry, stats kept on exit.

    `with cache_dit.denoising_run(transformer): for t in timesteps: ...` is what a pipeline call does for its
    transformer(s): inside it no new run is guessed, and unmarked calls that share a timestep are told apart as CFG
    branches (pass `do_separate_classifier_free_guidance=False` to keep them in one). Without a cache applied it
    does nothing.
    """
    _check_pipe_or_transformer(pipe_or_transformer, "denoising_run")
    if isinstance(pipe_or_transformer, torch.nn.Module):
        runner = get_runner(pipe_or_transformer)
        runners = [runner] if runner is not None else []
    else:
        runners = _runners_of(pipe_or_transformer)
    with _one_call(runners, "a denoising run"):
        yield


def apply_cache_on_pipe(pipe: Any, *configs: OptionsObject, **options: Any) -> Any:
    """Cache the denoiser(s) of a diffusers pipeline; returns the pipeline.

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

    Besides the cache options:
        adapter: None (default: the registry, by transformer class), "auto" (the block layout is learned on the
            first call) or a declaration dict (see `cache_factory.adapters.declared`).
        validate: replay the first stored step through the cached path and raise if it does not reproduce
            the computed output (one extra transformer call, once; default False).
        per_denoiser: for pipelines with several denoisers (Wan 2.2's `transformer` and `transformer_2`),
            `{name: {option overrides}}`, or `{name: False}` to leave one uncached.
    """
    options = merge_options(configs, options)
    if "num_inference_steps" in options:
        raise ValueError(
            "num_inference_steps is an option of apply_cache_on_transformer (bare transformers); a pipeline call "
            "marks its own run, so pass num_inference_steps to pipe(...) instead"
        )
    denoisers = _denoisers_of(pipe)
    plan = _per_denoiser_options(denoisers, dict(options))
    # all validation happens here, before any change
    runners = {}
    for name, opts in plan.items():
        try:
            runners[name] = _build_runner(denoisers[name], opts) if opts is not None else None
        except (ValueError, TypeError) as error:
            if len(plan) == 1:
                raise
            raise type(error)(f"denoiser {name!r}: {error}") from error
    if all(r is None for r in runners.values()):
        disable_cache(pipe)
        return pipe
    done: list[torch.nn.Module] = []
    try:
        for name, runner in runners.items():
            with lifted_cp_hooks(denoisers[name]):  # diffusers' context-parallel hooks stay outside the cache
                _swap_runner(denoisers[name], runner)
            done.append(denoisers[name])
    except BaseException:
        for module in done:  # rare (an install that failed half-way): leave no cache rather than a mix
            old = get_runner(module)
            if old is not None:
                old.uninstall()
        raise
    if not _is_patched(pipe):
        pipe.__class__ = _cached_class(type(pipe))
    setattr(type(pipe), _DENOISERS_MARK, tuple(denoisers))
    return pipe


def disable_cache(pipe_or_transformer: Any) -> Any:
    """Remove the cache: forwards, block lists and the pipeline class are restored exactly."""
    _check_pipe_or_transformer(pipe_or_transformer, "disable_cache")
    modules = [pipe_or_transformer]
    if not isinstance(pipe_or_transformer, torch.nn.Module):
        names = type(pipe_or_transformer).__dict__.get(_DENOISERS_MARK, ("transformer",))
        modules = [getattr(pipe_or_transformer, name, None) for name in names]
    if _is_patched(pipe_or_transformer):
        pipe_or_transformer.__class__ = type(pipe_or_transformer).__dict__[_PIPE_MARK]
    for module in modules:
        runner = get_runner(module)
        if runner is not None:
            with lifted_cp_hooks(runner.transformer):
                runner.uninstall()
    return pipe_or_transformer


def summary(pipe_or_transformer: Any, denoiser: str = "transformer") -> CacheStats:
    """Stats of the last pipeline call (empty `CacheStats` with cache_type "NONE" when no cache is applied).

    `denoiser` picks another denoiser of a pipeline that has several (e.g. "transformer_2" in Wan 2.2).
    """
    _check_pipe_or_transformer(pipe_or_transformer, "summary")
    transformer = pipe_or_transformer
    if not isinstance(pipe_or_transformer, torch.nn.Module):
        transformer = getattr(pipe_or_transformer, denoiser, None)
        if not isinstance(transformer, torch.nn.Module):
            names = sorted(
                name
                for name, value in vars(pipe_or_transformer).items()
                if isinstance(value, torch.nn.Module)
                and ("transformer" in name or get_runner(value) is not None)
            )
            raise ValueError(f"summary: the pipeline has no denoiser {denoiser!r}; allowed: {names}")
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
