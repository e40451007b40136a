"""Budget mode: the cost model and its exact DP (hand-built values), and calibrate() on a tiny pipeline."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import torch

import cache_dit
from cache_dit.cache_factory.calibration import block_speedup, leave_one_out, pick_robust, uniform_schedules
from cache_dit.cache_factory.calibration.record import Recorder
from cache_dit.cache_factory.calibration.search import (
    Piece,
    ScheduleSearch,
    best_order1_schedule,
    forecast_cost,
    late_start_schedules,
    order1_errors,
    schedule_cost,
)
from cache_dit.cache_factory.calibration.verify import guard_sample
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
    errors = order1_errors(values)
    for computed in (3, 4, 5):
        best = min(
            forecast_cost(values, (0, *rest), 1) for rest in itertools.combinations(range(1, 9), computed - 1)
        )
        found = best_order1_schedule(errors, computed)
        assert len(found) == computed and found[0] == 0
        assert forecast_cost(values, found, 1) == pytest.approx(best, rel=1e-6)


def test_search_offers_no_order_its_computed_steps_cannot_reach():
    """A forecast from j computed steps has order j - 1 at most; higher orders would only repeat candidates."""
    g = torch.Generator().manual_seed(2)
    recorded = {"residual": [torch.cumsum(torch.randn(8, 5, generator=g), 0)]}
    search = ScheduleSearch([[Piece(0, 8, recorded, {"per step": None})]], ["residual"], ["per step"], 2, 8)
    assert {c.order for c in search.candidates(1)} == {0}
    assert {c.order for c in search.candidates(2)} == {0, 1}
    assert {c.order for c in search.candidates(3)} == {0, 1, 2}
    for computed in (1, 2, 3):
        found = [(c.steps, c.forecaster) for c in search.candidates(computed)]
        assert len(found) == len(set(found)) and all(len(steps) == computed for steps, _ in found)


def test_uniform_schedules_and_block_speedup():
    assert (0, 1, 3, 5) in uniform_schedules(6, 4)  # warmup 2, every 2nd step
    assert all(len(s) == 3 and s[0] == 0 for s in uniform_schedules(6, 3))
    assert block_speedup(28, 14, 12, 0) == 2.0
    assert block_speedup(28, 7, 12, 1) == pytest.approx(28 * 12 / (7 * 12 + 21))


def test_late_start_schedules_hand_computed():
    """Every step until k (0..k-1), then step `first` (k < first < k + j) and every j-th after it."""
    assert late_start_schedules(10, 6, intervals=(2, 3)) == [
        (2, 3, 2, (0, 1, 3, 5, 7, 9)),
        (3, 4, 2, (0, 1, 2, 4, 6, 8)),
        (4, 5, 3, (0, 1, 2, 3, 5, 8)),
        (4, 6, 3, (0, 1, 2, 3, 6, 9)),  # = uniform_schedule(10, 4, 3)
        (5, 7, 3, (0, 1, 2, 3, 4, 7)),
    ]
    # a step always computed (a second denoiser's first) counts; a schedule found twice is kept at its first j
    assert late_start_schedules(10, 6, intervals=(2, 3), always=(5,)) == [
        (1, 2, 2, (0, 2, 4, 5, 6, 8)),
        (2, 3, 2, (0, 1, 3, 5, 7, 9)),
        (2, 3, 3, (0, 1, 3, 5, 6, 9)),
        (3, 4, 3, (0, 1, 2, 4, 5, 7)),
        (4, 5, 3, (0, 1, 2, 3, 5, 8)),  # (4, 6, 3) and (5, 7, 3) have 7 steps with step 5
    ]
    # diffusers' TaylorSeer lite (before=8, interval=2 at 28 steps; before=12, interval=3 at 50): the same steps
    assert (8, 9, 2, (*range(8), *range(9, 28, 2))) in late_start_schedules(28, 18)
    assert (12, 13, 3, (*range(12), *range(13, 50, 3))) in late_start_schedules(50, 25)
    assert late_start_schedules(28, 7) == [
        (1, 4, 4, (0, 4, 8, 12, 16, 20, 24)),  # k = 1: from step 0, every j-th after `first`
        (1, 2, 5, (0, 2, 7, 12, 17, 22, 27)),
        (2, 3, 5, (0, 1, 3, 8, 13, 18, 23)),
        (2, 4, 5, (0, 1, 4, 9, 14, 19, 24)),
        (2, 5, 5, (0, 1, 5, 10, 15, 20, 25)),
        (2, 6, 5, (0, 1, 6, 11, 16, 21, 26)),
        (2, 3, 6, (0, 1, 3, 9, 15, 21, 27)),
        (3, 4, 6, (0, 1, 2, 4, 10, 16, 22)),
        (3, 5, 6, (0, 1, 2, 5, 11, 17, 23)),
        (3, 6, 6, (0, 1, 2, 6, 12, 18, 24)),
        (3, 7, 6, (0, 1, 2, 7, 13, 19, 25)),
        (3, 8, 6, (0, 1, 2, 8, 14, 20, 26)),
    ]
    counts = {14: 19, 18: 20, 11: 18, 9: 15, 7: 12}  # 2x, 1.56x, 2.55x, 3.11x, 4x at 28 steps
    for computed, many in counts.items():
        found = late_start_schedules(28, computed)
        assert len(found) == many and all(len(steps) == computed for *_, steps in found)
        assert len({steps for *_, steps in found}) == many


def test_candidates_verify_late_start_high_orders_of_both_targets_first():
    g = torch.Generator().manual_seed(3)
    recorded = {t: [torch.cumsum(torch.randn(10, 5, generator=g), 0)] for t in ("residual", "output")}
    weights = {"per step": None, "step size": torch.linspace(2.0, 0.1, 10)}
    search = ScheduleSearch([[Piece(0, 10, recorded, weights)]], ["residual", "output"], list(weights), 2, 10)
    first = search.candidates(6)[:8]  # what calibrate verifies with its default verify_runs=8
    late = {steps: f"late start: 0..{k - 1}, {f}, +{j}" for k, f, j, steps in late_start_schedules(10, 6)}
    for target in ("residual", "output"):
        picked = [c for c in first if c.target == target and c.source.startswith("late start")]
        assert len(picked) == 1 and picked[0].order == 2  # the highest order
        c = picked[0]
        assert late[c.steps] == c.source
        # the best predicted late-start candidate of this target at order 2, by the step-size cost model
        costs = {
            (steps, 2): forecast_cost(recorded[target], steps, 2, weights["step size"]) for steps in late
        }
        assert c.predicted == pytest.approx(min(costs.values()))
        assert costs[c.steps, c.order] == pytest.approx(c.predicted)


def _kwargs(generator=None, **extra):
    pe, pooled = tiny.flux_prompt_embeds()
    kwargs = dict(
        prompt_embeds=pe, pooled_prompt_embeds=pooled, height=32, width=32, num_inference_steps=STEPS, **extra
    )
    kwargs["output_type"] = "pt"
    if generator is not None:
        kwargs["generator"] = generator
    return kwargs


def _sample_psnrs(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """PSNR of each sample of float images in [0, 1], as they are (what calibrate measures)."""
    mse = ((a.double() - b.double()) ** 2).reshape(a.shape[0], -1).mean(1)
    return [min(100.0, 10 * float(np.log10(1 / m))) if m > 0 else 100.0 for m in mse.tolist()]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean over the samples (calibrate's `.psnr` on one input)."""
    return float(np.mean(_sample_psnrs(a, b)))


