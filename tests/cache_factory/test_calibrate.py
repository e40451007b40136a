"""Budget mode: the cost model and its exact DP (hand-built values), and calibrate() on a tiny pipeline."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import torch

import cache_dit
from cache_dit.cache_factory.calibration import (
    _order1_errors,
    best_order1_schedule,
    block_speedup,
    forecast_cost,
    uniform_schedules,
)
from cache_dit.cache_factory.runner import get_runner
from cache_dit.testing import tiny
from cache_dit.testing.cases import CASES

FLUX = CASES["flux"]
STEPS = 6


def test_forecast_cost_closed_form():
    k = torch.arange(6, dtype=torch.float32)
    linear = [k[:, None] * torch.ones(1, 4)]  # every element = k
    assert forecast_cost(linear, (0, 1), order=1) == 0.0  # a line is forecast exactly from two points
    # order 0 reuses the value of the last computed step: errors 1, 2 after step 1; 1, 2 after step 3
    assert forecast_cost(linear, (0, 1, 3), order=0) == 1 + 1 + 2


def test_dp_schedule_is_the_exact_optimum():
    g = torch.Generator().manual_seed(0)
    values = [torch.cumsum(torch.randn(9, 5, generator=g), 0) ** 2]  # a bumpy trajectory
    errors = _order1_errors(values)
    for computed in (3, 4, 5):
        best = min(
            forecast_cost(values, (0, *rest), 1) for rest in itertools.combinations(range(1, 9), computed - 1)
        )
        found = best_order1_schedule(errors, computed)
        assert len(found) == computed and found[0] == 0
        assert forecast_cost(values, found, 1) == pytest.approx(best, rel=1e-6)


def test_uniform_schedules_and_block_speedup():
    assert (0, 1, 3, 5) in uniform_schedules(6, 4)  # warmup 2, every 2nd step
    assert all(len(s) == 3 and s[0] == 0 for s in uniform_schedules(6, 3))
    assert block_speedup(28, 14, 12, 0) == 2.0
    assert block_speedup(28, 7, 12, 1) == pytest.approx(28 * 12 / (7 * 12 + 21))


def _kwargs(generator=None):
    pe, pooled = tiny.flux_prompt_embeds()
    kwargs = dict(
        prompt_embeds=pe, pooled_prompt_embeds=pooled, height=32, width=32, num_inference_steps=STEPS
    )
    kwargs["output_type"] = "pt"
    if generator is not None:
        kwargs["generator"] = generator
    return kwargs


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR of the 8-bit images (what calibrate measures on images in [0, 1])."""
    a, b = (torch.round(x.double().clamp(0, 1) * 255) for x in (a, b))
    mse = ((a - b) ** 2).reshape(a.shape[0], -1).mean(1)
    return float(np.mean([min(100.0, 10 * np.log10(255**2 / m)) if m > 0 else 100.0 for m in mse.tolist()]))


def test_target_speedup_gives_verified_options_and_leaves_the_pipeline_uncached(capsys):
    pipe = FLUX.build()
    options = cache_dit.calibrate(pipe, _kwargs(), target_speedup=2.0)
    assert "picked: 2.00x" in capsys.readouterr().out
    assert get_runner(pipe.transformer) is None
    assert options.speedup == 2.0 and options.num_inference_steps == STEPS
    assert options["Fn_compute_blocks"] == 0 and len(options["compute_steps"]) == 3
    assert options.runs == 1 + 8  # the recorded run and eight verifications (verify_runs=8)
    assert {row["order"].endswith("output") for row in options.table} == {
        True,
        False,
    }  # both targets verified
    # the reported PSNR is the one the options give on the same inputs (seed 0 when no generator is given)
    reference = pipe(**_kwargs(torch.Generator().manual_seed(0))).images
    cache_dit.apply_cache_on_pipe(pipe, **options)
    cached = pipe(**_kwargs(torch.Generator().manual_seed(0))).images
    assert _psnr(reference, cached) == pytest.approx(options.psnr, abs=1e-9)
    assert cache_dit.summary(pipe).cached_steps == sorted(set(range(STEPS)) - set(options["compute_steps"]))
    verified = [row["psnr"] for row in options.table]
    assert options.psnr == max(verified)


