"""Bad options raise a clear error naming the option, and leave the pipeline exactly as it was."""

from __future__ import annotations

import pytest
import torch

import cache_dit
from cache_dit.cache_factory import CacheType, apply_cache_on_pipe, build_config
from cache_dit.cache_factory.runner import RUNNER_ATTR

BASE = {"cache_type": "dbcache", "Fn_compute_blocks": 1, "Bn_compute_blocks": 1}

BAD_OPTIONS = [
    ({"residual_diff_thresold": 0.1}, ValueError, "did you mean 'residual_diff_threshold'"),
    ({"cache_type": "turbo"}, ValueError, "cache_type='turbo'"),
    ({"cache_type": 3}, TypeError, "cache_type must be"),
    ({"residual_diff_threshold": -0.1}, ValueError, "residual_diff_threshold must be >= 0"),
    ({"residual_diff_threshold": float("nan")}, ValueError, "residual_diff_threshold must be finite"),
    ({"residual_diff_threshold": "0.1"}, TypeError, "residual_diff_threshold must be a float"),
    ({"Fn_compute_blocks": 0}, ValueError, "Fn_compute_blocks=0 needs compute_steps"),
    ({"Fn_compute_blocks": -1}, ValueError, "Fn_compute_blocks must be >= 1"),
    (
        {"compute_steps": [0, 3], "warmup_steps": 2},
        ValueError,
        "warmup_steps.*does not apply with compute_steps",
    ),
    ({"compute_steps": [0, -3]}, ValueError, "compute_steps must hold ids >= 0"),
    ({"compute_steps": "0,3"}, TypeError, "compute_steps must be a list of ints"),
    ({"Fn_compute_blocks": 1.5}, TypeError, "Fn_compute_blocks must be an int"),
    ({"Bn_compute_blocks": -1}, ValueError, "Bn_compute_blocks must be >= 0"),
    ({"Fn_compute_blocks": 4, "Bn_compute_blocks": 3}, ValueError, r"Fn_compute_blocks \+ Bn_compute_blocks"),
    ({"warmup_steps": -2}, ValueError, "warmup_steps must be >= 0"),
    ({"warmup_steps": True}, TypeError, "warmup_steps must be an int"),
    ({"max_cached_steps": -5}, ValueError, r"max_cached_steps must be >= 0 or -1"),
    ({"max_continuous_cached_steps": 0}, ValueError, "max_continuous_cached_steps must be >= 1"),
    ({"Bn_compute_blocks_ids": [0, 1]}, ValueError, "outside the last Bn_compute_blocks=1"),
    ({"Bn_compute_blocks_ids": "0"}, TypeError, "Bn_compute_blocks_ids must be a list"),
    ({"Bn_compute_blocks_ids": [0, 0]}, ValueError, "duplicate"),
    ({"non_compute_blocks_diff_threshold": -1}, ValueError, "non_compute_blocks_diff_threshold"),
    ({"enable_taylorseer": 1}, TypeError, "enable_taylorseer must be a bool"),
    ({"taylorseer_cache_type": "latents"}, ValueError, "taylorseer_cache_type='latents'"),
    ({"taylorseer_kwargs": {"n_derivatives": -1}}, ValueError, "n_derivatives"),
    ({"taylorseer_kwargs": {"order": 2}}, ValueError, "unknown key 'order'"),
    ({"do_separate_classifier_free_guidance": "yes"}, TypeError, "do_separate_classifier_free_guidance"),
    ({"max_pruned_steps": 3}, ValueError, "'max_pruned_steps' does not apply to cache_type=DBCache"),
    (
        {"cache_type": "fb", "Fn_compute_blocks": 2},
        ValueError,
        "Fn_compute_blocks=2 is not allowed with cache_type",
    ),
    (
        {"cache_type": "dbprune", "enable_taylorseer": True},
        ValueError,
        "does not apply to cache_type=DBPrune",
    ),
    ({"cache_type": "dbprune", "non_prune_blocks_ids": [9]}, ValueError, "non_prune_blocks_ids has ids"),
    (
        {"cache_type": "dbprune", "max_dynamic_prune_threshold": 0.01},
        ValueError,
        "max_dynamic_prune_threshold",
    ),
    (
        {"cache_type": "dbprune", "residual_cache_update_interval": 0},
        ValueError,
        "residual_cache_update_interval",
    ),
    (
        {"cache_type": "dbprune", "dynamic_prune_threshold_relax_ratio": 0},
        ValueError,
        "relax_ratio must be > 0",
    ),
]


@pytest.mark.parametrize("bad,error,match", BAD_OPTIONS, ids=[str(b) for b, _, _ in BAD_OPTIONS])
def test_bad_option_raises_and_leaves_pipeline_untouched(case, bad, error, match):
    pipe = case.build()
    original_class = type(pipe)
    ref = case.run(pipe, steps=3)
    options = {**BASE, **bad}
    if options["cache_type"] == "fb":
        options.pop("Bn_compute_blocks")
    with pytest.raises(error, match=match):
        apply_cache_on_pipe(pipe, **options)
    assert type(pipe) is original_class
    assert RUNNER_ATTR not in pipe.transformer.__dict__
    assert all("forward" not in m.__dict__ for m in pipe.transformer.modules())
    assert torch.equal(case.run(pipe, steps=3), ref)


def test_failed_reapply_keeps_the_previous_cache(case):
    pipe = case.build()
    apply_cache_on_pipe(pipe, **BASE, residual_diff_threshold=100.0, warmup_steps=2)
    first = case.run(pipe, steps=5)
    with pytest.raises(ValueError):
        apply_cache_on_pipe(pipe, **BASE, warmup_steps=-1)
    assert torch.equal(case.run(pipe, steps=5), first)
    assert cache_dit.summary(pipe).cached_steps == [2, 3, 4]


def test_unsupported_pipeline_names_class_and_supported_ones():
    class Toy:
        transformer = torch.nn.Linear(2, 2)

    with pytest.raises(
        ValueError, match=r"Linear is not supported.*FluxTransformer2DModel.*WanTransformer3DModel"
    ):
        apply_cache_on_pipe(Toy())
    with pytest.raises(TypeError, match="expects a diffusers pipeline with a `transformer`"):
        apply_cache_on_pipe(object())


def test_options_left_out_take_the_cache_type_defaults():
    config = build_config(cache_type="fb")
    assert config.dbcache.Fn_compute_blocks == 1 and config.dbcache.Bn_compute_blocks == 0
    assert config.dbcache.residual_diff_threshold == 0.08
    assert config.dbcache.warmup_steps == 8 and config.dbcache.max_cached_steps == 8
    config = build_config(warmup_steps=3)  # cache_type defaults to DBCache
    assert config.cache_type is CacheType.DBCache
    assert (config.dbcache.Fn_compute_blocks, config.dbcache.Bn_compute_blocks) == (8, 8)
    assert config.dbcache.residual_diff_threshold == 0.12 and config.dbcache.warmup_steps == 3
    assert config.dbcache.max_cached_steps == -1
    prune = build_config(cache_type="dbprune").dbprune
    assert prune.residual_diff_threshold == 0.08 and prune.max_dynamic_prune_threshold == pytest.approx(0.16)
    assert prune.dynamic_prune_threshold_relax_ratio == 1.25 and prune.residual_cache_update_interval == 1