def test_target_speedup_gives_verified_options_and_leaves_the_pipeline_uncached(capsys):
    pipe = FLUX.build()
    options = cache_dit.calibrate(pipe, _kwargs(), target_speedup=2.0)
    assert "picked (*): 2.00x" in capsys.readouterr().out
    assert get_runner(pipe.transformer) is None
    assert options.speedup == 2.0 and options.num_inference_steps == STEPS
    assert options["Fn_compute_blocks"] == 0 and len(options["compute_steps"]) == 3
    # the recorded run and, with one input, every screened candidate verified: the cost model's first
    # verify_runs + screen_runs = 8 + 16 (this small search has 8 < n <= 24), each once
    assert all(row["psnr"] is not None for row in options.table)
    assert 8 < len(options.table) <= 24 and options.runs == 1 + len(options.table)
    assert len({(tuple(row["compute_steps"]), row["order"]) for row in options.table}) == len(options.table)
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
    # the first candidate of 3 computed steps, what the binary search probes there
    probe = cache_dit.calibrate(
        pipe, _kwargs(), target_speedup=2.0, verify_runs=1, screen_runs=0, verbose=False
    )
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
        ({"target_speedup": 2.0, "screen_runs": -1}, ValueError, "screen_runs must be >= 0"),
        ({"target_speedup": 2.0, "screen_runs": 2.0}, TypeError, "screen_runs must be an int"),
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
    recorder = Recorder()
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
    recorder = Recorder()
    for step in range(2):
        recorder("cond", step, 0, "hidden", torch.full((2, 3), float(step)))
        recorder("cond", step, -1, "output", torch.full((4,), 10.0 + step))
    (residual,) = recorder.matrices(2)
    (output,) = recorder.matrices(2, output=True)
    assert residual[:, 0].tolist() == [0.0, 1.0] and output[:, 0].tolist() == [10.0, 11.0]
    with pytest.raises(ValueError, match=r"transformer output changed from \(4,\) to \(5,\)"):
        recorder("cond", 2, -1, "output", torch.zeros(5))


