"""Quality regression gate on the trained testbed (deterministic on the CPU: fixed seeds, one thread).

For fixed configurations, the exact cached steps (or pruned block count) and a PSNR floor against the uncached
output, 28 steps, classes "blue circle" and "green triangle", seed 1. Floors sit 1 dB under the values measured
when the gate was written (in the comments); a change that makes caching worse fails here. Never lower a floor
to make a change pass: find out what got worse. The decisions are far from float noise: every recorded diff is
at least 0.8% (relative) away from its threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe
from cache_dit.metrics import compute_psnr
from cache_dit.testing import testbed

pytestmark = pytest.mark.skipif(
    not (testbed.WEIGHTS_DIR / "transformer.safetensors").exists(), reason="testbed weights missing"
)

TAYLOR = {
    "enable_taylorseer": True,
    "enable_encoder_taylorseer": True,
    "taylorseer_kwargs": {"n_derivatives": 1},
}
F1B0 = {"cache_type": "dbcache", "Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "warmup_steps": 4}
EVERY_OTHER = [5, 7, 9, 11, 13, 15, 17, 19, 21, 23]
THRESHOLD_012 = [4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 23, 25]

# name: (options, expected cached steps, PSNR floor)  measured PSNR in the comment
GATES = {
    "fbcache_t0.08": (
        {"cache_type": "fbcache", "residual_diff_threshold": 0.08, "warmup_steps": 4, "max_cached_steps": -1},
        EVERY_OTHER,
        49.1,  # 50.17 dB
    ),
    "dbcache_f1b0_t0.12": ({**F1B0, "residual_diff_threshold": 0.12}, THRESHOLD_012, 42.2),  # 43.20 dB
    "dbcache_f1b0_t0.12_taylorseer1": (
        {**F1B0, "residual_diff_threshold": 0.12, **TAYLOR},
        THRESHOLD_012,
        50.3,  # 51.33 dB
    ),
    "schedule_every_other_f0b0_taylorseer2": (  # the 2x preset: no block runs on a cached step
        {
            "Fn_compute_blocks": 0,
            "Bn_compute_blocks": 0,
            "compute_steps": list(range(0, 28, 2)),
            **TAYLOR,
            "taylorseer_kwargs": {"n_derivatives": 2},
        },
        list(range(1, 28, 2)),
        54.2,  # 55.28 dB
    ),
    "dbcache_f2b1_t0.12": (
        {**F1B0, "Fn_compute_blocks": 2, "Bn_compute_blocks": 1, "residual_diff_threshold": 0.12},
        THRESHOLD_012,
        42.8,  # 43.80 dB
    ),
}


@pytest.fixture(scope="module")
def testbed_run():
    torch.set_num_threads(1)
    pipe = testbed.load_testbed_pipeline()
    pipe.set_progress_bar_config(disable=True)
    prompt_embeds, pooled = testbed.testbed_prompt_embeds([2, 9])

    def run() -> np.ndarray:
        images = pipe(
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled,
            height=64,
            width=64,
            num_inference_steps=28,
            generator=torch.Generator().manual_seed(1),
            output_type="np",
        ).images
        return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)

    reference = run()
    return pipe, run, reference


@pytest.mark.parametrize("name", list(GATES))
def test_cached_steps_and_psnr_floor(testbed_run, name):
    pipe, run, reference = testbed_run
    options, expected_steps, floor = GATES[name]
    apply_cache_on_pipe(pipe, **options)
    psnr, n = compute_psnr(reference, run())
    assert cache_dit.summary(pipe).cached_steps == expected_steps
    assert n == 2 and psnr >= floor, f"{name}: PSNR {psnr:.2f} dB < floor {floor}"


def test_taylorseer_beats_plain_reuse_at_the_same_cached_steps(testbed_run):
    pipe, run, reference = testbed_run
    psnr = {}
    for name in ("dbcache_f1b0_t0.12", "dbcache_f1b0_t0.12_taylorseer1"):
        apply_cache_on_pipe(pipe, **GATES[name][0])
        psnr[name] = compute_psnr(reference, run())[0]
    assert psnr["dbcache_f1b0_t0.12_taylorseer1"] > psnr["dbcache_f1b0_t0.12"]  # measured 51.33 vs 43.20 dB


def test_dbprune_pruned_blocks_and_psnr_floor(testbed_run):
    pipe, run, reference = testbed_run
    apply_cache_on_pipe(
        pipe,
        cache_type="dbprune",
        Fn_compute_blocks=1,
        Bn_compute_blocks=1,
        residual_diff_threshold=0.08,
        warmup_steps=4,
    )
    psnr, _ = compute_psnr(reference, run())
    stats = cache_dit.summary(pipe)
    assert sum(stats.pruned_blocks) == 119 and stats.pruned_ratio == pytest.approx(35.42, abs=0.01)
    assert psnr >= 42.4  # measured 43.46 dB


def test_threshold_zero_is_bit_exact_on_the_trained_model(testbed_run):
    pipe, run, reference = testbed_run
    apply_cache_on_pipe(pipe, **F1B0, residual_diff_threshold=0.0)
    assert np.array_equal(run(), reference)
    cache_dit.disable_cache(pipe)


# calibrate on the bench's tuning inputs (4 other classes, seed 0), then the gate's input: target -> (the steps the
# calibrated schedule computes, what it forecasts, PSNR floor on the gate's input)
CALIBRATED = {
    2.0: (list(range(0, 28, 2)), "output", 56.0),  # 57.05 dB, TaylorSeer order 2 on the transformer output
    4.0: ([0, 3, 6, 8, 12, 17, 24], "output", 46.7),  # 47.77 dB, TaylorSeer order 1 on the transformer output
}


@pytest.mark.parametrize("target", list(CALIBRATED))
def test_calibrated_schedule_on_another_input(testbed_run, target):
    pipe, run, reference = testbed_run
    expected_steps, forecast, floor = CALIBRATED[target]
    prompt_embeds, pooled = testbed.testbed_prompt_embeds([0, 5, 10, 7])
    kwargs = dict(prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled, height=64, width=64)
    cache_dit.disable_cache(pipe)
    options = cache_dit.calibrate(
        pipe, {**kwargs, "num_inference_steps": 28, "output_type": "np"}, target_speedup=target, verbose=False
    )
    assert options.speedup == target and options["compute_steps"] == expected_steps
    assert options.get("taylorseer_cache_type", "residual") == forecast
    apply_cache_on_pipe(pipe, **options)
    psnr, n = compute_psnr(reference, run())
    assert cache_dit.summary(pipe).cached_steps == sorted(set(range(28)) - set(expected_steps))
    assert n == 2 and psnr >= floor, f"calibrated {target}x: PSNR {psnr:.2f} dB < floor {floor}"
