"""Bare-transformer use, and per-block side inputs (FLUX ControlNet residuals) kept intact."""

from __future__ import annotations

import torch

import cache_dit
from cache_dit.testing import tiny


def flux_inputs(seed: int = 0, tokens: int = 16, text: int = 8):
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, tokens, 16, generator=g),
        "encoder_hidden_states": torch.randn(1, text, tiny.FLUX_TEXT_DIM, generator=g),
        "pooled_projections": torch.randn(1, tiny.FLUX_POOLED_DIM, generator=g),
        "img_ids": torch.zeros(tokens, 3),
        "txt_ids": torch.zeros(text, 3),
        "return_dict": False,
    }


def controlnet_samples(seed: int, n: int, tokens: int = 16, width: int = 32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, tokens, width, generator=g) for _ in range(n)]


@torch.no_grad()
def test_controlnet_residuals_are_neither_dropped_nor_doubled():
    """Middle blocks are cached; the model's own loop still adds this step's ControlNet samples.

    Two calls with identical inputs: the second is cached (warmup 1), so its output must equal the first one's
    (the cached residual is the blocks' own, the ControlNet additions come from the loop). Dropping the
    samples or counting them twice would move the output by about their size.
    """
    transformer = tiny.tiny_flux_transformer(num_layers=2, num_single_layers=4)
    inputs = flux_inputs()
    cn = {
        "controlnet_block_samples": controlnet_samples(1, 2),
        "controlnet_single_block_samples": controlnet_samples(2, 4),
    }
    t = torch.tensor([0.9])
    ref = transformer(timestep=t, **inputs, **cn)[0]
    no_cn = transformer(timestep=t, **inputs)[0]
    assert (ref - no_cn).abs().mean() > 0.05  # the samples matter

    cache_dit.apply_cache_on_transformer(
        transformer,
        cache_type="db",
        Fn_compute_blocks=1,
        Bn_compute_blocks=1,
        residual_diff_threshold=100.0,
        warmup_steps=1,
        do_separate_classifier_free_guidance=False,  # same timestep, one branch (not a CFG pair)
    )
    with cache_dit.denoising_run(transformer):  # one run (a repeated timestep alone would start a new one)
        first = transformer(timestep=t, **inputs, **cn)[0]
        second = transformer(timestep=t, **inputs, **cn)[0]
        assert cache_dit.summary(transformer).cached_steps == [1]
        assert torch.equal(first, ref)
        torch.testing.assert_close(second, ref, rtol=1e-5, atol=1e-5)
        # and with other samples on the cached step, their (fresh) effect shows up
        other = {k: [s * 2 for s in v] for k, v in cn.items()}
        third = transformer(timestep=t, **inputs, **other)[0]
    assert cache_dit.summary(transformer).cached_steps == [1, 2]
    assert (third - ref).abs().mean() > 0.01


@torch.no_grad()
def test_bare_transformer_detects_a_new_run_from_the_timestep():
    transformer = tiny.tiny_flux_transformer()
    cache_dit.apply_cache_on_transformer(
        transformer, cache_type="fb", residual_diff_threshold=100.0, warmup_steps=1, max_cached_steps=-1
    )
    inputs = flux_inputs()
    for t in (1.0, 0.8, 0.6, 0.4):
        transformer(timestep=torch.tensor([t]), **inputs)
    assert cache_dit.summary(transformer).num_steps == 4
    assert cache_dit.summary(transformer).cached_steps == [1, 2, 3]
    for t in (1.0, 0.5):  # the timestep went up: a new run, fresh state
        transformer(timestep=torch.tensor([t]), **inputs)
    stats = cache_dit.summary(transformer)
    assert stats.num_steps == 2 and stats.cached_steps == [1]
    cache_dit.disable_cache(transformer)
    assert "forward" not in transformer.__dict__


@torch.no_grad()
def test_block_called_outside_a_transformer_call_runs_plainly():
    transformer = tiny.tiny_flux_transformer()
    block = transformer.transformer_blocks[0]
    g = torch.Generator().manual_seed(0)
    args = (
        torch.randn(1, 4, 32, generator=g),
        torch.randn(1, 3, 32, generator=g),
        torch.randn(1, 32, generator=g),
    )
    ref = block(*args)
    cache_dit.apply_cache_on_transformer(transformer, cache_type="fb", residual_diff_threshold=100.0)
    out = block(*args)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