def test_schedule_cost_is_what_the_dp_minimizes_and_what_forecast_cost_counts():
    g = torch.Generator().manual_seed(1)
    values = [torch.cumsum(torch.randn(8, 5, generator=g), 0) ** 2]
    errors = order1_errors(values)
    for steps in [(0, 3), (0, 1, 5), best_order1_schedule(errors, 3), (1, 4, 6)]:
        assert schedule_cost(errors, steps) == pytest.approx(forecast_cost(values, steps, 1), rel=1e-6)


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


# ----------------------------------------------------------------------------------------------------------
# Several inputs: the selection rule, its leave-one-out estimate, per-input scores
# ----------------------------------------------------------------------------------------------------------


def test_pick_robust_is_the_best_mean_among_those_near_the_best_worst_sample():
    scores = [
        [46.0, 30.0],  # mean 38.00, worst 30.0
        [38.0, 37.0],  # mean 37.50, worst 37.0 (the best worst sample)
        [37.0, 36.5],  # mean 36.75, worst 36.5
        [39.5, 36.0],  # mean 37.75, worst 36.0
    ]
    assert pick_robust(scores, worst_margin=1.0) == 3  # worst >= 36: candidates 1, 2, 3; best mean: 3
    assert pick_robust(scores, worst_margin=0.0) == 1  # only the best worst sample qualifies
    assert pick_robust(scores, worst_margin=10.0) == 0  # every candidate qualifies: the best mean
    assert pick_robust([[30.0], [32.0], [31.0]], worst_margin=1.0) == 1  # one sample: the best score
    assert pick_robust([[35.0, 35.0], [35.0, 35.0]], worst_margin=1.0) == 0  # a tie: the better predicted


def test_from_ten_samples_the_guard_sets_aside_the_worst_ten_percent():
    # 10 samples: one sample (the last) that almost every candidate ruins (a flipped image) no longer decides
    flip = [
        [60.0] * 9 + [12.0],  # mean 55.2, guard (2nd worst) 60.0
        [50.0] * 9 + [30.0],  # mean 48.0, guard 50.0; worst 30.0: the best worst sample
        [58.0] * 9 + [12.5],  # mean 53.45, guard 58.0
    ]
    assert [guard_sample(row) for row in flip] == [60.0, 50.0, 58.0]
    assert pick_robust(flip, worst_margin=1.0) == 0
    assert pick_robust([row[1:] for row in flip], worst_margin=1.0) == 1  # 9 samples: the worst sample guards
    # two bad samples of 10: the second still counts (10 % of 10 is one sample set aside)
    two = [[60.0] * 8 + [12.0, 20.0], [50.0] * 8 + [30.0, 40.0]]
    assert [guard_sample(row) for row in two] == [20.0, 40.0] and pick_robust(two, worst_margin=1.0) == 1
    assert guard_sample(list(range(20, 0, -1))) == 3  # 20 samples: the two lowest set aside


def test_leave_one_out_re_picks_without_each_sample():
    scores = [[40.0, 30.0, 35.0], [36.0, 36.0, 36.0], [38.0, 34.0, 39.0]]
    # without sample 0: worst 30 / 36 / 34 -> only candidate 1 within 1 dB of 36 -> its score on sample 0: 36
    # without sample 1: worst 35 / 36 / 38, means 37.5 / 36 / 38.5 -> candidate 2 -> 34 on sample 1
    # without sample 2: worst 30 / 36 / 34 -> candidate 1 -> 36 on sample 2
    assert leave_one_out(scores, worst_margin=1.0) == [36.0, 34.0, 36.0]
    assert leave_one_out([[40.0], [41.0]], worst_margin=1.0) is None  # one sample: nothing to leave out


