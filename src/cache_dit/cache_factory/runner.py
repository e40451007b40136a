"""The cached block-runner.

How it sits in the model's path: every block's `forward` is wrapped *in place* (an instance attribute; the
state dict, the block lists and the transformer's own loop are untouched). The transformer keeps running its
own loop, so whatever it does between blocks (FLUX adds ControlNet residuals, other models pass per-block
inputs) keeps working; the price is one extra Python call per block. The transformer's `forward` is wrapped to
open a "pass" (one transformer call: its CFG branch and step index) and its `cache_context` to read the
pipeline's own branch marks.

Within one pass, with L blocks in execution order (FLUX: dual then single blocks):

    blocks [0, Fn)          always run; after block Fn-1 the runner decides (one host sync)
    blocks [Fn, L-Bn)       "middle": run, or on a cached step skipped; the first middle block then returns
                            input + cached residual and the others return their inputs unchanged
    blocks [L-Bn, L)        always run (or, with Bn_compute_blocks_ids, may reuse their own residual)

The cached middle residual is the sum of the middle blocks' own residuals: additions the model makes between
blocks (ControlNet) are subtracted out, since the model adds this step's values again on a cached step.

DBPrune uses the same wrappers with a per-block decision instead of the per-step one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .._warnings import warn_at_caller
from ..parallel.groups import DecisionSync
from .adapters import BlockIO, TransformerAdapter
from .adapters.declared import timestep_spec
from .cache_types import CacheType
from .compile import compiled_call, eager_boundary, unwrap_compiled
from .config import CacheConfig, TaylorSeerCacheType
from .decision import dynamic_prune_threshold, is_similar, step_can_cache
from .state import BlockBuffers, BranchState, CallState, OutputStore, layout, same_layout
from .stats import CacheStats
from .taylorseer import TaylorSeer

RUNNER_ATTR = "_cache_dit_runner"
_log = logging.getLogger(__name__)  # "cache_dit...": per-step decisions at DEBUG, see cache_dit.set_verbose

# diffusers' own step caches (hooks registered by `transformer.enable_cache(...)` / `apply_*_cache`): stacked
# with ours, both skip work and the errors add up. Other diffusers hooks (group offloading, layerwise casting,
# context parallel, text KV cache) are fine.
_DIFFUSERS_CACHE_HOOK_MODULES = frozenset(
    f"diffusers.hooks.{name}"
    for name in (
        "first_block_cache",
        "faster_cache",
        "mag_cache",
        "pyramid_attention_broadcast",
        "sea_cache",
        "taylorseer_cache",
    )
)


def _unset(*args: Any, **kwargs: Any) -> Any:  # placeholder callable of a _Wrapper being unpickled
    raise RuntimeError("cache-dit: a wrapper was called before it was restored")


class _Wrapper(functools.partial):
    """The cache's wrappers. A plain `functools.partial` is copied/unpickled from its arguments *before* it is
    memoized, so the cycle wrapper -> runner -> patch -> wrapper would give the copy two different wrappers (and
    `disable_cache` on a deepcopy would leave one behind); this one is created empty first and filled in after.
    """

    def __reduce__(self) -> Any:
        return (type(self), (_unset,), (self.func, self.args, self.keywords or None, self.__dict__ or None))


def foreign_cache_hooks(module: torch.nn.Module) -> list[str]:
    """Names of diffusers' own cache hooks anywhere in the transformer (see _DIFFUSERS_CACHE_HOOK_MODULES).

    Walks every submodule (PAB and TaylorSeer hook attention layers): a few us per module, so it runs once per
    apply, pipeline call or bare-transformer run, not per step.
    """
    found: list[str] = []
    config = getattr(module, "_cache_config", None)
    if config is not None and type(config).__name__ != "TextKVCacheConfig":
        found.append(f"transformer.enable_cache({type(config).__name__}(...))")
    for m in module.modules():
        registry = m.__dict__.get("_diffusers_hook")
        for name, hook in getattr(registry, "hooks", {}).items():
            if type(hook).__module__ in _DIFFUSERS_CACHE_HOOK_MODULES and name not in found:
                found.append(name)
    return found


@dataclass
class _Pass:
    """Scratch of one transformer call."""

    branch: BranchState
    step: int
    cached: bool = False
    first_hidden_in: torch.Tensor | None = None  # input of block 0 (of the last shape change within Fn)
    fn_residual: torch.Tensor | None = None  # this step's first-Fn-blocks residual
    # the middle segment being run: its first block, inputs, and whether it is served from the cache
    seg_start: int | None = None
    seg_from_cache: bool = False
    seg_store: bool = False  # a computed step: store the segment's residual at its end
    seg_carries_encoder: bool = True
    seg_hidden_in: torch.Tensor | None = None
    seg_encoder_in: torch.Tensor | None = None
    last_hidden_out: torch.Tensor | None = None  # output of the last middle block run so far
    last_encoder_out: torch.Tensor | None = None
    side_hidden: torch.Tensor | None = None  # what the model added between a segment's blocks (ControlNet)
    side_encoder: torch.Tensor | None = None
    encoder_layout: tuple[Any, ...] | None = None  # encoder stream entering the middle, at the decision
    last_block: int = -1  # first pass: the last block id seen (blocks must run in the adapter's order)
    replay: bool = False  # validate=True: the same inputs again, forced through the cached path
    whole: bool = False  # taylorseer_cache_type='output': the blocks run plainly (the whole output is stored)
    # DBPrune
    prune_allowed: bool = False
    prune_diffs: list[float] = field(default_factory=list)
    pruned: int = 0
    computed: int = 0


@dataclass
class _Patch:
    obj: Any
    attr: str
    had_own: bool  # the instance had its own attribute before (else the class's was in use)
    old: Any
    new: Any


class CacheRunner:
    """Cache state and logic for one transformer instance."""

    def __init__(
        self,
        transformer: torch.nn.Module,
        adapter: TransformerAdapter | None,
        config: CacheConfig,
        validate: bool = False,
    ) -> None:
        """`adapter=None`: derive it from the first transformer call (`adapter="auto"`)."""
        self.transformer = transformer
        self.config = config
        self.validate = validate  # replay the first stored step through the cached path and compare
        self.last_validation_diff: float | None = None
        # reduces each decision over the context-parallel group, if any (raises here on a bad setup)
        self.sync = DecisionSync(transformer, config.options.get("parallel_group"))
        self.db = config.dbcache
        self.prune = config.dbprune
        self.threshold = (self.db or self.prune).residual_diff_threshold if (self.db or self.prune) else 0.0
        # a fixed schedule (compute_steps) instead of the threshold gate
        self.schedule: frozenset[int] | None = (
            frozenset(self.db.compute_steps)
            if self.db is not None and self.db.compute_steps is not None
            else None
        )
        # called as recorder(branch, step, segment_start, stream, value) with every residual (or output) a
        # computed step stores, and with its transformer output (segment_start -1, stream "output") where that
        # is one tensor (cache_dit.calibrate records a run through it); None: nothing is recorded
        self.recorder: Callable[[str, int, int, str, torch.Tensor], None] | None = None
        ts = config.taylorseer
        self.hidden_mode = ts.taylorseer_cache_type if ts.enable_taylorseer else TaylorSeerCacheType.RESIDUAL
        self.encoder_mode = (
            ts.taylorseer_cache_type if ts.enable_encoder_taylorseer else TaylorSeerCacheType.RESIDUAL
        )
        # forecast the transformer's whole output on a fixed schedule (a cached step runs nothing of it)
        self.output_mode = ts.enable_taylorseer and ts.taylorseer_cache_type is TaylorSeerCacheType.OUTPUT
        self._orders = (
            ts.n_derivatives if ts.enable_taylorseer else 0,
            ts.n_derivatives if ts.enable_encoder_taylorseer else 0,
        )
        self.explicit_separate_cfg = config.cfg.do_separate_classifier_free_guidance

        self.call = self._new_call()
        self.active = False  # True between install() and uninstall()
        self.pipeline_managed = False
        self._pass: _Pass | None = None
        self._context: tuple[str, dict[str, Any]] | None = None
        self._prev_timestep: float | None = None
        self._patches: list[_Patch] = []
        # bare transformer: steps per run (apply_cache_on_transformer(num_inference_steps=)), last latents' layout,
        # and whether a marked run (pipeline call / denoising_run) just ended
        self.num_inference_steps: int | None = None
        self._prev_latents_layout: tuple[Any, ...] | None = None
        self._run_ended = False
        self._run_depth = 0
        # one owner at a time: the thread inside a pipeline call / transformer call (see _claim)
        self._owner_lock = threading.Lock()
        self._owner: int | None = None
        self._owner_what = ""
        self._owner_depth = 0
        self.adapter: TransformerAdapter | None = None
        self.separate_cfg = bool(self.explicit_separate_cfg)
        self.caching_enabled = False
        self.blocks: list[torch.nn.Module] = []
        self._io_checked = False
        self._auto_timestep = timestep_spec(transformer) if adapter is None else None
        if adapter is not None:
            self._set_adapter(adapter)

    def _set_adapter(self, adapter: TransformerAdapter) -> None:
        """Learn the block sequence from the adapter and check the options against it (nothing is patched)."""
        transformer, config = self.transformer, self.config
        blocks: list[torch.nn.Module] = []
        self.ios: list[BlockIO] = []
        self.block_names: list[str] = []  # "transformer_blocks.3": for error messages
        list_starts = set()
        for path, block_list, io in adapter.block_lists_of(transformer):
            list_starts.add(len(blocks))
            self.block_names.extend(f"{path}.{i}" for i in range(len(block_list)))
            blocks.extend(block_list)
            self.ios.extend([io] * len(block_list))
        self.num_blocks = len(blocks)
        model_name = type(transformer).__name__
        config.check_blocks(self.num_blocks, model_name)
        if adapter.long_skips and config.Bn > config.Fn:
            raise ValueError(
                f"{model_name} feeds early blocks' outputs to late blocks (long skips), so "
                f"Bn_compute_blocks={config.Bn} must be <= Fn_compute_blocks={config.Fn}; allowed: "
                f"Bn_compute_blocks <= {config.Fn}"
            )

        self.Fn = config.Fn
        self.Bn = config.Bn
        self.mid_end = self.num_blocks - self.Bn  # middle blocks are [Fn, mid_end)
        self.has_middle = self.Fn < self.mid_end
        # The cached middle is split into segments, one residual each: at block-list boundaries and wherever a
        # computed pass shows a block's input changed shape (text and image concatenated between blocks).
        self.segment_starts: set[int] = {self.Fn} | {i for i in list_starts if self.Fn < i < self.mid_end}
        self._none_encoder_out: set[int] = set()  # blocks that return None for the encoder (SD3's last)
        self._io_checked = False  # the first pass checks every block's inputs/outputs against the adapter

        cfg = self.explicit_separate_cfg
        self.separate_cfg = adapter.separate_cfg if cfg is None else cfg
        gate_on = self.threshold > 0 or self.schedule is not None
        self.caching_enabled = gate_on and (self.has_middle or self.prune is not None)
        if self.prune is not None:
            never = set(self.prune.non_prune_blocks_ids)
            self.prunable = [
                self.prune.Fn_compute_blocks <= i < self.mid_end and i not in never
                for i in range(self.num_blocks)
            ]
        self.adapter = adapter
        self.blocks = blocks
        if self.db is not None and not self.has_middle and gate_on:
            self._warn_once(
                "no-middle",
                f"Fn_compute_blocks + Bn_compute_blocks = {self.num_blocks} covers every block of "
                f"{model_name}: there is nothing left to cache",
            )

    # ------------------------------------------------------------------------------------------------------
    # Installation
    # ------------------------------------------------------------------------------------------------------

    def install(self) -> None:
        """Wrap the transformer's forward, cache_context and every block's forward (instance attributes)."""
        try:
            orig_forward = self.transformer.forward
            self._set(self.transformer, "forward", _Wrapper(self._owned_forward, orig_forward))
            orig_context = getattr(self.transformer, "cache_context", None)
            if callable(orig_context):
                self._set(self.transformer, "cache_context", _Wrapper(self._cache_context, orig_context))
            if callable(getattr(self.transformer, "enable_cache", None)):
                self._set(self.transformer, "enable_cache", _Wrapper(self._refuse_diffusers_cache))
            self._install_blocks()
            object.__setattr__(self.transformer, RUNNER_ATTR, self)
            self.active = True
        except BaseException:
            self.uninstall()
            raise

    def _install_blocks(self) -> None:
        for idx, block in enumerate(self.blocks):
            compute = _Wrapper(compiled_call, block.forward)  # compiled where the caller was (compile.py)
            self._set(block, "forward", _Wrapper(self._run_block, idx, compute))

    def uninstall(self) -> None:
        """Restore every patched attribute exactly (an own attribute is put back, a class one un-shadowed).

        Where something else wrapped our wrapper afterwards (e.g. accelerate's offload hooks), removing ours
        would drop theirs too: ours stays in their chain but is switched off (it passes every call through).
        """
        self.active = False
        wrapped_over = []
        for patch in reversed(self._patches):
            if patch.obj.__dict__.get(patch.attr) is not patch.new:
                wrapped_over.append(f"{type(patch.obj).__name__}.{patch.attr}")
                continue
            if patch.had_own:
                object.__setattr__(patch.obj, patch.attr, patch.old)
            else:
                patch.obj.__dict__.pop(patch.attr, None)
        self._patches.clear()
        if wrapped_over:
            self._warn_once(
                "wrapped-over",
                f"{', '.join(wrapped_over[:3])} were wrapped again after the cache was applied; the cache's "
                "wrappers stay inside those and pass every call through",
            )
        if self.transformer.__dict__.get(RUNNER_ATTR) is self:
            del self.transformer.__dict__[RUNNER_ATTR]
        self._pass = None

    def _set(self, obj: Any, attr: str, value: Any) -> None:
        had_own = attr in obj.__dict__
        self._patches.append(_Patch(obj, attr, had_own, obj.__dict__.get(attr), value))
        object.__setattr__(obj, attr, value)

    # ------------------------------------------------------------------------------------------------------
    # Calls: pipeline -> transformer -> blocks
    # ------------------------------------------------------------------------------------------------------

    def _new_call(self) -> CallState:
        return CallState(
            n_derivatives_hidden=self._orders[0],
            n_derivatives_encoder=self._orders[1],
            mix_orders=self.config.taylorseer.mix_orders,
        )

    def begin_pipeline_call(self) -> None:
        """A pipeline call starts: fresh state for every branch."""
        self._claim("a pipeline call")
        try:
            self._check_no_foreign_cache()
        except BaseException:
            self._release()
            raise
        self._run_depth += 1
        self.pipeline_managed = True
        self.call = self._new_call()
        self._pass = None

    def end_pipeline_call(self) -> None:
        """A pipeline call ended (normally or not). Stats stay readable until the next call."""
        self._pass = None
        self._context = None
        self._run_depth = max(self._run_depth - 1, 0)
        if self._run_depth == 0:  # the next bare transformer call starts a new run
            self.pipeline_managed = False
            self._run_ended = True
        self._release()
        call = self.call
        if self.separate_cfg and call.unmarked_calls % 2 == 1:
            self._warn_once(
                "odd-cfg",
                f"do_separate_classifier_free_guidance=True but the pipeline made {call.unmarked_calls} "
                "transformer calls (odd), so it does not run CFG as two calls per step: cond/uncond buffers "
                "were mixed. Pass do_separate_classifier_free_guidance=False for this pipeline.",
            )
        self._check_schedule_fits(call)

    def _check_schedule_fits(self, call: CallState) -> None:
        """Warn when a fixed schedule was plainly made for another step count than this call ran."""
        if not self.schedule or not call.branches or not self.caching_enabled:
            return
        # the pipeline's own count where its marks carry it: with several denoisers (Wan 2.2) each one runs only
        # a stretch of the steps, numbered as the pipeline numbers them
        steps = call.marked_num_steps or max(branch.calls for branch in call.branches.values())
        listed = sorted(self.schedule)
        gaps = [b - a for a, b in zip([0, *listed], [*listed, steps])]
        if listed[-1] >= steps:
            self._warn_once(
                "schedule-steps",
                f"compute_steps lists step {listed[-1]}, but this call ran {steps} steps: the schedule was made "
                "for more steps (calibrate one for this step count)",
            )
        elif steps - listed[-1] > max(gaps[:-1], default=0) + 1:
            self._warn_once(
                "schedule-steps",
                f"compute_steps ends at step {listed[-1]}, but this call ran {steps} steps: its last "
                f"{steps - 1 - listed[-1]} steps were all served from the cache (the schedule was made for "
                "fewer steps; calibrate one for this step count)",
            )

    @contextlib.contextmanager
    def _cache_context(
        self, orig: Callable[..., Any], name: str, *args: Any, **kwargs: Any
    ) -> Iterator[None]:
        """The pipeline marks the branch (diffusers' `transformer.cache_context("cond"/"uncond")`)."""
        previous = self._context
        self._context = (name, kwargs)
        try:
            with orig(name, *args, **kwargs):
                yield
        finally:
            self._context = previous

    def _transformer_forward(self, orig: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._pass is not None or not self.active:  # re-entrant call, or a removed cache: leave it alone
            return compiled_call(orig, *args, **kwargs)
        if self.adapter is not None and self.adapter.is_side_pass(kwargs):  # not a denoising step
            return compiled_call(orig, *args, **kwargs)
        self._pass = self._open_pass(args, kwargs)
        ok = False
        try:
            if self.adapter is None:  # adapter="auto": this first call is computed and teaches the layout
                out = self._derive_and_install(orig, args, kwargs)
            elif self.output_mode and self.caching_enabled:
                out = self._output_step(self._pass, orig, args, kwargs)
            else:
                out = orig(*args, **kwargs)
            ok = True
        finally:
            p, self._pass = self._pass, None
            self._close_pass(p, ok)
        if self.recorder is not None and p is not None and not p.cached:
            self._record_output(p, out)
        if self.validate and p is not None and self._can_replay(p):
            self._replay(p, orig, args, kwargs, out)
        return out

    def _output_step(
        self, p: _Pass, orig: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """taylorseer_cache_type='output': a step off the schedule returns the forecast of the transformer's
        output (no part of the transformer runs); a step on it, or one the forecast cannot serve (nothing stored
        yet, other latents layout, another `return_dict`), runs in full and updates the forecast."""
        branch = p.branch
        store = branch.output
        latents = layout(self.adapter.latents_arg.get(args, kwargs))
        return_dict = kwargs.get("return_dict")
        if (
            p.step not in self.schedule
            and store is not None
            and store.seer.factors
            and store.latents_layout == latents
            and store.return_dict == return_dict
        ):
            p.cached = True
            branch.cached_steps.append(p.step)
            forecast = store.seer.predict(p.step)
            if forecast is store.seer.factors[0]:  # order 0: never hand out the stored tensor itself
                forecast = forecast.clone()
            return _with_first_tensor(store.template, forecast)
        if store is not None and store.seer.factors and store.latents_layout != latents:
            self._warn_once(
                "output-layout",
                "the latents changed shape/dtype/device between steps of one call; computing fully",
            )
        p.whole = True
        out = orig(*args, **kwargs)
        value = _single_tensor_output(out, type(self.transformer).__name__)
        if store is None or store.latents_layout != latents or store.return_dict != return_dict:
            store = branch.output = OutputStore(
                TaylorSeer(self._orders[0], self.config.taylorseer.mix_orders)
            )
        # a copy: the pipeline owns `out` and may change it in place (the stored value must not follow)
        store.seer.update(value.detach().clone(), p.step)
        # the output's structure with an empty stand-in for its tensor (None for a bare tensor)
        store.template = (
            None if isinstance(out, torch.Tensor) else _with_first_tensor(out, value.new_empty(0))
        )
        store.latents_layout, store.return_dict = latents, return_dict
        return out

    def _record_output(self, p: _Pass, out: Any) -> None:
        """The recorder also gets the output of every computed step (where it is one tensor)."""
        try:
            value = _single_tensor_output(out, type(self.transformer).__name__)
        except ValueError:
            return
        self.recorder(p.branch.name, p.step, -1, "output", value)

    def _derive_and_install(
        self, orig: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        from .adapters.auto import derive_adapter

        out, adapter = derive_adapter(self.transformer, orig, args, kwargs)
        self._set_adapter(adapter)
        self._install_blocks()
        return out

    def _can_replay(self, p: _Pass) -> bool:
        """After the first computed step that stored everything a cached step needs (output mode: never; its
        cached steps use no block, so there is no block description to check)."""
        if p.cached or not self.caching_enabled or self.adapter is None or self.output_mode:
            return False
        if self.prune is not None:
            return bool(p.branch.blocks)
        return all(start in p.branch.segments for start in self.segment_starts)

    def _replay(
        self, p: _Pass, orig: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
    ) -> None:
        """validate=True: run the same inputs again through the cached path; it must give the same output.

        With identical inputs every stored residual is exact, so any difference beyond float rounding means
        the adapter is wrong for this model (a stream it does not know about, a block it misreads).
        """
        self.validate = False
        replay = _Pass(branch=p.branch, step=p.step, replay=True)
        if self.prune is not None:
            replay.prune_allowed = True
        self._pass = replay
        try:
            again = orig(*args, **kwargs)
        finally:
            self._pass = None
        ref, got = _first_tensor(out), _first_tensor(again)
        diff = float((ref.float() - got.float()).abs().max())
        scale = float(ref.float().abs().max()) or 1.0
        self.last_validation_diff = diff
        if not (replay.cached or replay.pruned) or diff > 1e-3 * scale:
            what = (
                "never reached the cached path"
                if not (replay.cached or replay.pruned)
                else f"max |diff| {diff:.3g}"
            )
            raise ValueError(
                f"validate=True: a cached step with identical inputs does not reproduce the computed output of "
                f"{type(self.transformer).__name__} ({what}, output scale {scale:.3g}); the adapter does not "
                "describe this model's blocks correctly"
            )

    def _open_pass(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Pass:
        name, ctx_kwargs = self._context if self._context is not None else (None, {})
        if not self.pipeline_managed and self.adapter is not None:
            self._detect_new_run(args, kwargs)
        # Within a pipeline call: which way the steps run tells a new denoising loop, and (unmarked calls) the
        # timestep groups the calls of one step. A marked call with a step index needs no host read for this.
        t = None
        if self.pipeline_managed:
            marked_step = ctx_kwargs.get("step_index") if name is not None else None
            if isinstance(marked_step, int) and not isinstance(marked_step, bool):
                self._detect_new_loop("step_index", float(marked_step))
            elif name is None:
                t = self._timestep(args, kwargs)  # one small host read per unmarked call
                if t is not None:
                    self._detect_new_loop("timestep", t)
        call = self.call
        if name is not None:
            branch_name = str(name)
            if branch_name == "uncond" and self.explicit_separate_cfg is False:
                self._warn_once(
                    "marks-win",
                    "do_separate_classifier_free_guidance=False, but the pipeline marks cond/uncond calls "
                    "itself; its marks win and each branch keeps its own cache",
                )
        elif t is not None and self.explicit_separate_cfg is not False:
            branch_name = self._branch_by_timestep(call, t)
        elif self.separate_cfg:
            first_of_step = call.unmarked_calls % 2 == 0
            uncond = first_of_step == self.config.cfg.cfg_compute_first
            branch_name = "uncond" if uncond else "cond"
            call.unmarked_calls += 1
            if self.adapter is not None:
                self._check_cfg_pair(call, first_of_step, args, kwargs)
        else:
            branch_name = "cond"
        branch = call.branch(branch_name)
        step = ctx_kwargs.get("step_index")
        if isinstance(step, bool) or not isinstance(step, int):
            step = branch.calls
        total = ctx_kwargs.get("num_inference_steps")  # the pipeline's step count, where its marks carry it
        if isinstance(total, int) and not isinstance(total, bool):
            call.marked_num_steps = total
        branch.calls += 1
        p = _Pass(branch=branch, step=step)
        if self.prune is not None:
            cfg = self.prune
            p.prune_allowed = (
                self.caching_enabled
                and step >= cfg.warmup_steps
                and (cfg.max_pruned_steps < 0 or branch.pruned_steps < cfg.max_pruned_steps)
            )
        return p

    def _timestep(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float | None:
        spec = self.adapter.timestep_arg if self.adapter is not None else self._auto_timestep
        t = spec.get(args, kwargs) if spec is not None else None
        if isinstance(t, torch.Tensor) and t.numel() > 0:
            return float(t.reshape(-1)[0])  # one small host read per transformer call
        return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None

    def _detect_new_loop(self, source: str, value: float) -> None:
        """A pipeline call that runs several denoising loops (chunks, stages): within one loop the step index or
        the timestep moves one way, so a move the other way starts a new loop, with fresh state (stats then
        describe the last loop). `source` keeps step indices and timesteps apart."""
        last, direction = self.call.loop_progress.get(source, (None, None))
        if last is not None and value != last:
            moved = 1 if value > last else -1
            if direction is None:
                direction = moved
            elif moved != direction:
                self.call = self._new_call()
                direction = None
        self.call.loop_progress[source] = (value, direction)

    def _branch_by_timestep(self, call: CallState, t: float) -> str:
        """Unmarked calls within a pipeline call: the calls of one step share its timestep, so the k-th call with
        the same timestep is the k-th branch (CFG's cond/uncond pair; a third pass such as skip-layer guidance gets its own). One
        call per step, a pair per step, or pairs that stop half-way (CFG truncation) are all told apart."""
        call.step_call = call.step_call + 1 if call.last_timestep == t else 0
        call.last_timestep = t
        first, second = ("uncond", "cond") if self.config.cfg.cfg_compute_first else ("cond", "uncond")
        return (first, second)[call.step_call] if call.step_call < 2 else f"call{call.step_call}"

    def _check_cfg_pair(
        self, call: CallState, first_of_step: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Both CFG calls of a step get the same latents; other latents on the second call mean one call per step."""
        latents = self.adapter.latents_arg.get(args, kwargs)
        if first_of_step:
            call.pair_latents = latents
            return
        first, call.pair_latents = call.pair_latents, None
        if isinstance(latents, torch.Tensor) and isinstance(first, torch.Tensor) and latents is not first:
            if latents.shape != first.shape or latents.data_ptr() != first.data_ptr():
                self._warn_once(
                    "cfg-pair",
                    "do_separate_classifier_free_guidance=True, but the two transformer calls of a step got "
                    "different latents: the pipeline seems to run one call per step, so cond/uncond buffers "
                    "would be mixed. Pass do_separate_classifier_free_guidance=False for this pipeline.",
                )

    def _detect_new_run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Bare transformer outside a marked run (pipeline call or `denoising_run`): does this call start a new run?

        Yes when a marked run just ended; when the latents change shape, dtype or device (size, frames, batch);
        with `num_inference_steps` given, when the branch this call goes to already made that many calls;
        otherwise when the timestep goes up, or repeats within one branch (timesteps fall within a run, and only
        the two CFG calls of a step share one). A run that starts below where the previous one stopped
        (img2img after a half run) cannot be told from its continuation: mark runs with `denoising_run`.
        Costs one small host read per call; pipelines don't need it.
        """
        latents = layout(self.adapter.latents_arg.get(args, kwargs))
        new = self._run_ended or (
            self._prev_latents_layout is not None and latents != self._prev_latents_layout
        )
        if new or not self.call.branches:  # first call of a run
            self._check_no_foreign_cache()
        self._run_ended = False
        self._prev_latents_layout = latents
        value = self._timestep(args, kwargs)
        branch = self.call.branches.get(self._branch_name(self.call))
        if self.num_inference_steps is not None:
            new = new or (branch is not None and branch.calls >= self.num_inference_steps)
        elif value is not None:
            new = (
                new
                or (self._prev_timestep is not None and value > self._prev_timestep)
                or (branch is not None and branch.last_timestep is not None and value >= branch.last_timestep)
            )
        if new:
            self.call = self._new_call()
        if value is not None:
            self.call.branch(self._branch_name(self.call)).last_timestep = value
            self._prev_timestep = value

    def _branch_name(self, call: CallState) -> str:
        """The branch the next transformer call goes to (as `_open_pass` names it), without counting the call."""
        if self._context is not None:
            return str(self._context[0])
        if self.separate_cfg:
            first_of_step = call.unmarked_calls % 2 == 0
            return "uncond" if first_of_step == self.config.cfg.cfg_compute_first else "cond"
        return "cond"

    # ------------------------------------------------------------------------------------------------------
    # One owner at a time; no second cache
    # ------------------------------------------------------------------------------------------------------

    @eager_boundary  # torch.compile: never traced; the blocks' compute compiles again inside (compile.py)
    def _owned_forward(self, orig: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The transformer's forward: claim the cache for this thread, then run."""
        if not self.active:
            return compiled_call(orig, *args, **kwargs)
        self._claim("a transformer call")
        try:
            return self._transformer_forward(orig, *args, **kwargs)
        finally:
            self._release()

    def _claim(self, what: str) -> None:
        """The cache state belongs to the transformer: one thread may use it at a time (re-entry is fine)."""
        me = threading.get_ident()
        with self._owner_lock:
            if self._owner is not None and self._owner != me:
                raise RuntimeError(
                    f"cache-dit: {what} on {type(self.transformer).__name__} while {self._owner_what} from "
                    "another thread is using the same cached transformer. The cache state belongs to the "
                    "transformer, which pipelines made with `from_pipe` share, so concurrent calls would mix "
                    "their buffers. Run them one after another (e.g. behind a threading.Lock), or give each "
                    "thread its own pipeline (`copy.deepcopy(pipe)`, which copies the cache too)."
                )
            if self._owner is None:
                self._owner, self._owner_what = me, what
            self._owner_depth += 1

    def _release(self) -> None:
        with self._owner_lock:
            self._owner_depth = max(self._owner_depth - 1, 0)
            if self._owner_depth == 0:
                self._owner = None

    def _check_no_foreign_cache(self) -> None:
        found = foreign_cache_hooks(self.transformer)
        if found:
            raise RuntimeError(
                f"cache-dit: diffusers' own cache ({', '.join(found)}) is on {type(self.transformer).__name__} "
                "together with cache-dit's; both would skip work and their errors add up. Remove one: "
                "`transformer.disable_cache()` (or `HookRegistry.remove_hook(name)` for hooks applied with "
                "diffusers' `apply_*` functions), or `cache_dit.disable_cache(pipe)`."
            )

    def _refuse_diffusers_cache(self, *args: Any, **kwargs: Any) -> None:
        """Stands in for diffusers' `transformer.enable_cache(...)` while cache-dit's cache is applied."""
        raise RuntimeError(
            f"cache-dit's cache is applied to this {type(self.transformer).__name__}; diffusers' enable_cache "
            "would stack a second cache on it (both skip work and their errors add up). Remove cache-dit's "
            "first with `cache_dit.disable_cache(pipe)` (or `disable_cache(transformer)`)."
        )

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles: no lock, no owner, no call in flight (the buffers and stats go along)."""
        state = self.__dict__.copy()
        del state["_owner_lock"]
        state.update(
            _owner=None, _owner_depth=0, _pass=None, _context=None, _run_depth=0, pipeline_managed=False
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._owner_lock = threading.Lock()

    def _close_pass(self, p: _Pass | None, ok: bool) -> None:
        if p is None or p.replay:
            return
        branch = p.branch
        self._io_checked = self._io_checked or ok
        if not ok:
            branch.drop_buffers()
            if p.cached:
                branch.cached_steps.remove(p.step)
            return
        if self.prune is not None:
            branch.pruned_blocks.append(p.pruned)
            branch.actual_blocks.append(p.computed)
            if p.pruned:
                branch.pruned_steps += 1
            if p.prune_diffs:
                branch.residual_diffs[p.step] = sum(p.prune_diffs) / len(p.prune_diffs)

    @eager_boundary
    def _run_block(self, idx: int, forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        p = self._pass
        if p is None or p.whole:  # a block called outside a transformer call, or in an output-mode step
            return forward(*args, **kwargs)
        if not self._io_checked:
            forward = self._checking_forward(p, idx, forward, args, kwargs)
        if self.prune is not None:
            return self._prune_block(p, idx, forward, args, kwargs)
        return self._dbcache_block(p, idx, forward, args, kwargs)

    def _checking_forward(
        self, p: _Pass, idx: int, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[..., Any]:
        """First pass only: check block `idx`'s inputs now and its output when it runs, against the adapter.

        A wrong adapter (declared or registered) fails here, naming the block, instead of giving a wrong image.
        """
        io, name = self.ios[idx], f"{type(self.transformer).__name__}.{self.block_names[idx]}"
        if idx <= p.last_block:
            raise ValueError(
                f"{name} ran after {self.block_names[p.last_block]}: the adapter lists the blocks in another "
                "order than the model runs them (block lists must be given in execution order, each run once)"
            )
        p.last_block = idx
        hidden, encoder = io.inputs(args, kwargs)
        if not isinstance(hidden, torch.Tensor):
            raise ValueError(
                f"{name}: the adapter's hidden argument {io.hidden_arg.name!r} (position "
                f"{io.hidden_arg.position}) is {type(hidden).__name__}, expected a tensor"
            )
        if io.encoder_arg is not None and encoder is not None and not isinstance(encoder, torch.Tensor):
            raise ValueError(
                f"{name}: the adapter's encoder argument {io.encoder_arg.name!r} is "
                f"{type(encoder).__name__}, expected a tensor or None"
            )

        def checked(*a: Any, **kw: Any) -> Any:
            out = forward(*a, **kw)
            if io.hidden_out is None:
                if not isinstance(out, torch.Tensor):
                    raise ValueError(
                        f"{name} returned {type(out).__name__}, but the adapter says it returns the hidden "
                        "states tensor"
                    )
            elif not isinstance(out, (tuple, list)) or len(out) != io.num_outputs:
                got = (
                    f"{type(out).__name__} of length {len(out)}"
                    if isinstance(out, (tuple, list))
                    else type(out).__name__
                )
                raise ValueError(
                    f"{name} returned a {got}, but the adapter says a tuple of {io.num_outputs} "
                    f"(hidden at {io.hidden_out}, encoder at {io.encoder_out})"
                )
            if io.hidden_out is not None:
                unnamed = [
                    i
                    for i, item in enumerate(out)
                    if item is not None and i not in (io.hidden_out, io.encoder_out)
                ]
                if unnamed:
                    raise ValueError(
                        f"{name} returned {type(out[unnamed[0]]).__name__} at position {unnamed[0]}, which the "
                        "adapter names neither hidden nor encoder: the cache cannot stand in for it"
                    )
            hidden_out, encoder_out = io.outputs(out)
            if not isinstance(hidden_out, torch.Tensor) or hidden_out.shape != hidden.shape:
                got = (
                    tuple(hidden_out.shape)
                    if isinstance(hidden_out, torch.Tensor)
                    else type(hidden_out).__name__
                )
                raise ValueError(
                    f"{name}: the output the adapter names as hidden states is {got}, expected a tensor of the "
                    f"input's shape {tuple(hidden.shape)} (a block must keep the shape of the stream it updates)"
                )
            if io.carries_encoder:
                if encoder_out is None:
                    self._none_encoder_out.add(idx)
                elif not isinstance(encoder_out, torch.Tensor):
                    raise ValueError(
                        f"{name}: the output the adapter names as encoder states is "
                        f"{type(encoder_out).__name__}, expected a tensor or None"
                    )
            return out

        return checked

    # ------------------------------------------------------------------------------------------------------
    # DBCache / FBCache
    # ------------------------------------------------------------------------------------------------------

    def _dbcache_block(
        self, p: _Pass, idx: int, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        io = self.ios[idx]
        if idx == 0 and self.Fn == 0:  # a fixed schedule with no first blocks: decide before block 0
            p.encoder_layout = layout(io.inputs(args, kwargs)[1])
            self._decide(p, None)
        if idx < self.Fn:
            hidden = io.hidden_arg.get(args, kwargs)
            if idx == 0 or not same_layout(hidden, p.first_hidden_in):
                p.first_hidden_in = hidden
            out = forward(*args, **kwargs)
            if idx == self.Fn - 1:
                hidden_out, encoder_out = io.outputs(out)
                p.encoder_layout = layout(encoder_out if io.carries_encoder else io.inputs(args, kwargs)[1])
                self._decide(p, hidden_out - p.first_hidden_in)  # (B, N, D) residual of the first Fn blocks
            return out

        if idx < self.mid_end:
            if not self.caching_enabled:
                return forward(*args, **kwargs)
            return self._middle_block(p, idx, io, forward, args, kwargs)

        return self._bn_block(p, idx, forward, args, kwargs)

    def _decide(self, p: _Pass, fn_residual: torch.Tensor | None) -> None:
        """Cache this step or not. The one host sync of a DBCache step is here (none with a schedule)."""
        branch, step, db = p.branch, p.step, self.db
        p.fn_residual = fn_residual
        if p.replay:
            p.cached = self._middle_ready(branch, p.encoder_layout)
            return
        shared = not self.config.cfg.cfg_diff_compute_separate
        decided = self.call.step_decisions.get(step) if shared else None
        if self.schedule is not None:  # fixed schedule: no diff, no host sync
            cached = (
                self.caching_enabled
                and step not in self.schedule
                and self._middle_ready(branch, p.encoder_layout)
            )
        elif decided is not None:  # another branch already decided this step for both
            cached = decided and self._middle_ready(branch, p.encoder_layout)
        else:
            diff = None
            if same_layout(branch.fn_residual, fn_residual):
                diff = self.sync.relative_l1(fn_residual, branch.fn_residual)  # host sync (all ranks alike)
                branch.residual_diffs[step] = diff
            elif branch.fn_residual is not None:
                self._warn_once(
                    "fn-layout",
                    "hidden states changed shape/dtype/device between steps of one call; computing fully",
                )
            cached = (
                diff is not None
                and self.caching_enabled
                and step_can_cache(
                    step,
                    db.warmup_steps,
                    len(branch.cached_steps),
                    db.max_cached_steps,
                    branch.continuous_cached,
                    db.max_continuous_cached_steps,
                )
                and is_similar(diff, db.residual_diff_threshold)
                and self._middle_ready(branch, p.encoder_layout)
            )
            if shared:
                self.call.step_decisions[step] = cached
        p.cached = cached
        _log.debug(
            "step %d %s: diff %.4f, %s",
            step,
            branch.name,
            branch.residual_diffs.get(step, float("nan")),
            "cached" if cached else "computed",
        )
        if cached:
            branch.cached_steps.append(step)
            branch.continuous_cached += 1
        else:
            branch.continuous_cached = 0
            branch.fn_residual = fn_residual

    def _middle_ready(self, branch: BranchState, encoder_layout: tuple[Any, ...] | None) -> bool:
        """Every middle segment has a stored residual, and the encoder stream entering the middle kept its
        layout (a residual computed against other text is stale). Whether each segment's residual fits its
        hidden input is checked at the segment's start."""
        if not all(
            start in branch.segments and branch.segments[start].hidden.factors
            for start in self.segment_starts
        ):
            return False
        if encoder_layout != branch.mid_encoder_layout:
            self._warn_once(
                "enc-step-layout",
                "encoder (text) states changed shape/dtype/device between steps of one call; computing fully",
            )
            return False
        return True

    def _middle_block(
        self,
        p: _Pass,
        idx: int,
        io: BlockIO,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """A middle block: opens a segment at its start, then runs, or returns what the cache gives."""
        hidden, encoder = io.inputs(args, kwargs)
        reshaped = (
            p.seg_start is not None
            and not p.seg_from_cache
            and p.last_hidden_out is not None
            and hidden.shape != p.last_hidden_out.shape
        )
        if idx in self.segment_starts or reshaped:
            self._close_segment(p)
            self.segment_starts.add(idx)
            p.seg_start = idx
            p.seg_from_cache = p.cached and self._segment_fits(p.branch, idx, hidden, encoder)
            if p.cached and not p.seg_from_cache and idx == self.Fn and not p.replay:
                self._uncache(p)  # nothing skipped yet: the whole step is computed (and stored) instead
            if p.seg_from_cache:
                return self._output(idx, io, *self._cached_segment(p, idx, hidden, encoder))
            p.seg_store = not p.cached  # a segment computed on a cached step is not stored
            p.seg_carries_encoder = True
            p.seg_hidden_in, p.seg_encoder_in = hidden, encoder
            p.side_hidden = p.side_encoder = None
        elif p.seg_from_cache:
            return self._output(idx, io, hidden, encoder)  # skipped: the segment's residual is already added
        else:
            self._track_side_inputs(p, hidden, encoder)
        out = forward(*args, **kwargs)
        p.last_hidden_out, p.last_encoder_out = io.outputs(out)
        p.seg_carries_encoder = p.seg_carries_encoder and io.carries_encoder
        if idx == self.mid_end - 1:
            self._close_segment(p)
        return out

    def _uncache(self, p: _Pass) -> None:
        """Turn a step decided as cached into a computed one (its first segment's residual does not fit)."""
        p.cached = False
        branch = p.branch
        if branch.cached_steps and branch.cached_steps[-1] == p.step:
            branch.cached_steps.pop()
        branch.continuous_cached = 0
        branch.fn_residual = p.fn_residual

    def _segment_fits(
        self, branch: BranchState, start: int, hidden: torch.Tensor, encoder: torch.Tensor | None
    ) -> bool:
        """The segment's stored residuals match this step's inputs in shape, dtype and device."""
        store = branch.segments.get(start)
        if store is None or not same_layout(
            store.hidden.factors[0] if store.hidden.factors else None, hidden
        ):
            fits = False
        elif store.encoder.factors and encoder is not None:
            fits = same_layout(store.encoder.factors[0], encoder)
        else:
            fits = True
        if not fits:
            self._warn_once(
                "segment-layout",
                f"the input of {self.block_names[start]} changed shape/dtype/device since its residual was "
                "stored; computing that segment of the cached step",
            )
        return fits

    def _cached_segment(
        self, p: _Pass, start: int, hidden: torch.Tensor, encoder: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        store = p.branch.segments[start]
        forecast = store.hidden.predict(p.step)
        hidden = forecast if self.hidden_mode is TaylorSeerCacheType.HIDDEN_STATES else hidden + forecast
        if encoder is not None and store.encoder.factors:
            forecast_e = store.encoder.predict(p.step)
            encoder = (
                forecast_e if self.encoder_mode is TaylorSeerCacheType.HIDDEN_STATES else encoder + forecast_e
            )
        return hidden, encoder

    @staticmethod
    def _track_side_inputs(p: _Pass, hidden: torch.Tensor, encoder: torch.Tensor | None) -> None:
        """Record what the model added between two blocks of a segment (the input is not the last output)."""
        if hidden is not p.last_hidden_out:
            delta = hidden - p.last_hidden_out
            p.side_hidden = delta if p.side_hidden is None else p.side_hidden + delta
        if encoder is not None and p.last_encoder_out is not None and encoder is not p.last_encoder_out:
            delta = encoder - p.last_encoder_out
            p.side_encoder = delta if p.side_encoder is None else p.side_encoder + delta

    def _close_segment(self, p: _Pass) -> None:
        """End of a segment; on a computed step store its blocks' own residual (or output) for later."""
        start, p.seg_start = p.seg_start, None
        if start is None or p.seg_from_cache or not p.seg_store:
            return
        store = p.branch.segment(start)
        out_h = p.last_hidden_out if p.side_hidden is None else p.last_hidden_out - p.side_hidden
        value_h = out_h if self.hidden_mode is TaylorSeerCacheType.HIDDEN_STATES else out_h - p.seg_hidden_in
        store.hidden.update(value_h, p.step)
        if self.recorder is not None:
            self.recorder(p.branch.name, p.step, start, "hidden", value_h)
        if start == self.Fn:  # what the next decision compares (the encoder stream after block Fn-1)
            p.branch.mid_encoder_layout = p.encoder_layout
        if p.seg_carries_encoder and p.seg_encoder_in is not None and p.last_encoder_out is not None:
            out_e = p.last_encoder_out if p.side_encoder is None else p.last_encoder_out - p.side_encoder
            value_e = (
                out_e if self.encoder_mode is TaylorSeerCacheType.HIDDEN_STATES else out_e - p.seg_encoder_in
            )
            store.encoder.update(value_e, p.step)
            if self.recorder is not None:
                self.recorder(p.branch.name, p.step, start, "encoder", value_e)

    def _output(self, idx: int, io: BlockIO, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        """What block `idx` returns when the cache stands in for it (None where the block returns None)."""
        return io.make_output(hidden, None if idx in self._none_encoder_out else encoder)

    def _bn_block(
        self, p: _Pass, idx: int, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        ids = self.db.Bn_compute_blocks_ids
        if ids is None or (idx - self.mid_end) in ids or not self.caching_enabled:
            return forward(*args, **kwargs)
        io = self.ios[idx]
        hidden, encoder = io.inputs(args, kwargs)
        stored = p.branch.blocks.get(idx)
        if p.cached and stored is not None and stored.matches(hidden, encoder):
            diff = self.sync.relative_l1(hidden, stored.hidden_in)
            if is_similar(diff, self.db.non_compute_blocks_diff_threshold):
                return self._output(idx, io, *self._reuse_block(io, stored, hidden, encoder))
        out = forward(*args, **kwargs)
        p.branch.blocks[idx] = self._block_buffers(io, hidden, encoder, out)
        return out

    # ------------------------------------------------------------------------------------------------------
    # DBPrune
    # ------------------------------------------------------------------------------------------------------

    def _prune_block(
        self, p: _Pass, idx: int, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not self.prunable[idx]:
            p.computed += 1
            return forward(*args, **kwargs)
        cfg, branch, io = self.prune, p.branch, self.ios[idx]
        hidden, encoder = io.inputs(args, kwargs)
        stored = branch.blocks.get(idx)
        if p.prune_allowed and stored is not None:
            if stored.matches(hidden, encoder):
                diff = self.sync.relative_l1(hidden, stored.hidden_in)  # host sync, one per prunable block
                threshold = cfg.residual_diff_threshold
                if cfg.enable_dynamic_prune_threshold:
                    threshold = dynamic_prune_threshold(
                        threshold,
                        p.prune_diffs,
                        cfg.dynamic_prune_threshold_relax_ratio,
                        cfg.max_dynamic_prune_threshold,
                    )
                p.prune_diffs.append(diff)
                _log.debug(
                    "step %d %s block %d: diff %.4g, threshold %.4g, %s",
                    p.step,
                    branch.name,
                    idx,
                    diff,
                    threshold,
                    "pruned" if is_similar(diff, threshold) else "computed",
                )
                if is_similar(diff, threshold):
                    p.pruned += 1
                    return self._output(idx, io, *self._reuse_block(io, stored, hidden, encoder))
            else:
                self._warn_once(
                    "prune-layout",
                    "block input (hidden or encoder states) changed shape/dtype/device between steps; "
                    "computing fully",
                )
        out = forward(*args, **kwargs)
        p.computed += 1
        if self.caching_enabled and (
            stored is None
            or not stored.matches(hidden, encoder)
            or p.step % cfg.residual_cache_update_interval == 0
        ):
            branch.blocks[idx] = self._block_buffers(io, hidden, encoder, out)
        return out

    # ------------------------------------------------------------------------------------------------------
    # Shared per-block residual helpers (Bn reuse and DBPrune)
    # ------------------------------------------------------------------------------------------------------

    @staticmethod
    def _block_buffers(
        io: BlockIO, hidden: torch.Tensor, encoder: torch.Tensor | None, out: Any
    ) -> BlockBuffers:
        hidden_out, encoder_out = io.outputs(out)
        encoder_residual = encoder_out - encoder if io.carries_encoder and encoder is not None else None
        return BlockBuffers(
            hidden_in=hidden,
            hidden_residual=hidden_out - hidden,
            encoder_residual=encoder_residual,
            encoder_in_layout=layout(encoder),
        )

    @staticmethod
    def _reuse_block(
        io: BlockIO, stored: BlockBuffers, hidden: torch.Tensor, encoder: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = hidden + stored.hidden_residual
        if io.carries_encoder and encoder is not None and same_layout(stored.encoder_residual, encoder):
            encoder = encoder + stored.encoder_residual
        return hidden, encoder

    # ------------------------------------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        return CacheStats.from_call(self.config.cache_type.value, self.call)

    def _warn_once(self, key: str, message: str) -> None:
        """Once per call (run): a later call with the same fault warns again."""
        if key not in self.call.warned:
            self.call.warned.add(key)
            warn_at_caller(f"cache-dit: {message}", RuntimeWarning)  # points at the user's line


def _first_tensor(out: Any) -> torch.Tensor:
    """The main output of a transformer call: the tensor itself, the first of a tuple, or `.sample`."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return _first_tensor(out[0])
    if hasattr(out, "to_tuple"):
        return _first_tensor(out.to_tuple())
    raise TypeError(f"cannot find the output tensor in {type(out).__name__}")


def _single_tensor_output(out: Any, model: str) -> torch.Tensor:
    """The one tensor of a transformer output that output mode forecasts (a tensor, a tuple or a diffusers
    `BaseOutput` holding exactly one tensor, first)."""
    if isinstance(out, Mapping):  # diffusers' outputs are dataclasses; their None fields are not in .values()
        items = list(out.values()) if dataclasses.is_dataclass(out) else []
    else:
        items = list(out) if isinstance(out, tuple) else [out]
    tensors = [item for item in items if isinstance(item, torch.Tensor)]
    if not items or not isinstance(items[0], torch.Tensor) or len(tensors) != 1:
        raise ValueError(
            f"taylorseer_cache_type='output' forecasts a transformer output that is one tensor; {model} returned "
            f"{type(out).__name__} with {len(tensors)} tensors. Use taylorseer_cache_type='residual' for it."
        )
    return items[0]


def _with_first_tensor(template: Any, value: torch.Tensor) -> Any:
    """`template` (an output `_single_tensor_output` accepted, or None for a bare tensor) with its tensor
    replaced by `value`."""
    if template is None or isinstance(template, torch.Tensor):
        return value
    if isinstance(template, tuple):
        return (value, *template[1:])
    first = next(iter(template.keys()))
    return dataclasses.replace(template, **{first: value})


def get_runner(transformer: Any) -> CacheRunner | None:
    runner = getattr(unwrap_compiled(transformer), "__dict__", {}).get(RUNNER_ATTR)
    return runner if isinstance(runner, CacheRunner) else None


__all__ = ["CacheRunner", "CacheType", "get_runner"]
