"""Pipelines with several denoisers (Wan 2.2: `transformer` for high noise, `transformer_2` for low noise)."""

from __future__ import annotations

import pytest
import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe
from cache_dit.cache_factory.runner import RUNNER_ATTR
from cache_dit.testing import tiny
from cache_dit.testing.cases import CASES

FORCED = dict(
    cache_type="DBCache",
    Fn_compute_blocks=1,
    Bn_compute_blocks=1,
    residual_diff_threshold=100.0,
    warmup_steps=0,
)


wan22 = tiny.tiny_wan22_pipeline


def run(pipe):
    return CASES["wan"].run(pipe, steps=8)


def test_both_denoisers_are_cached_each_with_its_own_steps():
    pipe = wan22()
    ref = run(pipe)
    apply_cache_on_pipe(pipe, **{**FORCED, "residual_diff_threshold": 0.0})
    assert torch.equal(run(pipe), ref)
    apply_cache_on_pipe(pipe, **FORCED)
    out = run(pipe)
    high, low = cache_dit.summary(pipe), cache_dit.summary(pipe, denoiser="transformer_2")
    # shift=7 keeps t >= 950 for steps 0-1 (transformer), then transformer_2 runs steps 2-7; each model's first
    # step has nothing stored yet, so it computes
    assert (high.num_steps, low.num_steps) == (2, 6)
    assert high.cached_steps == [1]
    assert low.cached_steps == [3, 4, 5, 6, 7]
    assert high.cfg_cached_steps == high.cached_steps and low.cfg_cached_steps == low.cached_steps
    assert not torch.equal(out, ref)
    cache_dit.disable_cache(pipe)
    for module in (pipe.transformer, pipe.transformer_2):
        assert RUNNER_ATTR not in module.__dict__ and "forward" not in module.__dict__
    assert torch.equal(run(pipe), ref)


def test_per_denoiser_options():
    pipe = wan22()
    apply_cache_on_pipe(pipe, **FORCED, per_denoiser={"transformer_2": False})
    run(pipe)
    assert cache_dit.summary(pipe).cached_steps
    assert cache_dit.summary(pipe, denoiser="transformer_2").cache_type == "NONE"
    apply_cache_on_pipe(pipe, **FORCED, per_denoiser={"transformer_2": {"warmup_steps": 5}})
    run(pipe)
    assert cache_dit.summary(pipe).cached_steps == [1]
    assert cache_dit.summary(pipe, denoiser="transformer_2").cached_steps == [5, 6, 7]


@pytest.mark.parametrize(
    "per,error,match",
    [
        (
            {"transformer_3": {}},
            ValueError,
            "per_denoiser names 'transformer_3'.*allowed: transformer, transformer_2",
        ),
        (
            {"transformer_2": 1},
            TypeError,
            r"per_denoiser\['transformer_2'\] must be an options dict or False",
        ),
        ({"transformer_2": {"warmup_stepz": 1}}, ValueError, "did you mean 'warmup_steps'"),
    ],
)
def test_bad_per_denoiser_options_change_nothing(per, error, match):
    pipe = wan22()
    cls = type(pipe)
    with pytest.raises(error, match=match):
        apply_cache_on_pipe(pipe, **FORCED, per_denoiser=per)
    assert type(pipe) is cls
    assert RUNNER_ATTR not in pipe.transformer.__dict__ and RUNNER_ATTR not in pipe.transformer_2.__dict__


class _ChunkedLoops:
    """A pipeline-like object that runs one denoising loop per chunk in one call (as chunked/autoregressive
    video pipelines do): the timesteps restart at each chunk."""

    def __init__(self):
        from cache_dit.testing.toy import toy_dit

        self.transformer = toy_dit()

    @torch.no_grad()
    def __call__(self, seeds=(0, 1), steps=4):
        outs = []
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            x, text = torch.randn(1, 16, 8, generator=g), torch.randn(1, 5, 12, generator=g)
            for step in range(steps):
                x = x - 0.2 * self.transformer(x, text, torch.tensor([1000.0 - 200 * step]))
            outs.append(x)
        return outs


TOY = dict(
    blocks=[
        dict(path="stages.dual", hidden="hidden", encoder="context", returns=("hidden", "encoder")),
        dict(path="stages.joint", hidden="tokens", encoder=None, returns="hidden"),
    ]
)


def test_several_denoising_loops_in_one_call_start_fresh():
    options = dict(FORCED, warmup_steps=1)
    pipe = _ChunkedLoops()
    apply_cache_on_pipe(pipe, **options, adapter=TOY)
    _, second = pipe(seeds=(0, 1))
    assert cache_dit.summary(pipe).cached_steps == [1, 2, 3]  # the last loop, warmup honoured again
    alone = _ChunkedLoops()
    apply_cache_on_pipe(alone, **options, adapter=TOY)
    (only,) = alone(seeds=(1,))
    assert torch.equal(second, only)  # nothing of the first chunk's residuals leaked into the second


class _MarkedChunks:
    """Chunked loops whose calls carry diffusers' marks with a step index (no timestep read needed)."""

    def __init__(self):
        from cache_dit.testing.tiny import tiny_flux_transformer

        self.transformer = tiny_flux_transformer()

    @torch.no_grad()
    def __call__(self, seeds=(0, 1), steps=4):
        from tests.cache_factory.test_transformer import flux_inputs

        outs = []
        for seed in seeds:
            inputs = flux_inputs(seed=seed)
            for step in range(steps):
                with self.transformer.cache_context("cond", step_index=step):
                    inputs["hidden_states"] = (
                        inputs["hidden_states"]
                        - 0.2 * self.transformer(timestep=torch.tensor([1.0 - 0.2 * step]), **inputs)[0]
                    )
            outs.append(inputs["hidden_states"])
        return outs


def test_marked_loops_restart_on_the_step_index():
    options = dict(FORCED, warmup_steps=1)
    pipe = _MarkedChunks()
    apply_cache_on_pipe(pipe, **options)
    _, second = pipe(seeds=(0, 1))
    assert cache_dit.summary(pipe).cached_steps == [1, 2, 3]
    alone = _MarkedChunks()
    apply_cache_on_pipe(alone, **options)
    (only,) = alone(seeds=(1,))
    assert torch.equal(second, only)
