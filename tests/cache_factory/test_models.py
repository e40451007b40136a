"""What the contract suite does not cover, per model: conditioning inputs, CFG styles in `summary()`,
DBPrune and TaylorSeer staying finite, and the registry's error message."""

from __future__ import annotations

import pytest
import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe
from cache_dit.cache_factory.adapters import find_adapter, supported_models
from cache_dit.cache_factory.state import CallState
from cache_dit.cache_factory.stats import CacheStats
from cache_dit.testing.cases import CASES, MODEL_CASES, count_block_calls

FORCE = 100.0
FORCED_DB = {
    "cache_type": "db",
    "Fn_compute_blocks": 1,
    "Bn_compute_blocks": 1,
    "residual_diff_threshold": FORCE,
    "warmup_steps": 2,
}
CONDITIONED = [(c.name, kw) for c in MODEL_CASES for kw in c.conditioning]


def test_every_seed_pipeline_is_registered():
    pipelines = {p for pipes in supported_models().values() for p in pipes}
    for name in (
        "FluxPipeline",
        "FluxFillPipeline",
        "MochiPipeline",
        "CogVideoXPipeline",
        "CogVideoXImageToVideoPipeline",
        "WanPipeline",
        "WanImageToVideoPipeline",
        "HunyuanVideoPipeline",
    ):
        assert name in pipelines, name
    for case in MODEL_CASES:  # every case's transformer resolves to an adapter with its block count
        transformer = case.build().transformer
        assert len(find_adapter(transformer).blocks(transformer)) == case.num_blocks, case.name


def test_unknown_transformer_names_itself_and_every_supported_model():
    class Pipe:
        transformer = torch.nn.Linear(2, 2)

    with pytest.raises(ValueError) as info:
        apply_cache_on_pipe(Pipe())
    message = str(info.value)
    assert "Linear" in message
    for cls in supported_models():
        assert cls in message


@pytest.mark.parametrize("name,kwarg", CONDITIONED, ids=[f"{n}-{k}" for n, k in CONDITIONED])
def test_conditioning_reaches_the_cached_pipeline(name, kwarg):
    """Another first/last frame or mask changes the cached output, and only it decides that output."""
    case = CASES[name]
    other = case.conditioning[kwarg](case.size, 7)
    pipe = case.build()
    apply_cache_on_pipe(pipe, **FORCED_DB)
    default = case.run(pipe)
    assert cache_dit.summary(pipe).cached_steps == [2, 3, 4, 5, 6, 7]
    changed = case.run(pipe, **{kwarg: other})
    assert cache_dit.summary(pipe).cached_steps == [2, 3, 4, 5, 6, 7]
    assert not torch.equal(changed, default)
    fresh = case.build()  # nothing of the first call's conditioning is left in the cache
    apply_cache_on_pipe(fresh, **FORCED_DB)
    assert torch.equal(case.run(fresh, **{kwarg: other}), changed)


def test_dbprune_and_taylorseer_stay_finite(case):
    pipe = case.build()
    ref = case.run(pipe)
    apply_cache_on_pipe(pipe, **{**FORCED_DB, "cache_type": "dbprune"})
    pruned = case.run(pipe)
    # blocks 1-4 pruned from step 2 on: 6 of 8 steps, 4 of 6 blocks
    assert cache_dit.summary(pipe).pruned_ratio == pytest.approx(100 * 4 * 6 / (6 * 8))
    assert torch.isfinite(pruned).all() and not torch.equal(pruned, ref)
    apply_cache_on_pipe(
        pipe,
        **FORCED_DB,
        max_continuous_cached_steps=1,
        enable_taylorseer=True,
        enable_encoder_taylorseer=True,
        taylorseer_kwargs={"n_derivatives": 1},
    )
    forecast = case.run(pipe)
    assert cache_dit.summary(pipe).cached_steps == [2, 4, 6]
    assert torch.isfinite(forecast).all() and not torch.equal(forecast, ref)


