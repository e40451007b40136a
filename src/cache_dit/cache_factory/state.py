"""Per-call, per-branch buffers and stats.

A `CallState` lives for one pipeline call (or one denoising run of a bare transformer); the runner replaces
it at the start of every call, so nothing leaks from one image to the next. Inside it each CFG branch
("cond", "uncond", or any name a pipeline marks) has its own `BranchState`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .taylorseer import TaylorSeer


def same_layout(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Two tensors can be combined without a silent broadcast or device/dtype change."""
    return (
        a is not None and b is not None and a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
    )


def layout(t: Any) -> tuple[Any, ...] | None:
    """(shape, dtype, device) of a tensor, None for anything else: compared to tell whether a stream changed."""
    return (t.shape, t.dtype, t.device) if isinstance(t, torch.Tensor) else None


@dataclass
class BlockBuffers:
    """One block's input and residuals from when it was last computed (Bn reuse, DBPrune)."""

    hidden_in: torch.Tensor  # (B, N, D)
    hidden_residual: torch.Tensor  # (B, N, D)
    encoder_residual: (
        torch.Tensor | None
    )  # (B, S, D), None where the block does not update the encoder stream
    encoder_in_layout: tuple[Any, ...] | None = None  # layout of the encoder states the block was given

    def matches(self, hidden: torch.Tensor, encoder: torch.Tensor | None) -> bool:
        """Both streams still have the layout these buffers were computed with (else compute fully)."""
        return same_layout(self.hidden_in, hidden) and layout(encoder) == self.encoder_in_layout


@dataclass
class SegmentStore:
    """One middle segment's forecast state: its hidden-stream and encoder-stream residual (or output)."""

    hidden: TaylorSeer
    encoder: TaylorSeer


@dataclass
class OutputStore:
    """taylorseer_cache_type='output': the forecast of the transformer's output, and what a cached step must
    match to be served from it (its tensor inputs' layouts and the `return_dict` the output was made with)."""

    seer: TaylorSeer
    template: Any = None  # the last computed output's structure (an empty tensor in its place; None: bare)
    inputs: tuple[Any, ...] | None = None  # the layouts of every tensor input of the call it was made from
    return_dict: Any = None


@dataclass
class BranchState:
    """Buffers and stats of one CFG branch within one call."""

    name: str
    n_derivatives_hidden: int = 0
    n_derivatives_encoder: int = 0
    mix_orders: bool = False
    calls: int = 0
    # DBCache
    cached_steps: list[int] = field(default_factory=list)
    residual_diffs: dict[int, float] = field(default_factory=dict)
    continuous_cached: int = 0
    fn_residual: torch.Tensor | None = None  # first Fn blocks' residual at the last fully computed step
    # middle segment start block id -> its residual (or output) at computed steps
    segments: dict[int, SegmentStore] = field(default_factory=dict)
    blocks: dict[int, BlockBuffers] = field(default_factory=dict)
    output: OutputStore | None = None  # taylorseer_cache_type='output'
    mid_encoder_layout: tuple[Any, ...] | None = (
        None  # encoder stream the stored middle residual was computed with
    )
    last_timestep: float | None = (
        None  # bare transformer: timestep of this branch's last call (new-run heuristic)
    )
    # DBPrune
    pruned_blocks: list[int] = field(default_factory=list)
    actual_blocks: list[int] = field(default_factory=list)
    pruned_steps: int = 0

    def segment(self, start: int) -> SegmentStore:
        if start not in self.segments:
            self.segments[start] = SegmentStore(
                TaylorSeer(self.n_derivatives_hidden, self.mix_orders),
                TaylorSeer(self.n_derivatives_encoder, self.mix_orders),
            )
        return self.segments[start]

    def drop_buffers(self) -> None:
        """Forget every stored tensor (after a failed transformer call): the next step computes fully."""
        self.fn_residual = None
        self.output = None
        self.segments.clear()
        self.blocks.clear()
        self.continuous_cached = 0


@dataclass
class CallState:
    """One pipeline call: its branches and the per-step decisions shared across branches."""

    n_derivatives_hidden: int = 0
    n_derivatives_encoder: int = 0
    mix_orders: bool = False
    branches: dict[str, BranchState] = field(default_factory=dict)
    unmarked_calls: int = 0  # transformer calls without a branch mark from the pipeline
    marked_calls: int = 0  # transformer calls the pipeline marked with a branch name
    pair_latents: torch.Tensor | None = None  # latents of the first unmarked call of the current step
    last_timestep: float | None = None  # timestep of the last unmarked call (calls of one step share it)
    step_call: int = 0  # index of the last unmarked call within its step
    # per source ("step_index" / "timestep"): the last value and which way this loop moves (+1 / -1)
    loop_progress: dict[str, tuple[float, int | None]] = field(default_factory=dict)
    step_decisions: dict[int, bool] = field(default_factory=dict)  # cfg_diff_compute_separate=False
    marked_num_steps: int | None = None  # the step count the pipeline's branch marks carry (Wan), if any
    warned: set[str] = field(default_factory=set)  # warning keys already given in this call

    def branch(self, name: str) -> BranchState:
        if name not in self.branches:
            self.branches[name] = BranchState(
                name, self.n_derivatives_hidden, self.n_derivatives_encoder, self.mix_orders
            )
        return self.branches[name]


@dataclass
class Pass:
    """Scratch of one transformer call: its branch and step, what was decided, and the segment being run."""

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
    # the tensor versions of those outputs when the block returned them (a model that adds side inputs in
    # place, e.g. Chroma's ControlNet residuals, bumps them), and copies of them once that was seen
    last_out_versions: tuple[int, int] = (-1, -1)
    last_hidden_copy: torch.Tensor | None = None
    last_encoder_copy: torch.Tensor | None = None
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
