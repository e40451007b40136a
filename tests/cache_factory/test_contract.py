"""Contract tests applied to every registered model (tiny random pipelines, CPU)."""

from __future__ import annotations

import pytest
import torch

import cache_dit
from cache_dit.cache_factory import CacheType, apply_cache_on_pipe
from cache_dit.cache_factory.runner import RUNNER_ATTR
from cache_dit.testing.cases import count_block_calls

FORCE = 100.0  # a threshold every diff is below: caching is decided by warmup/max rules alone


def db_options(**overrides):
    options = {
        "cache_type": CacheType.DBCache,
        "Fn_compute_blocks": 1,
        "Bn_compute_blocks": 1,
        "residual_diff_threshold": FORCE,
        "warmup_steps": 2,
    }
    return {**options, **overrides}


def assert_untouched(pipe, original_class) -> None:
    """No trace of the cache on the pipeline, its transformer or any block."""
    assert type(pipe) is original_class
    transformer = pipe.transformer
    for attr in ("forward", "cache_context", RUNNER_ATTR):
        assert attr not in transformer.__dict__, attr
    for module in transformer.modules():
        assert "forward" not in module.__dict__


def test_threshold_zero_is_bit_exact(case):
    pipe = case.build()
    ref = case.run(pipe)
    apply_cache_on_pipe(pipe, **db_options(residual_diff_threshold=0.0, warmup_steps=0))
    out = case.run(pipe)
    assert torch.equal(out, ref)
    stats = cache_dit.summary(pipe)
    assert stats.cached_steps == [] and stats.cfg_cached_steps == []
    # every step but the first has a diff recorded, warmup or not, so users can pick thresholds from it
    assert sorted(stats.residual_diffs) == list(range(1, 8))
    if case.separate_cfg:
        assert sorted(stats.cfg_residual_diffs) == list(range(1, 8))


def test_default_options_threshold_zero_bit_exact_on_each_cache_type(case):
    pipe = case.build()
    ref = case.run(pipe)
    for cache_type in (CacheType.FBCache, CacheType.DBCache, CacheType.DBPrune):
        options = {"cache_type": cache_type, "residual_diff_threshold": 0.0}
        if cache_type is not CacheType.FBCache:
            options.update(Fn_compute_blocks=1, Bn_compute_blocks=1)
        apply_cache_on_pipe(pipe, **options)
        assert torch.equal(case.run(pipe), ref), cache_type


def test_disable_restores_bit_exact(case):
    pipe = case.build()
    original_class = type(pipe)
    ref = case.run(pipe)
    apply_cache_on_pipe(pipe, **db_options())
    cached = case.run(pipe)
    assert not torch.equal(cached, ref)
    cache_dit.disable_cache(pipe)
    assert_untouched(pipe, original_class)
    assert torch.equal(case.run(pipe), ref)
    assert cache_dit.summary(pipe).cache_type == "NONE"


def test_state_dict_and_class_name_unchanged(case):
    pipe = case.build()
    keys = list(pipe.transformer.state_dict())
    name = type(pipe).__name__
    apply_cache_on_pipe(pipe, **db_options())
    assert list(pipe.transformer.state_dict()) == keys
    assert type(pipe).__name__ == name and isinstance(pipe, type(pipe).__mro__[1])


def test_high_threshold_caches_and_stays_close(case):
    pipe = case.build()
    ref = case.run(pipe)
    apply_cache_on_pipe(pipe, **db_options(residual_diff_threshold=0.5))
    out = case.run(pipe)
    stats = cache_dit.summary(pipe)
    assert len(stats.cached_steps) > 0
    assert not torch.equal(out, ref)
    assert torch.isfinite(out).all()
    assert (out - ref).abs().mean() < 0.1  # images in [0, 1]


def test_fbcache_equals_dbcache_f1b0(case):
    pipe = case.build()
    options = {"residual_diff_threshold": 0.5, "warmup_steps": 1, "max_cached_steps": 4}
    apply_cache_on_pipe(pipe, cache_type="fbcache", **options)
    fb = case.run(pipe)
    fb_stats = cache_dit.summary(pipe)
    apply_cache_on_pipe(pipe, cache_type="dbcache", Fn_compute_blocks=1, Bn_compute_blocks=0, **options)
    db = case.run(pipe)
    assert torch.equal(fb, db)
    assert fb_stats.cached_steps == cache_dit.summary(pipe).cached_steps
    assert len(fb_stats.cached_steps) > 0


@pytest.mark.parametrize(
    "warmup,max_cached,expected", [(0, 3, [1, 2, 3]), (3, 2, [3, 4]), (5, -1, [5, 6, 7])]
)
def test_warmup_and_max_cached_steps_bound_exactly(case, warmup, max_cached, expected):
    pipe = case.build()
    apply_cache_on_pipe(pipe, **db_options(warmup_steps=warmup, max_cached_steps=max_cached))
    case.run(pipe)
    stats = cache_dit.summary(pipe)
    assert stats.cached_steps == expected  # step 0 never caches: there is nothing to compare it with
    if case.separate_cfg:
        assert stats.cfg_cached_steps == expected


