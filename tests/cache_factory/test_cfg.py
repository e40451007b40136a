"""CFG-aware caching: branches kept apart, shared decisions, pipeline marks, parity fallback, mismatches."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe
from cache_dit.testing.cases import CASES

BASE = {"cache_type": "db", "Fn_compute_blocks": 1, "Bn_compute_blocks": 1}


WAN = CASES["wan"]


@pytest.fixture(params=["wan", "flux"], ids=["wan", "flux_true_cfg"])
def cfg_case(request):
    """Wan (CFG always two calls) and FLUX with true_cfg_scale=2 + negative embeds."""
    return CASES[request.param]


def run_cfg(case, pipe, **kwargs):
    return case.run(pipe, cfg=True, **kwargs)


def recorded_step1_diffs(case):
    """cond/uncond diffs of step 1 in a 2-step call: step 1 is then the only step that may cache."""
    pipe = case.build()
    apply_cache_on_pipe(pipe, **BASE, residual_diff_threshold=0.0, warmup_steps=0)
    run_cfg(case, pipe, steps=2)
    stats = cache_dit.summary(pipe)
    return stats.residual_diffs[1], stats.cfg_residual_diffs[1]


def test_branches_decide_separately(cfg_case):
    cond, uncond = recorded_step1_diffs(cfg_case)
    assert cond != uncond
    threshold = (cond + uncond) / 2  # between the two: exactly one branch may cache step 1
    pipe = cfg_case.build()
    apply_cache_on_pipe(pipe, **BASE, residual_diff_threshold=threshold, warmup_steps=1)
    run_cfg(cfg_case, pipe, steps=2)
    stats = cache_dit.summary(pipe)
    assert stats.num_steps == 2 and stats.cfg_num_steps == 2  # both calls of a step share its index
    assert stats.residual_diffs[1] == cond and stats.cfg_residual_diffs[1] == uncond
    assert (stats.cached_steps, stats.cfg_cached_steps) == (([1], []) if cond < uncond else ([], [1]))


def test_shared_decision_caches_both_or_neither(cfg_case):
    pipe = cfg_case.build()
    apply_cache_on_pipe(
        pipe, **BASE, residual_diff_threshold=0.3, warmup_steps=1, cfg_diff_compute_separate=False
    )
    run_cfg(cfg_case, pipe)
    stats = cache_dit.summary(pipe)
    assert stats.cached_steps and stats.cached_steps == stats.cfg_cached_steps
    assert stats.cfg_residual_diffs == {}  # the second branch follows, it measures nothing


def test_threshold_zero_with_cfg_is_bit_exact(cfg_case):
    pipe = cfg_case.build()
    ref = run_cfg(cfg_case, pipe)
    apply_cache_on_pipe(pipe, **BASE, residual_diff_threshold=0.0, warmup_steps=0)
    assert torch.equal(run_cfg(cfg_case, pipe), ref)


def test_flux_defaults_to_one_branch_without_true_cfg():
    case = CASES["flux"]
    pipe = case.build()
    apply_cache_on_pipe(pipe, **BASE, residual_diff_threshold=100.0, warmup_steps=2)
    case.run(pipe)
    stats = cache_dit.summary(pipe)
    assert stats.num_steps == 8 and stats.cfg_num_steps == 0


def _without_marks(pipe):
    """Simulate a pipeline that does not mark its CFG calls (older diffusers, custom loops).

    Called after `apply_cache_on_pipe`, so it also hides the marks from the cache's own wrapper.
    """
    pipe.transformer.cache_context = lambda name, **kwargs: contextlib.nullcontext()
    return pipe


@pytest.mark.parametrize("compute_first", [False, True])
def test_unmarked_calls_split_by_parity(compute_first):
    case = WAN
    cond, uncond = recorded_step1_diffs(case)
    pipe = case.build()
    apply_cache_on_pipe(
        pipe,
        **BASE,
        residual_diff_threshold=(cond + uncond) / 2,
        warmup_steps=1,
        cfg_compute_first=compute_first,
    )
    _without_marks(pipe)
    run_cfg(case, pipe, steps=2)
    stats = cache_dit.summary(pipe)
    expected = ([1], []) if cond < uncond else ([], [1])
    if compute_first:  # the first call of each step (Wan's cond call) is now taken for the uncond one
        expected = expected[::-1]
    assert (stats.cached_steps, stats.cfg_cached_steps) == expected


@pytest.mark.parametrize("steps", [5, 4])
def test_unmarked_single_calls_are_told_from_cfg_pairs_by_timestep(steps):
    """Wan without CFG runs one call per step: each call has a new timestep, so all are one branch."""
    case = WAN
    marked = case.build()
    apply_cache_on_pipe(marked, **BASE, residual_diff_threshold=100.0, warmup_steps=1)
    ref = case.run(marked, steps=steps, cfg=False)
    pipe = case.build()
    apply_cache_on_pipe(pipe, **BASE, residual_diff_threshold=100.0, warmup_steps=1)
    _without_marks(pipe)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = case.run(pipe, steps=steps, cfg=False)
    stats = cache_dit.summary(pipe)
    assert (stats.num_steps, stats.cfg_num_steps) == (steps, 0)
    assert stats.cached_steps == cache_dit.summary(marked).cached_steps == list(range(1, steps))
    assert torch.equal(out, ref)


class _CustomLoop:
    """A pipeline-like object with its own loop and no branch marks: CFG pairs for the first 3 steps only
    (CFG truncation), and a third pass at step 1 (as skip-layer guidance does)."""

    calls_per_step = (2, 3, 2, 1, 1, 1)

    def __init__(self):
        from cache_dit.testing.toy import toy_dit

        self.transformer = toy_dit()

    @torch.no_grad()
    def __call__(self):
        g = torch.Generator().manual_seed(0)
        x, text = torch.randn(1, 16, 8, generator=g), torch.randn(1, 5, 12, generator=g)
        for step, n in enumerate(self.calls_per_step):
            t = torch.tensor([1000.0 - 150 * step])
            outs = [self.transformer(x + 0.1 * k, text, t) for k in range(n)]
            x = x - 0.15 * outs[0]
        return x


def test_unmarked_truncated_cfg_and_a_third_pass_keep_their_branches():
    toy = dict(
        blocks=[
            dict(path="stages.dual", hidden="hidden", encoder="context", returns=("hidden", "encoder")),
            dict(path="stages.joint", hidden="tokens", encoder=None, returns="hidden"),
        ]
    )
    pipe = _CustomLoop()
    apply_cache_on_pipe(pipe, **BASE, residual_diff_threshold=100.0, warmup_steps=1, adapter=toy)
    pipe()
    runner_call = cache_dit.cache_factory.runner.get_runner(pipe.transformer).call
    assert {name: b.calls for name, b in runner_call.branches.items()} == {"cond": 6, "uncond": 3, "call2": 1}
    stats = cache_dit.summary(pipe)
    assert stats.cached_steps == [1, 2, 3, 4, 5]
    assert stats.cfg_cached_steps == [1, 2]


def test_matched_cfg_does_not_warn():
    case = WAN
    pipe = case.build()
    apply_cache_on_pipe(pipe, **BASE, residual_diff_threshold=0.3, warmup_steps=1)
    _without_marks(pipe)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        run_cfg(case, pipe, steps=5)
