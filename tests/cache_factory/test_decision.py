"""Pure decision math on hand-built tensors."""

from __future__ import annotations

import math

import pytest
import torch

from cache_dit.cache_factory.decision import dynamic_prune_threshold, is_similar, relative_l1, step_can_cache


def test_relative_l1_closed_form():
    prev = torch.tensor([1.0, -2.0, 3.0, -4.0])  # mean|prev| = 2.5
    cur = prev + torch.tensor([0.5, -0.5, 0.0, 1.0])  # mean|cur - prev| = 0.5
    assert relative_l1(cur, prev).item() == pytest.approx(0.2)
    assert relative_l1(prev, prev).item() == 0.0
    assert relative_l1(torch.zeros(3), torch.zeros(3)).item() == 0.0
    assert math.isinf(relative_l1(torch.ones(3), torch.zeros(3)).item())
    # low-precision inputs are compared in float32
    assert relative_l1(cur.half(), prev.half()).dtype == torch.float32


def test_threshold_test_is_strict_and_zero_disables():
    assert is_similar(0.05, 0.1)
    assert not is_similar(0.1, 0.1)
    assert not is_similar(0.0, 0.0)


@pytest.mark.parametrize(
    "step,cached,continuous,expected",
    [(1, 0, 0, False), (2, 0, 0, True), (5, 3, 0, False), (5, 2, 0, True), (5, 2, 2, False)],
)
def test_step_budget(step, cached, continuous, expected):
    assert step_can_cache(step, 2, cached, 3, continuous, 2) is expected


def test_step_budget_minus_one_is_unbounded():
    assert step_can_cache(100, 0, 10**6, -1, 10**6, -1)


def test_dynamic_prune_threshold_on_crafted_diffs():
    base, ratio, cap = 0.08, 1.25, 0.16
    assert dynamic_prune_threshold(base, [], ratio, cap) == base  # nothing decided yet
    assert dynamic_prune_threshold(base, [0.10], ratio, cap) == pytest.approx(0.125)  # relaxed
    assert dynamic_prune_threshold(base, [0.02, 0.04], ratio, cap) == base  # relaxed 0.0375 < base
    assert dynamic_prune_threshold(base, [0.12, 0.14], ratio, cap) == base  # relaxed 0.1625 >= cap
    assert dynamic_prune_threshold(base, [0.05, 0.07, 0.09], ratio, cap) == pytest.approx(0.0875)