def test_min_psnr_returns_the_fewest_computed_steps_that_reach_it():
    pipe = FLUX.build()
    probe = cache_dit.calibrate(pipe, _kwargs(), target_speedup=2.0, verify_runs=1, verbose=False)
    goal = probe.psnr - 1e-6  # reachable with 3 computed steps
    options = cache_dit.calibrate(pipe, _kwargs(), min_psnr=goal, verbose=False)
    assert options.psnr >= goal
    computed = len(options["compute_steps"])
    assert computed <= 3
    failing = [r for r in options.table if r["computed_steps"] < computed]
    assert all(r["psnr"] < goal for r in failing)


def test_generator_state_is_restored_and_shared_by_every_run():
    pipe = FLUX.build()
    generator = torch.Generator().manual_seed(7)
    state = generator.get_state()
    options = cache_dit.calibrate(pipe, _kwargs(generator), target_speedup=3.0, verify_runs=1, verbose=False)
    assert torch.equal(generator.get_state(), state)
    reference = pipe(**_kwargs(torch.Generator().manual_seed(7))).images
    cache_dit.apply_cache_on_pipe(pipe, **options)
    cached = pipe(**_kwargs(torch.Generator().manual_seed(7))).images
    assert _psnr(reference, cached) == pytest.approx(options.psnr, abs=1e-9)


def test_save_and_load_by_model_and_step_count(tmp_path):
    pipe = FLUX.build()
    path = tmp_path / "calibration.json"
    options = cache_dit.calibrate(
        pipe, _kwargs(), target_speedup=2.0, verify_runs=1, verbose=False, save_to=path
    )
    stored = json.loads(path.read_text())
    assert list(stored) == [f"diffusers.models.transformers.transformer_flux.FluxTransformer2DModel@{STEPS}"]
    assert cache_dit.load_calibration(path, pipe, STEPS) == dict(options)
    with pytest.raises(ValueError, match=f"no calibration for .*@28; it holds: .*@{STEPS}"):
        cache_dit.load_calibration(path, pipe, 28)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({}, ValueError, "exactly one of target_speedup"),
        ({"target_speedup": 2.0, "min_psnr": 30.0}, ValueError, "exactly one of target_speedup"),
        ({"target_speedup": 1.0}, ValueError, "target_speedup must be finite and > 1"),
        ({"target_speedup": "2x"}, TypeError, "target_speedup must be a number"),
        ({"min_psnr": float("nan")}, ValueError, "min_psnr must be finite"),
        ({"target_speedup": 2.0, "verify_runs": 0}, ValueError, "verify_runs must be >= 1"),
        ({"target_speedup": 7.0}, ValueError, "target_speedup=7.0 is out of reach: .* at most 6.00x"),
        ({"target_speedup": 2.0, "cache_types": "output"}, TypeError, "cache_types must be a non-empty list"),
        (
            {"target_speedup": 2.0, "cache_types": ["hidden"]},
            ValueError,
            "allowed values 'residual' and 'output'",
        ),
        (
            {"target_speedup": 2.0, "cache_types": ["output"], "Fn_compute_blocks": 1},
            ValueError,
            "needs Fn_compute_blocks=0 and Bn_compute_blocks=0",
        ),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    pipe = FLUX.build()
    with pytest.raises(error, match=match):
        cache_dit.calibrate(pipe, _kwargs(), verbose=False, **kwargs)
    assert get_runner(pipe.transformer) is None


def test_a_cached_pipeline_is_refused():
    pipe = FLUX.build()
    cache_dit.apply_cache_on_pipe(pipe, cache_type="FBCache")
    with pytest.raises(ValueError, match="needs an uncached pipeline"):
        cache_dit.calibrate(pipe, _kwargs(), target_speedup=2.0)


def test_uniform_schedule():
    assert cache_dit.uniform_schedule(8) == [0, 2, 4, 6]
    assert cache_dit.uniform_schedule(12, warmup_steps=3, interval=4, include_last=True) == [
        0,
        1,
        2,
        6,
        10,
        11,
    ]
    with pytest.raises(ValueError, match="interval must be >= 1"):
        cache_dit.uniform_schedule(8, interval=0)
    with pytest.raises(TypeError, match="warmup_steps must be an int"):
        cache_dit.uniform_schedule(8, warmup_steps=2.5)


