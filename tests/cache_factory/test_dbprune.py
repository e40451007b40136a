"""DBPrune: per-block pruning with residual caching, on every supported model."""

from __future__ import annotations

import pytest
import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe
from cache_dit.testing.cases import count_block_calls

FORCE = 100.0


def prune_options(**overrides):
    options = {
        "cache_type": "dbprune",
        "Fn_compute_blocks": 1,
        "Bn_compute_blocks": 1,
        "residual_diff_threshold": FORCE,
        "warmup_steps": 1,
    }
    return {**options, **overrides}


def test_first_last_and_listed_blocks_are_never_pruned(case):
    pipe = case.build()
    counts, _ = count_block_calls(pipe.transformer)
    apply_cache_on_pipe(pipe, **prune_options(non_prune_blocks_ids=[3]))
    steps = 6
    case.run(pipe, steps=steps)
    calls = steps * (2 if case.separate_cfg else 1)
    branches = 2 if case.separate_cfg else 1
    # blocks 0 (Fn), 5 (Bn) and 3 (listed) run every call; 1, 2, 4 only once per branch (step 0), then pruned
    assert counts == {0: calls, 1: branches, 2: branches, 3: calls, 4: branches, 5: calls}
    stats = cache_dit.summary(pipe)
    assert stats.pruned_blocks == [0] + [3] * (steps - 1)
    assert stats.actual_blocks == [6] + [3] * (steps - 1)
    assert stats.pruned_steps == steps - 1
    assert stats.pruned_ratio == pytest.approx(100 * 3 * (steps - 1) / (6 * steps))
    if case.separate_cfg:
        assert stats.cfg_pruned_blocks == stats.pruned_blocks and stats.cfg_pruned_steps == steps - 1


@pytest.mark.parametrize("max_pruned", [0, 2])
def test_max_pruned_steps_bounds_exactly(case, max_pruned):
    pipe = case.build()
    apply_cache_on_pipe(pipe, **prune_options(max_pruned_steps=max_pruned))
    case.run(pipe, steps=6)
    stats = cache_dit.summary(pipe)
    assert stats.pruned_steps == max_pruned
    assert stats.pruned_blocks == [0] + [4] * max_pruned + [0] * (5 - max_pruned)
    if case.separate_cfg:
        assert stats.cfg_pruned_steps == max_pruned


def test_pruned_output_differs_but_stays_close(case):
    pipe = case.build()
    ref = case.run(pipe)
    apply_cache_on_pipe(pipe, **prune_options(residual_diff_threshold=0.3, warmup_steps=2))
    out = case.run(pipe)
    stats = cache_dit.summary(pipe)
    assert stats.pruned_steps > 0 and 0 < stats.pruned_ratio < 100
    assert not torch.equal(out, ref)
    assert (out - ref).abs().mean() < 0.1


@pytest.mark.parametrize("steps,last_refresh", [(7, 6), (6, 3)])
def test_residual_cache_refreshes_on_interval_steps(case, steps, last_refresh):
    """No pruning (warmup beyond the run): each block stores its input only on steps with step % 3 == 0."""
    pipe = case.build()
    _, inputs = count_block_calls(pipe.transformer)
    apply_cache_on_pipe(pipe, **prune_options(warmup_steps=100, residual_cache_update_interval=3))
    case.run(pipe, steps=steps)
    runner = pipe.transformer._cache_dit_runner
    stored = next(iter(runner.call.branches.values())).blocks  # the first branch: "cond" or "cond_uncond"
    assert sorted(stored) == [1, 2, 3, 4]  # prunable blocks only
    calls_per_step = 2 if case.separate_cfg else 1
    for idx in (1, 4):
        seen = inputs[idx][::calls_per_step]  # the cond calls (Wan runs cond first)
        assert stored[idx].hidden_in is seen[last_refresh]


def test_dynamic_threshold_changes_decisions_and_prunes_at_least_as_much(case):
    # a threshold inside the model's range of block diffs (random tiny weights: it differs per model)
    threshold = case.prune_threshold
    pipe = case.build()
    apply_cache_on_pipe(pipe, **prune_options(residual_diff_threshold=threshold))
    case.run(pipe)
    base = cache_dit.summary(pipe)
    apply_cache_on_pipe(
        pipe, **prune_options(residual_diff_threshold=threshold, enable_dynamic_prune_threshold=True)
    )
    case.run(pipe)
    dynamic = cache_dit.summary(pipe)
    # the relaxed threshold is never below the base one: it changes decisions, and here prunes more
    assert dynamic.pruned_blocks != base.pruned_blocks
    assert sum(dynamic.pruned_blocks) > sum(base.pruned_blocks)