BATCHED = [c.name for c in MODEL_CASES if c.batched_cfg]


@pytest.mark.parametrize("name", BATCHED)
def test_batched_cfg_is_one_branch_with_one_decision_per_step(name):
    """Mochi/CogVideoX run cond+uncond as one call of batch 2: one branch, one decision for both halves."""
    case = CASES[name]
    pipe = case.build()
    counts, inputs = count_block_calls(pipe.transformer)
    apply_cache_on_pipe(pipe, **FORCED_DB)
    case.run(pipe)
    stats = cache_dit.summary(pipe)
    assert list(stats.branches) == ["cond_uncond"] and stats.branches["cond_uncond"].batched_cfg
    assert stats.num_steps == 8 and stats.cached_steps == [2, 3, 4, 5, 6, 7]
    assert sorted(stats.residual_diffs) == list(range(1, 8))
    assert stats.cfg_num_steps == 0 and stats.cfg_cached_steps == []
    assert counts[2] == 2  # a middle block: computed at steps 0 and 1 only, for both halves at once
    assert all(x.shape[0] == 2 for x in inputs[2])
    assert "[cond_uncond] steps: 8, cached: 6" in str(stats) and "one decision for the whole batch" in str(
        stats
    )


def test_hunyuan_video_true_cfg_uses_two_marked_branches():
    case = CASES["hunyuan_video"]
    pipe = case.build()
    ref = case.run(pipe, cfg=True)
    apply_cache_on_pipe(pipe, **{**FORCED_DB, "residual_diff_threshold": 0.0})
    assert torch.equal(case.run(pipe, cfg=True), ref)
    apply_cache_on_pipe(pipe, **FORCED_DB)
    case.run(pipe)
    assert list(cache_dit.summary(pipe).branches) == ["cond"]
    case.run(pipe, cfg=True)
    stats = cache_dit.summary(pipe)
    assert list(stats.branches) == ["cond", "uncond"]
    assert stats.cached_steps == stats.cfg_cached_steps == [2, 3, 4, 5, 6, 7]
    assert stats.num_steps == stats.cfg_num_steps == 8


def _call_with(*names: str) -> CallState:
    call = CallState()
    for i, name in enumerate(names):
        branch = call.branch(name)
        branch.calls = 4
        branch.cached_steps = [2 + i]
        branch.residual_diffs = {1: 0.1 * (i + 1)}
    return call


def test_summary_maps_guider_branch_names_to_cond_and_uncond():
    stats = CacheStats.from_call("DBCache", _call_with("pred_cond", "pred_uncond"))
    assert (stats.cached_steps, stats.cfg_cached_steps) == ([2], [3])
    assert stats.residual_diffs == {1: 0.1} and stats.cfg_residual_diffs == {1: 0.2}
    assert list(stats.branches) == ["pred_cond", "pred_uncond"]
    text = str(stats)
    assert "[pred_cond] steps: 4, cached: 1 [2]" in text and "[pred_uncond] steps: 4, cached: 1 [3]" in text


def test_summary_keeps_every_branch_whatever_its_name():
    one = CacheStats.from_call("DBCache", _call_with("video"))
    assert one.cached_steps == [2] and one.num_steps == 4  # a lone branch is the conditional one
    three = CacheStats.from_call("DBCache", _call_with("cond", "uncond", "image_only"))
    assert (three.cached_steps, three.cfg_cached_steps) == ([2], [3])
    assert three.branches["image_only"].cached_steps == [4]
    assert "[image_only] steps: 4, cached: 1 [4]" in str(three)
    # the stats are a snapshot: changing them does not change the runner's state
    call = _call_with("cond")
    stats = CacheStats.from_call("DBCache", call)
    stats.cached_steps.append(99)
    stats.branches["cond"].cached_steps.append(99)
    assert call.branches["cond"].cached_steps == [2]