def test_recorder_keeps_one_fixed_sample_and_refuses_a_shape_change():
    from cache_dit.cache_factory.calibration import _Recorder

    recorder = _Recorder()
    first, second = torch.arange(6.0).reshape(2, 3), torch.arange(6.0).reshape(2, 3) * 10
    recorder("cond", 0, 0, "hidden", first)
    recorder("cond", 1, 0, "hidden", second)
    recorder("cond", 1, 0, "encoder", torch.zeros(5))  # the encoder stream is not recorded
    (matrix,) = recorder.matrices(2)
    torch.testing.assert_close(matrix[1], matrix[0] * 10)  # the same elements at every step
    assert sorted(matrix[0].tolist()) == list(range(6))  # the whole residual when it has fewer than SAMPLE
    with pytest.raises(ValueError, match=r"changed from \(2, 3\) to \(3, 2\) at step 2"):
        recorder("cond", 2, 0, "hidden", first.reshape(3, 2))


@pytest.mark.parametrize("cache_type", ["output", "residual"])
def test_one_forecast_target_only(cache_type):
    """cache_types=[one]: every verified candidate forecasts that target; the pick's PSNR is what it gives."""
    pipe = FLUX.build()
    options = cache_dit.calibrate(
        pipe, _kwargs(), target_speedup=2.0, cache_types=[cache_type], verbose=False
    )
    assert {row["order"].endswith("output") for row in options.table} == {cache_type == "output"}
    assert options.get("taylorseer_cache_type", "residual") == cache_type
    reference = pipe(**_kwargs(torch.Generator().manual_seed(0))).images
    cache_dit.apply_cache_on_pipe(pipe, **options)
    cached = pipe(**_kwargs(torch.Generator().manual_seed(0))).images
    assert _psnr(reference, cached) == pytest.approx(options.psnr, abs=1e-9)


def test_recorder_keeps_the_transformer_output_apart():
    from cache_dit.cache_factory.calibration import _Recorder

    recorder = _Recorder()
    for step in range(2):
        recorder("cond", step, 0, "hidden", torch.full((2, 3), float(step)))
        recorder("cond", step, -1, "output", torch.full((4,), 10.0 + step))
    (residual,) = recorder.matrices(2)
    (output,) = recorder.matrices(2, output=True)
    assert residual[:, 0].tolist() == [0.0, 1.0] and output[:, 0].tolist() == [10.0, 11.0]
    with pytest.raises(ValueError, match=r"transformer output changed from \(4,\) to \(5,\)"):
        recorder("cond", 2, -1, "output", torch.zeros(5))


def test_schedule_cost_is_what_the_dp_minimizes_and_what_forecast_cost_counts():
    from cache_dit.cache_factory.calibration import _schedule_cost

    g = torch.Generator().manual_seed(1)
    values = [torch.cumsum(torch.randn(8, 5, generator=g), 0) ** 2]
    errors = _order1_errors(values)
    for steps in [(0, 3), (0, 1, 5), best_order1_schedule(errors, 3), (1, 4, 6)]:
        assert _schedule_cost(errors, steps) == pytest.approx(forecast_cost(values, steps, 1), rel=1e-6)


def test_two_denoisers_share_one_schedule_with_each_first_step_computed(tmp_path):
    """Wan 2.2 (`transformer` for steps 0-1, `transformer_2` for 2-7): one schedule over the pipeline's steps,
    each denoiser's first step in it; the verified PSNR is what the options give; JSON keyed by both classes."""
    pipe = tiny.tiny_wan22_pipeline()
    kwargs = CASES["wan"].call_kwargs(steps=8)  # the tiny Wan call (seeded generator, CFG on)
    path = tmp_path / "cal.json"
    options = cache_dit.calibrate(
        pipe, kwargs, target_speedup=2.0, verify_runs=4, verbose=False, save_to=path
    )
    steps = options["compute_steps"]
    assert options.speedup == 2.0 and len(steps) == 4 and {0, 2} <= set(steps)
    assert all({0, 2} <= set(row["compute_steps"]) and row["computed_steps"] == 4 for row in options.table)
    wan = "diffusers.models.transformers.transformer_wan.WanTransformer3DModel"
    assert options.model == f"{wan}+{wan}" and cache_dit.load_calibration(path, pipe, 8) == dict(options)
    reference = pipe(**{**kwargs, "generator": torch.Generator().manual_seed(0)}).frames
    cache_dit.apply_cache_on_pipe(pipe, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the schedule fits: each denoiser counts the pipeline's 8 steps
        cached = pipe(**{**kwargs, "generator": torch.Generator().manual_seed(0)}).frames
    high, low = cache_dit.summary(pipe), cache_dit.summary(pipe, denoiser="transformer_2")
    assert high.cached_steps + low.cached_steps == sorted(set(range(8)) - set(steps))
    assert _psnr(reference, cached) == pytest.approx(options.psnr, abs=1e-9)
