"""The cached block-runner: installs the wrappers and wires each block to the unit that decides for it.

How it sits in the model's path: every block's `forward` is wrapped *in place* (an instance attribute; the
state dict, the block lists and the transformer's own loop are untouched). The transformer keeps running its
own loop, so whatever it does between blocks (FLUX adds ControlNet residuals, other models pass per-block
inputs) keeps working; the price is one extra Python call per block. The transformer's `forward` is wrapped to
open a *pass* (one transformer call: its CFG branch and step index) and its `cache_context` to read the
pipeline's own branch marks.

The runner itself decides nothing. It asks:

- `runs.RunTracker` / `runs.Ownership`: which run, branch and step a call is, and which thread owns the cache;
- a step policy (`policies.gate.StepGate` for DBCache/FBCache, `policies.prune.PrunePolicy` for DBPrune,
  `policies.output.OutputForecast` for `taylorseer_cache_type='output'`);
- `segments.SegmentExecutor`: runs or serves the middle segments and keeps their residuals;
- `checks`: the first pass's adapter checks and `validate=True`'s replay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._warnings import warn_at_caller
from ..parallel.groups import DecisionSync
from .adapters import BlockIO, TransformerAdapter
from .adapters.declared import timestep_spec
from .cache_types import CacheType
from .checks import can_replay, checking_forward, replay
from .compile import compiled_call, eager_boundary, unwrap_compiled
from .config import CacheConfig, TaylorSeerCacheType
from .patching import RUNNER_ATTR, Patcher, Wrapper, foreign_cache_hooks, refuse_diffusers_cache
from .policies.gate import StepGate
from .policies.output import OutputForecast, single_tensor_output
from .policies.prune import PrunePolicy
from .runs import Ownership, RunTracker
from .segments import SegmentExecutor
from .state import CallState, Pass
from .stats import CacheStats


class CacheRunner:
    """Cache state and wiring for one transformer instance."""

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
        self.orders = (
            ts.n_derivatives if ts.enable_taylorseer else 0,
            ts.n_derivatives if ts.enable_encoder_taylorseer else 0,
        )
        self.explicit_separate_cfg = config.cfg.do_separate_classifier_free_guidance
        self.separate_cfg = bool(self.explicit_separate_cfg)

        self.active = False  # True between install() and uninstall()
        self.current: Pass | None = None  # the transformer call in flight
        self.patcher = Patcher()
        self.ownership = Ownership()
        self.runs = RunTracker(self)
        self.gate = StepGate(self)
        self.executor = SegmentExecutor(self)
        self.forecast = OutputForecast(self)
        self.pruner: PrunePolicy | None = None
        self.adapter: TransformerAdapter | None = None
        self.caching_enabled = False
        self.blocks: list[torch.nn.Module] = []
        self.io_checked = False  # the first pass checks every block's inputs/outputs against the adapter
        self.auto_timestep = timestep_spec(transformer) if adapter is None else None
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
        self.Fn, self.Bn = config.Fn, config.Bn
        self.mid_end = self.num_blocks - self.Bn  # middle blocks are [Fn, mid_end)
        self.has_middle = self.Fn < self.mid_end
        # The cached middle is split into segments, one residual each: at block-list boundaries and wherever a
        # computed pass shows a block's input changed shape (text and image concatenated between blocks).
        self.segment_starts: set[int] = {self.Fn} | {i for i in list_starts if self.Fn < i < self.mid_end}
        self.none_encoder_out: set[int] = set()  # blocks that return None for the encoder (SD3's last)
        self.io_checked = False
        cfg = self.explicit_separate_cfg
        self.separate_cfg = adapter.separate_cfg if cfg is None else cfg
        gate_on = self.threshold > 0 or self.schedule is not None
        self.caching_enabled = gate_on and (self.has_middle or self.prune is not None)
        self.adapter = adapter
        self.blocks = blocks
        self.pruner = PrunePolicy(self) if self.prune is not None else None
        if self.db is not None and not self.has_middle and gate_on:
            self.warn_once(
                "no-middle",
                f"Fn_compute_blocks + Bn_compute_blocks = {self.num_blocks} covers every block of "
                f"{model_name}: there is nothing left to cache",
            )

    # -- installation ---------------------------------------------------------------------------------------

    def install(self) -> None:
        """Wrap the transformer's forward, cache_context and every block's forward (instance attributes)."""
        try:
            self.patcher.set(
                self.transformer, "forward", Wrapper(self._owned_forward, self.transformer.forward)
            )
            orig_context = getattr(self.transformer, "cache_context", None)
            if callable(orig_context):
                self.patcher.set(self.transformer, "cache_context", Wrapper(self.runs.marked, orig_context))
            if callable(getattr(self.transformer, "enable_cache", None)):
                name = type(self.transformer).__name__
                self.patcher.set(self.transformer, "enable_cache", Wrapper(refuse_diffusers_cache, name))
            self._install_blocks()
            object.__setattr__(self.transformer, RUNNER_ATTR, self)
            self.active = True
        except BaseException:
            self.uninstall()
            raise

    def _install_blocks(self) -> None:
        for idx, block in enumerate(self.blocks):
            compute = Wrapper(compiled_call, block.forward)  # compiled where the caller was (compile.py)
            self.patcher.set(block, "forward", Wrapper(self._run_block, idx, compute))

    def uninstall(self) -> None:
        """Restore every patched attribute exactly; wrappers something else wrapped again pass calls through."""
        self.active = False
        wrapped_over = self.patcher.restore()
        if wrapped_over:
            self.warn_once(
                "wrapped-over",
                f"{', '.join(wrapped_over[:3])} were wrapped again after the cache was applied; the cache's "
                "wrappers stay inside those and pass every call through",
            )
        if self.transformer.__dict__.get(RUNNER_ATTR) is self:
            del self.transformer.__dict__[RUNNER_ATTR]
        self.current = None

    # -- calls: pipeline -> transformer -> blocks -----------------------------------------------------------

    @property
    def call(self) -> CallState:
        """The state of the current (or last) run: its branches, buffers and stats."""
        return self.runs.call

    @property
    def num_inference_steps(self) -> int | None:
        """Bare transformer: the steps of one run (`apply_cache_on_transformer(num_inference_steps=)`)."""
        return self.runs.num_inference_steps

    @num_inference_steps.setter
    def num_inference_steps(self, value: int | None) -> None:
        self.runs.num_inference_steps = value

    def timestep(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float | None:
        """The timestep of a transformer call's arguments, as a float (one small host read)."""
        return self.runs.timestep(args, kwargs)

    def new_call(self) -> CallState:
        return CallState(
            n_derivatives_hidden=self.orders[0],
            n_derivatives_encoder=self.orders[1],
            mix_orders=self.config.taylorseer.mix_orders,
        )

    def begin_pipeline_call(self, what: str = "a pipeline call") -> None:
        """A pipeline call (or `denoising_run`) starts: fresh state for every branch."""
        self.ownership.claim(what, type(self.transformer).__name__)
        try:
            self.runs.begin()
        except BaseException:
            self.ownership.release()
            raise
        self.current = None

    def end_pipeline_call(self) -> None:
        """A pipeline call ended (normally or not). Stats stay readable until the next call."""
        self.current = None
        call = self.runs.end()
        self.ownership.release()
        if self.separate_cfg and call.unmarked_calls % 2 == 1:
            self.warn_once(
                "odd-cfg",
                f"do_separate_classifier_free_guidance=True but the pipeline made {call.unmarked_calls} "
                "transformer calls (odd), so it does not run CFG as two calls per step: cond/uncond buffers "
                "were mixed. Pass do_separate_classifier_free_guidance=False for this pipeline.",
                call,
            )
        self.gate.check_call(call)

    @eager_boundary  # torch.compile: never traced; the blocks' compute compiles again inside (compile.py)
    def _owned_forward(self, orig: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The transformer's forward: claim the cache for this thread, then run."""
        if not self.active:
            return compiled_call(orig, *args, **kwargs)
        self.ownership.claim("a transformer call", type(self.transformer).__name__)
        try:
            return self._transformer_forward(orig, *args, **kwargs)
        finally:
            self.ownership.release()

    def _transformer_forward(self, orig: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.current is not None or not self.active:  # re-entrant call, or a removed cache: leave it alone
            return compiled_call(orig, *args, **kwargs)
        if self.adapter is not None and self.adapter.is_side_pass(kwargs):  # not a denoising step
            return compiled_call(orig, *args, **kwargs)
        if self.adapter is None:  # adapter="auto": learn the layout on this call, then run it as any other
            self._derive_and_install(orig, args, kwargs)
        p = self.current = self.runs.open_pass(args, kwargs)
        if self.pruner is not None:
            self.pruner.open(p)
        ok = False
        try:
            if self.output_mode and self.caching_enabled:
                out = self.forecast.step(p, orig, args, kwargs)
            else:
                out = orig(*args, **kwargs)
            ok = True
        finally:
            self.current = None
            self._close_pass(p, ok)
        if self.recorder is not None and not p.cached:
            self._record_output(p, out)
        if self.validate and can_replay(self, p):
            replay(self, p, orig, args, kwargs, out)
        return out

    def _derive_and_install(
        self, orig: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """adapter='auto': one uncounted call teaches the block layout; the call then runs as a first step."""
        from .adapters.auto import derive_adapter

        _, adapter = derive_adapter(self.transformer, orig, args, kwargs)
        self._set_adapter(adapter)
        self._install_blocks()

    def _record_output(self, p: Pass, out: Any) -> None:
        """The recorder also gets the output of every computed step (where it is one tensor)."""
        try:
            value = single_tensor_output(out, type(self.transformer).__name__)
        except ValueError:
            return
        self.recorder(p.branch.name, p.step, -1, "output", value)

    def _close_pass(self, p: Pass, ok: bool) -> None:
        if p.replay:
            return
        branch = p.branch
        self.io_checked = self.io_checked or ok
        if not ok:
            branch.drop_buffers()
            if p.cached:
                branch.cached_steps.remove(p.step)
            return
        if self.pruner is not None:
            self.pruner.close(p, branch)

    @eager_boundary
    def _run_block(self, idx: int, forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        p = self.current
        if p is None or p.whole:  # a block called outside a transformer call, or in an output-mode step
            return forward(*args, **kwargs)
        if not self.io_checked:
            forward = checking_forward(self, p, idx, forward, args, kwargs)
        if self.pruner is not None:
            return self.pruner.block(p, idx, forward, args, kwargs)
        return self.executor.block(p, idx, forward, args, kwargs)

    # -- stats, warnings, copies ----------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        return CacheStats.from_call(self.config.cache_type.value, self.call)

    def warn_once(self, key: str, message: str, call: CallState | None = None) -> None:
        """Once per call (run): a later call with the same fault warns again."""
        call = call or self.call
        if key not in call.warned:
            call.warned.add(key)
            warn_at_caller(f"cache-dit: {message}", RuntimeWarning)  # points at the user's line

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles: no call in flight (the buffers and stats go along)."""
        state = self.__dict__.copy()
        state["current"] = None
        return state


def get_runner(transformer: Any) -> CacheRunner | None:
    runner = getattr(unwrap_compiled(transformer), "__dict__", {}).get(RUNNER_ATTR)
    return runner if isinstance(runner, CacheRunner) else None


__all__ = ["CacheRunner", "CacheType", "foreign_cache_hooks", "get_runner"]