def test_two_inputs_scored_per_sample_with_a_leave_one_out_estimate(tmp_path, capsys):
    """Input 0: a batch of 2 prompts with its own generator; input 1: one prompt at another size, no generator
    (seeded 0 + 1). The rule and the leave-one-out estimate work on the 3 samples."""
    pipe = FLUX.build()
    pe2, pooled2 = tiny.flux_prompt_embeds(batch=2, seed=2)
    pe, pooled = tiny.flux_prompt_embeds(seed=1)
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    size = FLUX.alt_size
    inputs = [
        {**_kwargs(generator), "prompt_embeds": pe2, "pooled_prompt_embeds": pooled2},
        {**_kwargs(), "prompt_embeds": pe, "pooled_prompt_embeds": pooled, "height": size, "width": size},
    ]
    path = tmp_path / "cal.json"
    options = cache_dit.calibrate(
        pipe, inputs, target_speedup=2.0, verify_runs=3, screen_runs=0, save_to=path
    )
    out = capsys.readouterr().out
    assert torch.equal(generator.get_state(), state)
    assert options.runs == 2 * (1 + 3) and options.inputs == 2 and options.speedup == 2.0
    # the pick's scores are the PSNRs its options give on each sample of each input, with the input's own noise
    seeds = (5, 1)
    references = [
        pipe(**{**k, "generator": torch.Generator().manual_seed(s)}).images for k, s in zip(inputs, seeds)
    ]
    cache_dit.apply_cache_on_pipe(pipe, **options)
    cached = [
        pipe(**{**k, "generator": torch.Generator().manual_seed(s)}).images for k, s in zip(inputs, seeds)
    ]
    per_sample = [_sample_psnrs(references[i], cached[i]) for i in range(2)]
    picked = next(row for row in options.table if row["picked"])
    assert [len(p) for p in picked["sample_psnrs"]] == [2, 1]
    for i in range(2):
        assert picked["sample_psnrs"][i] == pytest.approx(per_sample[i], abs=1e-9)
        assert options.psnrs[i] == pytest.approx(np.mean(per_sample[i]), abs=1e-9)
    flat = per_sample[0] + per_sample[1]
    assert options.psnr == pytest.approx(np.mean(flat), abs=1e-9)
    assert options.psnr_worst == pytest.approx(min(flat), abs=1e-9)
    # the pick is the rule's on every sample; the leave-one-out estimate re-runs the rule without each sample and
    # scores the candidate it picks on that sample
    scores = [[s for per_input in row["sample_psnrs"] for s in per_input] for row in options.table]
    assert [row["picked"] for row in options.table] == [
        c == pick_robust(scores, 1.0) for c in range(len(scores))
    ]
    by_hand = []
    for k in range(3):
        others = [[s for j, s in enumerate(row) if j != k] for row in scores]
        by_hand.append(scores[pick_robust(others, 1.0)][k])
    assert options.loo_psnrs == by_hand and options.loo_psnr == pytest.approx(np.mean(by_hand))
    assert f"leave-one-out estimate for unseen samples: {options.loo_psnr:.2f} dB" in out
    entry = json.loads(path.read_text())[f"{options.model}@{STEPS}"]
    assert entry["psnrs"] == options.psnrs and entry["loo_psnr"] == options.loo_psnr and entry["inputs"] == 2