@pytest.mark.parametrize("cap,expected", [(1, [1, 3, 5, 7]), (2, [1, 2, 4, 5, 7])])
def test_max_continuous_cached_steps_pattern(case, cap, expected):
    pipe = case.build()
    apply_cache_on_pipe(pipe, **db_options(warmup_steps=1, max_continuous_cached_steps=cap))
    case.run(pipe)
    stats = cache_dit.summary(pipe)
    assert stats.cached_steps == expected
    if case.separate_cfg:
        assert stats.cfg_cached_steps == expected


def test_second_call_resets_state(case):
    pipe = case.build()
    apply_cache_on_pipe(pipe, **db_options())
    case.run(pipe, steps=6)
    assert cache_dit.summary(pipe).cached_steps == [2, 3, 4, 5]
    smaller = case.run(pipe, steps=4, size=case.alt_size)
    stats = cache_dit.summary(pipe)
    assert stats.num_steps == 4 and stats.cached_steps == [2, 3]
    assert sorted(stats.residual_diffs) == [1, 2, 3]
    # nothing leaked from the first call: a fresh pipeline gives the same second result
    fresh = case.build()
    apply_cache_on_pipe(fresh, **db_options())
    assert torch.equal(case.run(fresh, steps=4, size=case.alt_size), smaller)


def test_two_pipelines_never_share_state(case):
    a, b = case.build(), case.build()
    apply_cache_on_pipe(a, **db_options(warmup_steps=2))
    apply_cache_on_pipe(b, **db_options(warmup_steps=4))
    out_a = case.run(a, steps=6)
    out_b = case.run(b, steps=6)
    assert cache_dit.summary(a).cached_steps == [2, 3, 4, 5]
    assert cache_dit.summary(b).cached_steps == [4, 5]
    assert type(a) is not type(b)  # each pipeline instance has its own call wrapper
    solo = case.build()
    apply_cache_on_pipe(solo, **db_options(warmup_steps=2))
    assert torch.equal(case.run(solo, steps=6), out_a)
    assert not torch.equal(out_a, out_b)


def test_apply_again_replaces_options(case):
    pipe = case.build()
    original_class = type(pipe)
    ref = case.run(pipe)
    apply_cache_on_pipe(pipe, **db_options(warmup_steps=2))
    apply_cache_on_pipe(pipe, **db_options(warmup_steps=6))
    case.run(pipe)
    assert cache_dit.summary(pipe).cached_steps == [6, 7]
    apply_cache_on_pipe(pipe, cache_type="none")
    assert_untouched(pipe, original_class)
    assert torch.equal(case.run(pipe), ref)


def test_failed_call_does_not_poison_the_next(case):
    pipe = case.build()
    apply_cache_on_pipe(pipe, **db_options())

    def boom(pipeline, step, timestep, kwargs):
        if step == 4:
            raise RuntimeError("interrupted")
        return kwargs

    with pytest.raises(RuntimeError, match="interrupted"):
        case.run(pipe, callback_on_step_end=boom)
    after = case.run(pipe)
    fresh = case.build()
    apply_cache_on_pipe(fresh, **db_options())
    assert torch.equal(after, case.run(fresh))
    assert cache_dit.summary(pipe).cached_steps == list(range(2, 8))


@pytest.mark.parametrize("non_compute_threshold,expected_calls_of_block_4", [(FORCE, 2), (0.0, 8)])
def test_bn_compute_blocks_ids_reuse_the_other_bn_blocks(
    case, non_compute_threshold, expected_calls_of_block_4
):
    """F1B2 with only Bn position 1 (block 5) listed: block 4 reuses its residual on cached steps when allowed."""
    pipe = case.build()
    counts, _ = count_block_calls(pipe.transformer)
    apply_cache_on_pipe(
        pipe,
        **db_options(
            Bn_compute_blocks=2,
            Bn_compute_blocks_ids=[1],
            non_compute_blocks_diff_threshold=non_compute_threshold,
        ),
    )
    case.run(pipe)
    assert cache_dit.summary(pipe).cached_steps == [2, 3, 4, 5, 6, 7]
    branches = 2 if case.separate_cfg else 1
    assert (counts[4], counts[5]) == (expected_calls_of_block_4 * branches, 8 * branches)


def test_disable_after_someone_wrapped_the_transformer_keeps_their_wrapper(case):
    """Offload hooks (accelerate) wrap `forward` as an instance attribute too; removing ours must keep theirs."""
    pipe = case.build()
    ref = case.run(pipe)
    apply_cache_on_pipe(pipe, **db_options())
    calls = []
    inner = pipe.transformer.forward

    def outer(*args, **kwargs):
        calls.append(1)
        return inner(*args, **kwargs)

    pipe.transformer.forward = outer
    with pytest.warns(RuntimeWarning, match="wrapped again"):
        cache_dit.disable_cache(pipe)
    assert pipe.transformer.forward is outer
    assert torch.equal(case.run(pipe), ref)
    assert calls
