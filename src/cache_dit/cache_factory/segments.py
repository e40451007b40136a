"""The DBCache block executor: carries out the gate's decision block by block, and keeps the residual store.

Within one pass, with L blocks in execution order (FLUX: dual then single blocks)::

    blocks [0, Fn)          always run; after block Fn-1 the gate decides (one host sync)
    blocks [Fn, L-Bn)       "middle": run, or on a cached step skipped; the first block of each middle segment
                            then returns input + its forecast residual and the others return their inputs
    blocks [L-Bn, L)        always run (or, with Bn_compute_blocks_ids, may reuse their own residual)

The stored middle residual of a segment is the sum of its blocks' own residuals: what the model adds between
blocks (ControlNet residuals) is subtracted out, since the model adds this step's values again on a cached
step. A model that adds them *in place* into a block's output (Chroma, Bria) is seen by the tensor's version
counter; from then on the executor keeps a copy of each middle output on computed steps so the addition can
still be told apart (the segment in which it was first seen is not stored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .adapters import BlockIO
from .config import TaylorSeerCacheType
from .decision import is_similar
from .state import BlockBuffers, BranchState, Pass, layout, same_layout

if TYPE_CHECKING:
    from .runner import CacheRunner


def _version(t: Any) -> int:
    """A tensor's version counter (bumped by every in-place change); -1 where there is none (not a tensor, or
    an inference-mode tensor, which keeps no counter: in-place additions then go unseen)."""
    if not isinstance(t, torch.Tensor) or t.is_inference():
        return -1
    return t._version


class SegmentExecutor:
    """Runs the first Fn blocks, the middle segments (computed and stored, or served) and the last Bn."""

    def __init__(self, runner: CacheRunner) -> None:
        self.runner = runner
        self.copy_outputs = False  # the model adds side inputs in place into block outputs (see module doc)

    def block(
        self, p: Pass, idx: int, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        r = self.runner
        io = r.ios[idx]
        if idx == 0 and r.Fn == 0:  # a fixed schedule with no first blocks: decide before block 0
            p.encoder_layout = layout(io.inputs(args, kwargs)[1])
            r.gate.decide(p, None)
        if idx < r.Fn:
            hidden = io.hidden_arg.get(args, kwargs)
            if idx == 0 or not same_layout(hidden, p.first_hidden_in):
                p.first_hidden_in = hidden
            out = forward(*args, **kwargs)
            if idx == r.Fn - 1:
                hidden_out, encoder_out = io.outputs(out)
                p.encoder_layout = layout(encoder_out if io.carries_encoder else io.inputs(args, kwargs)[1])
                r.gate.decide(p, hidden_out - p.first_hidden_in)  # (B, N, D) residual of the first Fn blocks
            return out
        if idx < r.mid_end:
            if not r.caching_enabled:
                return forward(*args, **kwargs)
            return self._middle_block(p, idx, io, forward, args, kwargs)
        return self._bn_block(p, idx, forward, args, kwargs)

    def _middle_block(
        self,
        p: Pass,
        idx: int,
        io: BlockIO,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """A middle block: opens a segment at its start, then runs, or returns what the cache gives."""
        r = self.runner
        hidden, encoder = io.inputs(args, kwargs)
        reshaped = (
            p.seg_start is not None
            and not p.seg_from_cache
            and p.last_hidden_out is not None
            and hidden.shape != p.last_hidden_out.shape
        )
        if idx in r.segment_starts or reshaped:
            self._close_segment(p)
            r.segment_starts.add(idx)
            p.seg_start = idx
            p.seg_from_cache = p.cached and self._segment_fits(p.branch, idx, hidden, encoder)
            if p.cached and not p.seg_from_cache and idx == r.Fn and not p.replay:
                self._uncache(p)  # nothing skipped yet: the whole step is computed (and stored) instead
            if p.seg_from_cache:
                return self.output(idx, io, *self._cached_segment(p, idx, hidden, encoder))
            p.seg_store = not p.cached  # a segment computed on a cached step is not stored
            p.seg_carries_encoder = True
            p.seg_hidden_in, p.seg_encoder_in = hidden, encoder
            p.side_hidden = p.side_encoder = None
        elif p.seg_from_cache:
            return self.output(idx, io, hidden, encoder)  # skipped: the segment's residual is already added
        else:
            self._track_side_inputs(p, hidden, encoder)
        out = forward(*args, **kwargs)
        p.last_hidden_out, p.last_encoder_out = io.outputs(out)
        p.last_out_versions = (_version(p.last_hidden_out), _version(p.last_encoder_out))
        if self.copy_outputs and p.seg_store:
            p.last_hidden_copy = p.last_hidden_out.clone()
            p.last_encoder_copy = p.last_encoder_out.clone() if p.last_encoder_out is not None else None
        p.seg_carries_encoder = p.seg_carries_encoder and io.carries_encoder
        if idx == r.mid_end - 1:
            self._close_segment(p)
        return out

    def _changed_in_place(self, p: Pass) -> bool:
        """Did the model change the last middle output in place since the block returned it? The first time it
        is seen, the executor starts keeping copies and the current segment is not stored."""
        changed = (_version(p.last_hidden_out), _version(p.last_encoder_out)) != p.last_out_versions
        if changed and not self.copy_outputs:
            self.copy_outputs = True
            p.seg_store = False
            self.runner.warn_once(
                "in-place-side",
                f"{type(self.runner.transformer).__name__} changes block outputs in place between blocks (e.g. "
                "ControlNet residuals); cache-dit now keeps a copy of each middle block's output on computed "
                "steps so a cached step never adds them twice",
            )
        return changed

    def _uncache(self, p: Pass) -> None:
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
            self.runner.warn_once(
                "segment-layout",
                f"the input of {self.runner.block_names[start]} changed shape/dtype/device since its residual "
                "was stored; computing that segment of the cached step",
            )
        return fits

    def _cached_segment(
        self, p: Pass, start: int, hidden: torch.Tensor, encoder: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r = self.runner
        store = p.branch.segments[start]
        forecast = store.hidden.predict(p.step)
        if r.hidden_mode is TaylorSeerCacheType.HIDDEN_STATES:  # the model may change it in place: a copy
            hidden = forecast.clone() if forecast is store.hidden.factors[0] else forecast
        else:
            hidden = hidden + forecast
        if encoder is not None and store.encoder.factors:
            forecast_e = store.encoder.predict(p.step)
            if r.encoder_mode is TaylorSeerCacheType.HIDDEN_STATES:
                encoder = forecast_e.clone() if forecast_e is store.encoder.factors[0] else forecast_e
            else:
                encoder = encoder + forecast_e
        return hidden, encoder

    def _track_side_inputs(self, p: Pass, hidden: torch.Tensor, encoder: torch.Tensor | None) -> None:
        """Record what the model added between two blocks of a segment (the input is not the last output)."""
        in_place = self._changed_in_place(p)
        if self.copy_outputs and p.last_hidden_copy is not None:
            last_h, last_e = p.last_hidden_copy, p.last_encoder_copy
        else:
            last_h, last_e = p.last_hidden_out, p.last_encoder_out
        if hidden is not last_h or in_place:
            delta = hidden - last_h
            p.side_hidden = delta if p.side_hidden is None else p.side_hidden + delta
        if encoder is not None and last_e is not None and (encoder is not last_e or in_place):
            delta = encoder - last_e
            p.side_encoder = delta if p.side_encoder is None else p.side_encoder + delta

    def _close_segment(self, p: Pass) -> None:
        """End of a segment; on a computed step store its blocks' own residual (or output) for later."""
        r = self.runner
        start, p.seg_start = p.seg_start, None
        if start is None or p.seg_from_cache:
            return
        if (
            self._changed_in_place(p) and p.last_hidden_copy is not None
        ):  # the last output before the addition
            p.last_hidden_out, p.last_encoder_out = p.last_hidden_copy, p.last_encoder_copy
        p.last_hidden_copy = p.last_encoder_copy = None
        if not p.seg_store:
            return
        store = p.branch.segment(start)
        out_h = p.last_hidden_out if p.side_hidden is None else p.last_hidden_out - p.side_hidden
        value_h = out_h if r.hidden_mode is TaylorSeerCacheType.HIDDEN_STATES else out_h - p.seg_hidden_in
        store.hidden.update(value_h, p.step)
        if r.recorder is not None:
            r.recorder(p.branch.name, p.step, start, "hidden", value_h)
        if start == r.Fn:  # what the next decision compares (the encoder stream after block Fn-1)
            p.branch.mid_encoder_layout = p.encoder_layout
        if p.seg_carries_encoder and p.seg_encoder_in is not None and p.last_encoder_out is not None:
            out_e = p.last_encoder_out if p.side_encoder is None else p.last_encoder_out - p.side_encoder
            value_e = (
                out_e if r.encoder_mode is TaylorSeerCacheType.HIDDEN_STATES else out_e - p.seg_encoder_in
            )
            store.encoder.update(value_e, p.step)
            if r.recorder is not None:
                r.recorder(p.branch.name, p.step, start, "encoder", value_e)

    def output(self, idx: int, io: BlockIO, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        """What block `idx` returns when the cache stands in for it (None where the block returns None)."""
        return io.make_output(hidden, None if idx in self.runner.none_encoder_out else encoder)

    def _bn_block(
        self, p: Pass, idx: int, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        r = self.runner
        ids = r.db.Bn_compute_blocks_ids
        if ids is None or (idx - r.mid_end) in ids or not r.caching_enabled:
            return forward(*args, **kwargs)
        io = r.ios[idx]
        hidden, encoder = io.inputs(args, kwargs)
        stored = p.branch.blocks.get(idx)
        if p.cached and stored is not None and stored.matches(hidden, encoder):
            diff = r.sync.relative_l1(hidden, stored.hidden_in)
            if is_similar(diff, r.db.non_compute_blocks_diff_threshold):
                return self.output(idx, io, *reuse_block(io, stored, hidden, encoder))
        out = forward(*args, **kwargs)
        p.branch.blocks[idx] = block_buffers(io, hidden, encoder, out)
        return out


def block_buffers(io: BlockIO, hidden: torch.Tensor, encoder: torch.Tensor | None, out: Any) -> BlockBuffers:
    """One block's input and own residuals, for Bn reuse and DBPrune."""
    hidden_out, encoder_out = io.outputs(out)
    encoder_residual = encoder_out - encoder if io.carries_encoder and encoder is not None else None
    return BlockBuffers(
        hidden_in=hidden,
        hidden_residual=hidden_out - hidden,
        encoder_residual=encoder_residual,
        encoder_in_layout=layout(encoder),
    )


def reuse_block(
    io: BlockIO, stored: BlockBuffers, hidden: torch.Tensor, encoder: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A block's output from its stored residuals (the encoder's only where it still fits)."""
    hidden = hidden + stored.hidden_residual
    if io.carries_encoder and encoder is not None and same_layout(stored.encoder_residual, encoder):
        encoder = encoder + stored.encoder_residual
    return hidden, encoder
