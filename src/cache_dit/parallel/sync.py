"""One decision for all ranks: the relative L1 of a decision, reduced over the context-parallel group.

Under context parallelism every rank holds a slice of the sequence, so a diff computed on the local slice
differs from rank to rank; ranks that take different branches (one skips the middle blocks, the other runs
them and waits in their all-to-all) hang. Here each rank sums `|current - previous|` and `|previous|` over its
slice, one all-reduce of those two numbers adds them over the group, and the ratio is the relative L1 of the
whole sequence: every rank gets the same float and takes the same branch, and it equals what one process
would compute on the unsharded tensors up to float summation order.

Cost per decision point: one all-reduce of a 2-element float32 tensor (latency-bound), next to the host sync
(`.item()`) the decision already makes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ..cache_factory.decision import relative_l1


def relative_l1_stats(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """`[sum|current - previous|, sum|previous|]` as a float32 tensor of shape (2,), on the inputs' device."""
    current = current.float()
    previous = previous.float()
    return torch.stack(((current - previous).abs().sum(), previous.abs().sum()))


def ratio_from_stats(stats: torch.Tensor) -> float:
    """The relative L1 from reduced `[num, den]`, with `relative_l1`'s conventions: 0/0 -> 0, x/0 -> inf."""
    num, den = (float(v) for v in stats.tolist())  # host sync
    if den > 0:
        return num / den
    return float("inf") if num > 0 else 0.0


def synced_relative_l1(current: torch.Tensor, previous: torch.Tensor, group: Any = None) -> float:
    """The relative L1 every rank of `group` agrees on (a float; this is the decision's host sync).

    `group` is a `torch.distributed` process group, or None: no collective, and the value is exactly
    `relative_l1(current, previous).item()` (the single-process path is unchanged, bit for bit).
    """
    if group is None:
        return float(relative_l1(current, previous).item())  # host sync
    stats = relative_l1_stats(current, previous)  # (2,)
    dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=group)
    return ratio_from_stats(stats)


__all__ = ["ratio_from_stats", "relative_l1_stats", "synced_relative_l1"]