class _Terminal:
    """A stderr that says it is a terminal."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_counts_the_runs_on_a_terminal_only(monkeypatch, progress):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    options = cache_dit.calibrate(
        FLUX.build(),
        _kwargs(),
        target_speedup=3.0,
        verify_runs=1,
        screen_runs=2,
        verbose=False,
        progress=progress,
    )
    assert options.runs == 4  # recorded, then 1 + 2 candidates screened (and so verified: one input)
    assert ("cache-dit calibrate: 100%" in terminal.text and "4/4" in terminal.text) == progress
    assert progress or terminal.text == ""


@pytest.mark.parametrize(
    "call_kwargs,error,match",
    [
        ([], ValueError, "call_kwargs is an empty list"),
        ("prompt", TypeError, "call_kwargs must be a dict .* or a list of them"),
        ([{"num_inference_steps": 4}, 3], TypeError, r"call_kwargs\[1\] must be a dict"),
        (
            [{"num_inference_steps": 4}, {"num_inference_steps": 6}],
            ValueError,
            r"share num_inference_steps.*\[4, 6\]",
        ),
        ([{"generator": 7}], TypeError, r"\['generator'\] must be a torch.Generator"),
    ],
)
def test_bad_inputs_raise_before_any_run(call_kwargs, error, match):
    pipe = FLUX.build()
    with pytest.raises(error, match=match):
        cache_dit.calibrate(pipe, call_kwargs, target_speedup=2.0, verbose=False)
    assert get_runner(pipe.transformer) is None


# ----------------------------------------------------------------------------------------------------------
# The calibration file, and failures that must not cost the caller anything
# ----------------------------------------------------------------------------------------------------------

_FLUX_KEY = f"diffusers.models.transformers.transformer_flux.FluxTransformer2DModel@{STEPS}"


@pytest.mark.parametrize(
    "content,match",
    [
        ("[1, 2]", "the top level is a list, expected an object"),
        (json.dumps({_FLUX_KEY: {"speedup": 2.0}}), f"entry '{_FLUX_KEY}' has no 'options' object"),
        (json.dumps({_FLUX_KEY: [1]}), f"entry '{_FLUX_KEY}' is a list"),
        ("{not json", "it is not JSON"),
    ],
)
def test_load_calibration_names_the_file_and_what_is_wrong(tmp_path, content, match):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"{path} is not a calibration file: {match}"):
        cache_dit.load_calibration(path, FLUX.build(), STEPS)


def test_an_older_calibration_file_still_loads(tmp_path):
    path = tmp_path / "cal.json"
    options = {
        "cache_type": "DBCache",
        "Fn_compute_blocks": 0,
        "Bn_compute_blocks": 0,
        "compute_steps": [0, 2, 4],
    }
    path.write_text(json.dumps({_FLUX_KEY: {"options": options, "speedup": 2.0, "psnr": 30.0, "runs": 9}}))
    assert cache_dit.load_calibration(path, FLUX.build(), STEPS) == options


def _counting(steps: list[int]):
    def count(pipe, step, timestep, callback_kwargs):
        steps.append(step)
        return callback_kwargs

    return count


@pytest.mark.parametrize(
    "where,match",
    [
        ("folder/cal.json", "the folder '.*folder' does not exist"),
        ("cal.json", "save_to: .*cal.json is not a calibration file: the top level is a list"),
    ],
)
def test_save_to_is_checked_before_any_run(tmp_path, where, match):
    (tmp_path / "cal.json").write_text("[]")  # an existing file that is no calibration file
    steps: list[int] = []
    with pytest.raises(ValueError, match=match):
        cache_dit.calibrate(
            FLUX.build(),
            _kwargs(callback_on_step_end=_counting(steps)),
            target_speedup=2.0,
            verbose=False,
            save_to=tmp_path / where,
        )
    assert steps == []  # no denoising step ran


def test_a_fault_in_the_recorded_run_leaves_the_generator_as_it_was():
    def fail(pipe, step, timestep, callback_kwargs):
        raise RuntimeError("fault at step 1")

    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    pipe = FLUX.build()
    with pytest.raises(RuntimeError, match="fault at step 1"):
        cache_dit.calibrate(
            pipe, _kwargs(generator, callback_on_step_end=fail), target_speedup=2.0, verbose=False
        )
    assert torch.equal(generator.get_state(), state)  # the recorded run drew the noise: rewound
    assert get_runner(pipe.transformer) is None


def test_fitted_schedules_are_cross_fitted_over_the_inputs():
    """With several inputs, a schedule the DP fits is scored on each input as the DP fitted to the other inputs
    (what the fit gives on an unseen input); the options run the fit to every input, and `.psnr` is that fit's
    score on the calibration inputs. worst_margin=100 makes the rule the best mean, which here is a fitted one."""
    pipe = FLUX.build()
    inputs = []
    for seed in range(3):
        pe, pooled = tiny.flux_prompt_embeds(seed=seed)
        inputs.append(
            {**_kwargs(), "prompt_embeds": pe, "pooled_prompt_embeds": pooled, "num_inference_steps": 8}
        )
    options = cache_dit.calibrate(
        pipe,
        inputs,
        target_speedup=2.0,
        verify_runs=2,
        screen_runs=0,
        max_order=0,
        cache_types=["residual", "output"],
        worst_margin=100.0,
        verbose=False,
    )
    rows = options.table
    assert [row["source"].startswith("dp") for row in rows] == [True, True]
    assert all(row["cross_fitted"] and len(row["fold_steps"]) == 3 for row in rows)
    picked = next(row for row in rows if row["picked"])
    assert picked["psnr"] == max(row["psnr"] for row in rows)
    differs = [i for i, steps in enumerate(picked["fold_steps"]) if steps != picked["compute_steps"]]
    assert differs, "this case was chosen because one input's fold fits another schedule"
    # 3 recorded runs, 2 candidates x 3 inputs, and the fit to every input on the inputs whose fold differed
    assert options.runs == 3 + 2 * 3 + len(differs)
    references = [
        pipe(**{**k, "generator": torch.Generator().manual_seed(i)}).images for i, k in enumerate(inputs)
    ]

    def cached_run(i: int, steps: list[int]) -> torch.Tensor:
        cache_dit.apply_cache_on_pipe(pipe, **{**options, "compute_steps": steps})
        try:
            return pipe(**{**inputs[i], "generator": torch.Generator().manual_seed(i)}).images
        finally:
            cache_dit.disable_cache(pipe)

    for i in range(3):  # the cross-fitted scores: input i under the schedule fitted without it
        fold = _sample_psnrs(references[i], cached_run(i, picked["fold_steps"][i]))
        assert picked["sample_psnrs"][i] == pytest.approx(fold, abs=1e-9)
    in_sample = [_sample_psnrs(references[i], cached_run(i, options["compute_steps"])) for i in range(3)]
    assert options.psnr == pytest.approx(np.mean(in_sample), abs=1e-9)
    assert options.cross_fitted_psnr == pytest.approx(picked["psnr"], abs=1e-9)
    assert options.cross_fitted_psnr != pytest.approx(options.psnr)


def test_screening_runs_every_candidate_on_the_first_input_and_verifies_the_best_there():
    """verify_runs=2, screen_runs=3: the cost model's first 5 candidates each run once on input 0, the 2 best
    there (by their mean PSNR on input 0) run on input 1 too, and the pick is among those 2. The screen scores are
    the PSNRs the candidates' options give on input 0 (re-run here)."""
    pipe = FLUX.build()
    inputs = []
    for seed in range(2):
        pe, pooled = tiny.flux_prompt_embeds(seed=seed)
        inputs.append({**_kwargs(), "prompt_embeds": pe, "pooled_prompt_embeds": pooled})
    options = cache_dit.calibrate(
        pipe,
        inputs,
        target_speedup=2.0,
        verify_runs=2,
        screen_runs=3,
        cache_types=["residual"],
        verbose=False,
    )
    rows = options.table
    verified = [row for row in rows if row["psnr"] is not None]
    out = [row for row in rows if row["psnr"] is None]
    assert len(verified) == 2 and len(out) == 3
    assert min(row["screen_psnr"] for row in verified) >= max(row["screen_psnr"] for row in out)
    picked = next(row for row in rows if row["picked"])
    assert picked in verified
    # 2 recorded runs, 5 screening runs on input 0, 2 runs on input 1 (+ the pick's fit to every input where
    # it was cross-fitted and its fold differed)
    refit = sum(f != picked["compute_steps"] for f in picked["fold_steps"] or [])
    assert options.runs == 2 + 5 + 2 + refit
    reference = pipe(**{**inputs[0], "generator": torch.Generator().manual_seed(0)}).images
    for row in verified:
        assert row["psnrs"][0] == row["screen_psnr"]
    for row in rows:
        steps = row["fold_steps"][0] if row["fold_steps"] else row["compute_steps"]
        order = int(row["order"])
        extra = {"enable_taylorseer": True, "enable_encoder_taylorseer": True} if order else {}
        cache_dit.apply_cache_on_pipe(
            pipe,
            Fn_compute_blocks=0,
            Bn_compute_blocks=0,
            compute_steps=steps,
            **extra,
            **({"taylorseer_kwargs": {"n_derivatives": order}} if order else {}),
        )
        try:
            cached = pipe(**{**inputs[0], "generator": torch.Generator().manual_seed(0)}).images
        finally:
            cache_dit.disable_cache(pipe)
        assert row["screen_psnr"] == pytest.approx(_psnr(reference, cached), abs=1e-9)
