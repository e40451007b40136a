"""TaylorSeer math on hand-built tensors, and the hybrid DBCache + TaylorSeer on tiny FLUX and Wan."""

from __future__ import annotations

import pytest
import torch

import cache_dit
from cache_dit.cache_factory.taylorseer import TaylorSeer


def linear(s: float) -> torch.Tensor:
    return torch.tensor([1.0, -2.0]) + s * torch.tensor([0.5, 3.0])


@pytest.mark.parametrize("computed", [[0, 2, 4], [0, 3, 4], [1, 2, 7]])
def test_order_one_reproduces_linear_functions(computed):
    seer = TaylorSeer(n_derivatives=1)
    for s in computed:
        seer.update(linear(s), s)
    for target in (computed[-1] + 1, computed[-1] + 3):
        torch.testing.assert_close(seer.predict(target), linear(target), rtol=0, atol=1e-6)


def test_order_two_follows_the_divided_difference_formula():
    # F(s) = s^2 computed at s = 0, 1, 2: d0 = 4, d1 = (4 - 1) / 1 = 3, d2 = (3 - 1) / 1 = 2
    seer = TaylorSeer(n_derivatives=2)
    for s in (0, 1, 2):
        seer.update(torch.tensor([float(s * s)]), s)
    assert seer.order == 2
    assert seer.predict(3).item() == pytest.approx(4 + 3 * 1 + 2 * 1 / 2)  # 8
    assert seer.predict(4).item() == pytest.approx(4 + 3 * 2 + 2 * 4 / 2)  # 14
    # uneven spacing, s = 0, 2, 3: d1(2) = 2, d1(3) = 5, d2 = (5 - 2) / 1 = 3
    seer = TaylorSeer(n_derivatives=2)
    for s in (0, 2, 3):
        seer.update(torch.tensor([float(s * s)]), s)
    assert seer.predict(5).item() == pytest.approx(9 + 5 * 2 + 3 * 4 / 2)


def test_too_few_computed_steps_fall_back_to_lower_order():
    seer = TaylorSeer(n_derivatives=2)
    seer.update(torch.tensor([3.0]), 0)
    assert seer.order == 0 and seer.predict(5).item() == 3.0
    seer.update(torch.tensor([5.0]), 1)
    assert seer.order == 1 and seer.predict(3).item() == pytest.approx(5.0 + 2.0 * 2)


def test_zero_derivatives_is_plain_reuse():
    seer = TaylorSeer(n_derivatives=0)
    for s in range(3):
        seer.update(linear(s), s)
    assert seer.order == 0 and torch.equal(seer.predict(9), linear(2))


def test_shape_change_or_step_going_back_restarts():
    seer = TaylorSeer(n_derivatives=2)
    seer.update(torch.zeros(2), 0)
    seer.update(torch.ones(2), 1)
    seer.update(torch.ones(3), 2)
    assert seer.order == 0 and seer.predict(3).shape == (3,)
    seer.update(torch.ones(3) * 2, 3)
    seer.update(torch.ones(3), 1)  # a new run
    assert seer.order == 0 and seer.last_step == 1


def test_predict_before_update_raises():
    with pytest.raises(RuntimeError):
        TaylorSeer().predict(0)


def _record_transformer_calls(pipe, run):
    """Run the uncached pipeline and record every transformer call's kwargs and output."""
    calls = []
    transformer = pipe.transformer
    original = transformer.forward

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((kwargs, out[0].clone()))
        return out

    transformer.forward = recording
    try:
        run(pipe)
    finally:
        del transformer.forward
    return calls


@pytest.mark.parametrize("cache_type", ["residual", "hidden_states"])
@torch.no_grad()
def test_taylorseer_changes_cached_steps_only(case, cache_type):
    """Replay the same transformer inputs with plain DBCache and with TaylorSeer (per-step capture)."""
    pipe = case.build()
    calls = _record_transformer_calls(pipe, lambda p: case.run(p, steps=8))
    transformer = pipe.transformer
    options = {
        "cache_type": "db",
        "Fn_compute_blocks": 1,
        "Bn_compute_blocks": 1,
        "residual_diff_threshold": 100.0,
        "warmup_steps": 2,
        "max_continuous_cached_steps": 1,
    }
    outputs = {}
    for name, extra in {
        "plain": {},
        "taylor": {
            "enable_taylorseer": True,
            "enable_encoder_taylorseer": True,
            "taylorseer_cache_type": cache_type,
            "taylorseer_kwargs": {"n_derivatives": 1},
        },
    }.items():
        cache_dit.apply_cache_on_transformer(transformer, **options, **extra)
        outputs[name] = [transformer(**kwargs)[0] for kwargs, _ in calls]
        stats = cache_dit.summary(transformer)
        assert stats.cached_steps == [2, 4, 6]
    calls_per_step = 2 if case.separate_cfg else 1
    for i, (_, ref) in enumerate(calls):
        step = i // calls_per_step
        if step in (2, 4, 6):
            assert not torch.equal(outputs["taylor"][i], outputs["plain"][i]), (i, step)
        else:
            assert torch.equal(outputs["plain"][i], ref) and torch.equal(outputs["taylor"][i], ref), (i, step)


def test_mix_orders_weights_each_order_by_its_last_error():
    # F(s) = s^2. Updates at 0, 1: plain Taylor (d0 = 1, d1 = 1 after s = 1). At s = 2 (value 4) the order-0
    # forecast was 1 (error 3) and the order-1 forecast 2 (error 2): w = (1/3, 1/2) / (5/6) = (0.4, 0.6), so
    # c = (1, 0.6) and order 2 (not measured yet) gets 0. Factors after s = 2: d0 = 4, d1 = 3, d2 = 2.
    seer = TaylorSeer(n_derivatives=2, mix_orders=True)
    for s in (0, 1):
        seer.update(torch.tensor([float(s * s)]), s)
    assert seer.predict(2).item() == pytest.approx(2.0)  # no weights yet: plain order 1
    seer.update(torch.tensor([4.0]), 2)
    torch.testing.assert_close(seer.coefficients, torch.tensor([1.0, 0.6]))
    assert seer.predict(3).item() == pytest.approx(4 + 0.6 * 3)
    assert seer.predict(4).item() == pytest.approx(4 + 0.6 * 3 * 2)


def test_mix_orders_keeps_an_exact_order_exact():
    seer = TaylorSeer(n_derivatives=2, mix_orders=True)
    for s in (0, 2, 4, 6):
        seer.update(linear(s), s)
    torch.testing.assert_close(seer.predict(7), linear(7), rtol=0, atol=1e-5)


def test_mix_orders_with_several_exact_orders_and_zero_values_stays_finite():
    seer = TaylorSeer(n_derivatives=3, mix_orders=True)
    for s in range(5):
        seer.update(torch.zeros(3), s)
    assert torch.equal(seer.predict(6), torch.zeros(3))
    assert torch.isfinite(seer.coefficients).all()
