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
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .._warnings import warn_at_caller
from .adapters import BlockIO, TransformerAdapter
from .cache_types import CacheType
from .config import CacheConfig, TaylorSeerCacheType
from .decision import dynamic_prune_threshold, is_similar, relative_l1, step_can_cache
from .state import BlockBuffers, BranchState, CallState, same_layout
from .stats import CacheStats

RUNNER_ATTR = "_cache_dit_runner"
_log = logging.getLogger(__name__)  # "cache_dit...": per-step decisions at DEBUG, see cache_dit.set_verbose


@dataclass
class _Pass:
    """Scratch of one transformer call."""

    branch: BranchState
    step: int
    cached: bool = False
    first_hidden_in: torch.Tensor | None = None  # input of block 0
    mid_hidden_in: torch.Tensor | None = None  # input of the first middle block
    mid_encoder_in: torch.Tensor | None = None
    last_hidden_out: torch.Tensor | None = None  # output of the last middle block run so far
    last_encoder_out: torch.Tensor | None = None
    side_hidden: torch.Tensor | None = None  # what the model added between middle blocks (ControlNet)
    side_encoder: torch.Tensor | None = None
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
        self, transformer: torch.nn.Module, adapter: TransformerAdapter, config: CacheConfig
    ) -> None:
        self.transformer = transformer
        self.adapter = adapter
        self.config = config
        blocks = adapter.blocks(transformer)
        self.blocks: list[torch.nn.Module] = [b for b, _ in blocks]
        self.ios: list[BlockIO] = [io for _, io in blocks]
        self.num_blocks = len(self.blocks)
        config.check_blocks(self.num_blocks, type(transformer).__name__)

        self.Fn = config.Fn
        self.Bn = config.Bn
        self.mid_end = self.num_blocks - self.Bn  # middle blocks are [Fn, mid_end)
        self.has_middle = self.Fn < self.mid_end
        middle_ios = self.ios[self.Fn : self.mid_end]
        self.middle_carries_encoder = bool(middle_ios) and all(io.carries_encoder for io in middle_ios)

        cfg = config.cfg.do_separate_classifier_free_guidance
        self.separate_cfg = adapter.separate_cfg if cfg is None else cfg
        self.explicit_separate_cfg = cfg

        self.db = config.dbcache
        self.prune = config.dbprune
        threshold = (self.db or self.prune).residual_diff_threshold if (self.db or self.prune) else 0.0
        self.caching_enabled = threshold > 0 and (self.has_middle or self.prune is not None)
        ts = config.taylorseer
        self.hidden_mode = ts.taylorseer_cache_type if ts.enable_taylorseer else TaylorSeerCacheType.RESIDUAL
        self.encoder_mode = (
            ts.taylorseer_cache_type if ts.enable_encoder_taylorseer else TaylorSeerCacheType.RESIDUAL
        )
        self._orders = (
            ts.n_derivatives if ts.enable_taylorseer else 0,
            ts.n_derivatives if ts.enable_encoder_taylorseer else 0,
        )
        if self.prune is not None:
            never = set(self.prune.non_prune_blocks_ids)
            self.prunable = [
                self.prune.Fn_compute_blocks <= i < self.mid_end and i not in never
                for i in range(self.num_blocks)
            ]

        self.call = self._new_call()
        self.active = False  # True between install() and uninstall()
        self.pipeline_managed = False
        self._pass: _Pass | None = None
        self._context: tuple[str, dict[str, Any]] | None = None
        self._prev_timestep: float | None = None
        self._warned: set[str] = set()
        self._patches: list[_Patch] = []
        if self.db is not None and not self.has_middle and threshold > 0:
            self._warn_once(
                "no-middle",
                f"Fn_compute_blocks + Bn_compute_blocks = {self.num_blocks} covers every block of "
                f"{type(transformer).__name__}: there is nothing left to cache",
            )

    # ------------------------------------------------------------------------------------------------------
    # Installation
    # ------------------------------------------------------------------------------------------------------

    def install(self) -> None:
        """Wrap the transformer's forward, cache_context and every block's forward (instance attributes)."""
        try:
            orig_forward = self.transformer.forward
            self._set(self.transformer, "forward", functools.partial(self._transformer_forward, orig_forward))
            orig_context = getattr(self.transformer, "cache_context", None)
            if callable(orig_context):
                self._set(
                    self.transformer, "cache_context", functools.partial(self._cache_context, orig_context)
                )
            for idx, block in enumerate(self.blocks):
                self._set(block, "forward", functools.partial(self._run_block, idx, block.forward))
            object.__setattr__(self.transformer, RUNNER_ATTR, self)
            self.active = True
        except BaseException:
            self.uninstall()
            raise

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
        return CallState(n_derivatives_hidden=self._orders[0], n_derivatives_encoder=self._orders[1])

    def begin_pipeline_call(self) -> None:
        """A pipeline call starts: fresh state for every branch."""
        self.pipeline_managed = True
        self.call = self._new_call()
        self._pass = None

    def end_pipeline_call(self) -> None:
        """A pipeline call ended (normally or not). Stats stay readable until the next call."""
        self._pass = None
        self._context = None
        call = self.call
        if self.separate_cfg and call.unmarked_calls % 2 == 1:
            self._warn_once(
                "odd-cfg",
                f"do_separate_classifier_free_guidance=True but the pipeline made {call.unmarked_calls} "
                "transformer calls (odd), so it does not run CFG as two calls per step: cond/uncond buffers "
                "were mixed. Pass do_separate_classifier_free_guidance=False for this pipeline.",
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
            return orig(*args, **kwargs)
        self._pass = self._open_pass(args, kwargs)
        ok = False
        try:
            out = orig(*args, **kwargs)
            ok = True
            return out
        finally:
            p, self._pass = self._pass, None
            self._close_pass(p, ok)

    def _open_pass(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Pass:
        name, ctx_kwargs = self._context if self._context is not None else (None, {})
        if not self.pipeline_managed:
            self._detect_new_run(args, kwargs)
        call = self.call
        if name is not None:
            branch_name = str(name)
            if branch_name == "uncond" and self.explicit_separate_cfg is False:
                self._warn_once(
                    "marks-win",
                    "do_separate_classifier_free_guidance=False, but the pipeline marks cond/uncond calls "
                    "itself; its marks win and each branch keeps its own cache",
                )
        elif self.separate_cfg:
            first_of_step = call.unmarked_calls % 2 == 0
            uncond = first_of_step == self.config.cfg.cfg_compute_first
            branch_name = "uncond" if uncond else "cond"
            call.unmarked_calls += 1
            self._check_cfg_pair(call, first_of_step, args, kwargs)
        else:
            branch_name = "cond"
        branch = call.branch(branch_name)
        step = ctx_kwargs.get("step_index")
        if isinstance(step, bool) or not isinstance(step, int):
            step = branch.calls
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
        """Bare transformer (no pipeline wrapper): a timestep above the previous one starts a new run.

        Denoising timesteps decrease within a run (both CFG calls of a step share one), so an increase means
        the caller started over. Costs one small host read per call; pipelines don't need it.
        """
        t = self.adapter.timestep_arg.get(args, kwargs)
        if t is None:
            return
        value = float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)
        if self._prev_timestep is not None and value > self._prev_timestep:
            self.call = self._new_call()
        self._prev_timestep = value

    def _close_pass(self, p: _Pass | None, ok: bool) -> None:
        if p is None:
            return
        branch = p.branch
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

    def _run_block(self, idx: int, forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        p = self._pass
        if p is None:  # a block called outside a transformer call
            return forward(*args, **kwargs)
        if self.prune is not None:
            return self._prune_block(p, idx, forward, args, kwargs)
        return self._dbcache_block(p, idx, forward, args, kwargs)

    # ------------------------------------------------------------------------------------------------------
    # DBCache / FBCache
    # ------------------------------------------------------------------------------------------------------

    def _dbcache_block(
        self, p: _Pass, idx: int, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        io = self.ios[idx]
        if idx < self.Fn:
            if idx == 0:
                p.first_hidden_in = io.hidden_arg.get(args, kwargs)
            out = forward(*args, **kwargs)
            if idx == self.Fn - 1:
                hidden_out, _ = io.outputs(out)
                self._decide(p, hidden_out - p.first_hidden_in)  # (B, N, D) residual of the first Fn blocks
            return out

        if idx < self.mid_end:
            hidden, encoder = io.inputs(args, kwargs)
            if p.cached:
                if idx == self.Fn:
                    return io.make_output(*self._cached_middle(p, hidden, encoder))
                return io.make_output(hidden, encoder)  # skipped: the cached residual is already added
            if not self.caching_enabled:
                return forward(*args, **kwargs)
            if idx == self.Fn:
                p.mid_hidden_in, p.mid_encoder_in = hidden, encoder
            else:
                self._track_side_inputs(p, hidden, encoder)
            out = forward(*args, **kwargs)
            p.last_hidden_out, p.last_encoder_out = io.outputs(out)
            if idx == self.mid_end - 1:
                self._store_middle(p)
            return out

        return self._bn_block(p, idx, forward, args, kwargs)

    def _decide(self, p: _Pass, fn_residual: torch.Tensor) -> None:
        """Cache this step or not. The one host sync of a DBCache step is here."""
        branch, step, db = p.branch, p.step, self.db
        shared = not self.config.cfg.cfg_diff_compute_separate
        decided = self.call.step_decisions.get(step) if shared else None
        if decided is not None:  # another branch already decided this step for both
            cached = decided and self._middle_ready(branch, fn_residual)
        else:
            diff = None
            if same_layout(branch.fn_residual, fn_residual):
                diff = float(relative_l1(fn_residual, branch.fn_residual).item())  # host sync
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
                and self._middle_ready(branch, fn_residual)
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

    def _middle_ready(self, branch: BranchState, like: torch.Tensor) -> bool:
        stored = branch.hidden_store.factors[0] if branch.hidden_store.factors else None
        if stored is None:
            return False
        if not same_layout(stored, like):
            self._warn_once(
                "mid-layout", "cached residual no longer matches the hidden states; computing fully"
            )
            return False
        return True

    def _cached_middle(
        self, p: _Pass, hidden: torch.Tensor, encoder: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        branch = p.branch
        forecast = branch.hidden_store.predict(p.step)
        hidden = forecast if self.hidden_mode is TaylorSeerCacheType.HIDDEN_STATES else hidden + forecast
        if self.middle_carries_encoder and encoder is not None and branch.encoder_store.factors:
            forecast_e = branch.encoder_store.predict(p.step)
            if same_layout(forecast_e, encoder):
                encoder = (
                    forecast_e
                    if self.encoder_mode is TaylorSeerCacheType.HIDDEN_STATES
                    else encoder + forecast_e
                )
            else:
                self._warn_once(
                    "enc-layout", "encoder states changed shape; their cached residual is not used"
                )
        return hidden, encoder

    @staticmethod
    def _track_side_inputs(p: _Pass, hidden: torch.Tensor, encoder: torch.Tensor | None) -> None:
        """Record what the model added between two middle blocks (the input is not the last output)."""
        if hidden is not p.last_hidden_out:
            delta = hidden - p.last_hidden_out
            p.side_hidden = delta if p.side_hidden is None else p.side_hidden + delta
        if encoder is not None and p.last_encoder_out is not None and encoder is not p.last_encoder_out:
            delta = encoder - p.last_encoder_out
            p.side_encoder = delta if p.side_encoder is None else p.side_encoder + delta

    def _store_middle(self, p: _Pass) -> None:
        """End of the middle on a computed step: store the blocks' own residual (or output) for later."""
        branch = p.branch
        out_h = p.last_hidden_out if p.side_hidden is None else p.last_hidden_out - p.side_hidden
        value_h = out_h if self.hidden_mode is TaylorSeerCacheType.HIDDEN_STATES else out_h - p.mid_hidden_in
        branch.hidden_store.update(value_h, p.step)
        if self.middle_carries_encoder and p.mid_encoder_in is not None:
            out_e = p.last_encoder_out if p.side_encoder is None else p.last_encoder_out - p.side_encoder
            value_e = (
                out_e if self.encoder_mode is TaylorSeerCacheType.HIDDEN_STATES else out_e - p.mid_encoder_in
            )
            branch.encoder_store.update(value_e, p.step)

    def _bn_block(
        self, p: _Pass, idx: int, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        ids = self.db.Bn_compute_blocks_ids
        if ids is None or (idx - self.mid_end) in ids or not self.caching_enabled:
            return forward(*args, **kwargs)
        io = self.ios[idx]
        hidden, encoder = io.inputs(args, kwargs)
        stored = p.branch.blocks.get(idx)
        if p.cached and stored is not None and same_layout(stored.hidden_in, hidden):
            diff = float(relative_l1(hidden, stored.hidden_in).item())
            if is_similar(diff, self.db.non_compute_blocks_diff_threshold):
                return io.make_output(*self._reuse_block(io, stored, hidden, encoder))
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
            if same_layout(stored.hidden_in, hidden):
                diff = float(
                    relative_l1(hidden, stored.hidden_in).item()
                )  # host sync, one per prunable block
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
                    return io.make_output(*self._reuse_block(io, stored, hidden, encoder))
            else:
                self._warn_once("prune-layout", "block input changed shape between steps; computing fully")
        out = forward(*args, **kwargs)
        p.computed += 1
        if self.caching_enabled and (
            stored is None
            or not same_layout(stored.hidden_in, hidden)
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
            hidden_in=hidden, hidden_residual=hidden_out - hidden, encoder_residual=encoder_residual
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
        if key not in self._warned:
            self._warned.add(key)
            warn_at_caller(f"cache-dit: {message}", RuntimeWarning)  # points at the user's line


def get_runner(transformer: Any) -> CacheRunner | None:
    runner = getattr(transformer, "__dict__", {}).get(RUNNER_ATTR)
    return runner if isinstance(runner, CacheRunner) else None


__all__ = ["CacheRunner", "CacheType", "get_runner"]
