"""Pure decision math: similarity of residuals, step- and block-level cache tests.

Nothing here records stats or touches state; the runner calls these and owns the bookkeeping. Functions on
tensors return tensors (no host sync); the runner performs the one `.item()` per decision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """`mean|current - previous| / mean|previous|` as a 0-dim float32 tensor.

    Both zero -> 0; `previous` zero and `current` not -> inf (never "similar").
    """
    current = current.float()
    previous = previous.float()
    num = (current - previous).abs().mean()
    den = previous.abs().mean()
    # (num / den) without dividing by zero: 0/0 -> 0, x/0 -> inf
    ratio = num / den.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(den > 0, ratio, torch.where(num > 0, torch.full_like(num, float("inf")), num))


def is_similar(diff: float, threshold: float) -> bool:
    """The threshold test: strictly below a positive threshold. A threshold <= 0 never passes."""
    return threshold > 0.0 and diff < threshold


def step_can_cache(
    step: int,
    warmup_steps: int,
    cached_so_far: int,
    max_cached_steps: int,
    continuous_cached: int,
    max_continuous_cached_steps: int,
) -> bool:
    """Whether the budget rules allow caching `step` at all (before looking at the diff)."""
    if step < warmup_steps:
        return False
    if 0 <= max_cached_steps <= cached_so_far:
        return False
    if 0 <= max_continuous_cached_steps <= continuous_cached:
        return False
    return True


def dynamic_prune_threshold(
    base_threshold: float,
    diffs_so_far: Sequence[float],
    relax_ratio: float,
    max_threshold: float,
) -> float:
    """DBPrune's per-step threshold.

    With the diffs of the blocks already decided in this step, `mean(diffs) * relax_ratio` when that is below
    `max_threshold` (and never below the base), else the base threshold. No diffs yet -> the base.
    """
    if not diffs_so_far:
        return base_threshold
    relaxed = sum(diffs_so_far) / len(diffs_so_far) * relax_ratio
    if relaxed < max_threshold:
        return max(relaxed, base_threshold)
    return base_threshold
