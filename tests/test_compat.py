"""cache-dit 1.x's `enable_cache` forms on the trained testbed: each runs unchanged and gives exactly what this
library's own options give (the same cached steps, bit-equal images); renamed options are pointed at in one
warning line; 1.x features this library lacks raise a clear error."""

from __future__ import annotations

import warnings

import pytest
import torch

import cache_dit
from cache_dit import BasicCacheConfig, DBCacheConfig, DBPruneConfig, TaylorSeerCalibratorConfig
from cache_dit.cache_factory import apply_cache_on_pipe, apply_cache_on_transformer
from cache_dit.cache_factory import config as native
from cache_dit.cache_factory.runner import get_runner
from cache_dit.testing import testbed as tb

STEPS = 8


@pytest.fixture(scope="module")
def testbed():
    torch.set_num_threads(1)
    pipe = tb.load_testbed_pipeline()
    pipe.set_progress_bar_config(disable=True)
    embeds, pooled = tb.testbed_prompt_embeds([0])

    def generate():
        return pipe(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            height=64,
            width=64,
            num_inference_steps=STEPS,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images

    yield pipe, generate
    cache_dit.disable_cache(pipe)


def _run(testbed, apply):
    """(image, cached steps, resolved options, warnings) after `apply(pipe)`."""
    pipe, generate = testbed
    cache_dit.disable_cache(pipe)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply(pipe)
    image = generate()
    runner = get_runner(pipe.transformer)
    options = dict(runner.config.options)
    return image, cache_dit.summary(pipe).cached_steps, options, [str(w.message) for w in caught]


def _same(testbed, v1_apply, native_options):
    image, cached, options, caught = _run(testbed, v1_apply)
    ref_image, ref_cached, ref_options, _ = _run(
        testbed, lambda pipe: apply_cache_on_pipe(pipe, **native_options)
    )
    assert cached == ref_cached
    assert options == ref_options
    assert torch.equal(image, ref_image)
    return cached, options, caught


def test_enable_cache_with_no_config_takes_1x_defaults(testbed):
    """1.x's one-liner: DBCache F8B0, threshold 0.08, warmup 8 (this library's Bn 8 / 0.12 do not leak in)."""
    cached, options, caught = _same(
        testbed,
        cache_dit.enable_cache,
        dict(Bn_compute_blocks=0, residual_diff_threshold=0.08, warmup_steps=8),
    )
    assert (options["Fn_compute_blocks"], options["Bn_compute_blocks"]) == (8, 0)
    assert (options["residual_diff_threshold"], options["warmup_steps"]) == (0.08, 8)
    assert cached == [] and caught == []  # warmup 8 of 8 steps: nothing to cache, nothing renamed


def test_dbcache_and_taylorseer_calibrator_configs(testbed):
    def v1(pipe):
        cache_dit.enable_cache(
            pipe,
            cache_config=DBCacheConfig(
                Fn_compute_blocks=1,
                Bn_compute_blocks=0,
                max_warmup_steps=2,
                max_cached_steps=-1,
                max_continuous_cached_steps=2,
                residual_diff_threshold=0.2,
            ),
            calibrator_config=TaylorSeerCalibratorConfig(taylorseer_order=1),
        )

    cached, options, caught = _same(
        testbed,
        v1,
        dict(
            Fn_compute_blocks=1,
            Bn_compute_blocks=0,
            warmup_steps=2,
            max_continuous_cached_steps=2,
            residual_diff_threshold=0.2,
            enable_taylorseer=True,
            enable_encoder_taylorseer=True,
            taylorseer_kwargs={"n_derivatives": 1},
        ),
    )
    assert cached == [2, 4, 6]  # measured on the trained testbed (a cached step's successor computes)
    assert caught == [
        "cache-dit: enable_cache maps cache-dit 1.x's options: max_warmup_steps=2 -> warmup_steps=2; "
        "TaylorSeerCalibratorConfig(taylorseer_order=1) -> enable_taylorseer=True, enable_encoder_taylorseer=True, "
        "taylorseer_kwargs={'n_derivatives': 1}; this library's call: cache_dit.apply_cache_on_pipe(pipe, "
        "cache_type='DBCache', Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.2, warmup_steps=2, "
        "max_cached_steps=-1, max_continuous_cached_steps=2, enable_taylorseer=True, enable_encoder_taylorseer=True, "
        "taylorseer_cache_type='residual', taylorseer_kwargs={'n_derivatives': 1})"
    ]


def test_the_older_keyword_form(testbed):
    """1.x's enable_cache(pipe, Fn_compute_blocks=..., enable_taylorseer=True, taylorseer_order=...)."""

    def v1(pipe):
        cache_dit.enable_cache(
            pipe,
            Fn_compute_blocks=1,
            Bn_compute_blocks=0,
            max_warmup_steps=2,
            residual_diff_threshold=0.2,
            enable_taylorseer=True,
            enable_encoder_taylorseer=False,
            taylorseer_order=2,
        )

    cached, _, _ = _same(
        testbed,
        v1,
        dict(
            Fn_compute_blocks=1,
            Bn_compute_blocks=0,
            warmup_steps=2,
            residual_diff_threshold=0.2,
            enable_taylorseer=True,
            taylorseer_kwargs={"n_derivatives": 2},
        ),
    )
    assert cached == [2, 4, 6]


def test_a_static_step_mask_is_a_fixed_schedule(testbed):
    mask = [1, 1, 1, 0, 1, 0, 0, 1]

    def v1(pipe):
        cache_dit.enable_cache(
            pipe,
            cache_config=DBCacheConfig(
                Fn_compute_blocks=1,
                Bn_compute_blocks=0,
                steps_computation_mask=mask,
                steps_computation_policy="static",
                num_inference_steps=STEPS,
            ),
        )

    cached, options, caught = _same(
        testbed, v1, dict(Fn_compute_blocks=1, Bn_compute_blocks=0, compute_steps=[0, 1, 2, 4, 7])
    )
    assert cached == [3, 5, 6] and options["compute_steps"] == [0, 1, 2, 4, 7]
    assert "steps_computation_mask + 'static' -> compute_steps=[0, 1, 2, 4, 7]" in caught[0]
    assert "num_inference_steps=8: not needed (each pipeline call is one run)" in caught[0]


def test_dbprune_config_with_1x_names(testbed):
    def v1(pipe):
        cache_dit.enable_cache(
            pipe,
            cache_config=DBPruneConfig(
                Fn_compute_blocks=1,
                Bn_compute_blocks=1,
                max_warmup_steps=2,
                residual_diff_threshold=0.3,
                non_prune_block_ids=[5],
            ),
        )

    _, options, caught = _same(
        testbed,
        v1,
        dict(
            cache_type="DBPrune",
            Fn_compute_blocks=1,
            Bn_compute_blocks=1,
            warmup_steps=2,
            residual_diff_threshold=0.3,
            non_prune_blocks_ids=[5],
        ),
    )
    pruned = cache_dit.summary(testbed[0]).pruned_blocks
    assert sum(pruned) > 0 and pruned[:2] == [0, 0]  # nothing pruned in the warmup, some blocks after it
    assert "non_prune_block_ids=[5] -> non_prune_blocks_ids=[5]" in caught[0]


def test_this_librarys_own_configs_pass_through(testbed):
    ours = DBCacheConfig(
        Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.2, warmup_steps=2
    )
    assert type(ours) is native.DBCacheConfig  # this library's names: this library's object
    cached, _, caught = _same(
        testbed,
        lambda pipe: cache_dit.enable_cache(pipe, cache_config=ours),
        dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.2, warmup_steps=2),
    )
    assert cached == [2, 4] and caught == []
    # only names both versions share: this library's object, and its defaults differ from 1.x's: said once
    shared = DBCacheConfig(Fn_compute_blocks=1, max_continuous_cached_steps=2)
    _, _, options, caught = _run(testbed, lambda pipe: cache_dit.enable_cache(pipe, cache_config=shared))
    assert (options["Bn_compute_blocks"], options["residual_diff_threshold"]) == (8, 0.12)
    assert (
        "Bn_compute_blocks=8, residual_diff_threshold=0.12 when left out (cache-dit 1.x: Bn_compute_blocks=0, "
        in caught[0]
    )


def test_transformer_only_with_num_inference_steps(testbed):
    """1.x's transformer-only form: num_inference_steps marks the runs (this library's own option for it)."""
    pipe, generate = testbed
    cache_dit.disable_cache(pipe)
    config = DBCacheConfig(
        Fn_compute_blocks=1,
        Bn_compute_blocks=0,
        max_warmup_steps=2,
        residual_diff_threshold=0.2,
        num_inference_steps=STEPS,
    )
    with pytest.warns(
        UserWarning, match=r"cache_dit\.apply_cache_on_transformer\(transformer, .*num_inference_steps=8"
    ):
        assert cache_dit.enable_cache(pipe.transformer, cache_config=config) is pipe.transformer
    image = generate()
    cached = cache_dit.summary(pipe.transformer).cached_steps
    cache_dit.disable_cache(pipe.transformer)
    apply_cache_on_transformer(
        pipe.transformer,
        Fn_compute_blocks=1,
        Bn_compute_blocks=0,
        warmup_steps=2,
        residual_diff_threshold=0.2,
        num_inference_steps=STEPS,
    )
    reference = generate()
    assert cached == cache_dit.summary(pipe.transformer).cached_steps == [2, 4]
    assert torch.equal(image, reference)
    cache_dit.disable_cache(pipe.transformer)


def test_configs_keep_1x_names_defaults_and_helpers():
    config = DBCacheConfig(max_warmup_steps=4, Fn_compute_blocks=2)
    assert type(config) is BasicCacheConfig and isinstance(config, DBCacheConfig)
    assert (config.Fn_compute_blocks, config.Bn_compute_blocks, config.residual_diff_threshold) == (
        2,
        0,
        0.08,
    )
    assert config.given == {"max_warmup_steps", "Fn_compute_blocks"}
    assert repr(config) == "BasicCacheConfig(Fn_compute_blocks=2, max_warmup_steps=4)"
    assert config.update(residual_diff_threshold=0.1, max_cached_steps=None).residual_diff_threshold == 0.1
    assert config.as_dict()["max_cached_steps"] == -1
    assert TaylorSeerCalibratorConfig().taylorseer_order == 1
    assert isinstance(native.DBPruneConfig(), DBPruneConfig) and isinstance(
        DBPruneConfig(), native.DBPruneConfig
    )


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda p: cache_dit.enable_cache(p, cache_config=DBCacheConfig(warmup_interval=2)), ValueError,
         "cache-dit 1.x's warmup_interval=2 is not available in this cache-dit"),
        (lambda p: cache_dit.enable_cache(p, calibrator_config=TaylorSeerCalibratorConfig(calibrator_type="foca")),
         ValueError, "calibrator_type='foca' is not available"),
        (lambda p: cache_dit.enable_cache(p, cache_config=DBCacheConfig(steps_computation_mask=[1, 0, 1])), ValueError,
         "steps_computation_policy='dynamic' (the threshold deciding the mask's 0 steps) is not available"),
        (lambda p: cache_dit.enable_cache(p, cache_config=DBCacheConfig(steps_computation_mask=[1, 2],
                                                                        steps_computation_policy="static")),
         ValueError, "steps_computation_mask must be a list of 0 (cache) and 1 (compute)"),
        (lambda p: cache_dit.enable_cache(p, cache_config=DBCacheConfig(max_accumulated_residual_diff_threshold=0.5)),
         ValueError, "max_accumulated_residual_diff_threshold is not available"),
        (lambda p: cache_dit.enable_cache(p, params_modifiers=[object()]), ValueError,
         "params_modifiers (ParamsModifier) is not available in this cache-dit; per-denoiser options go in"),
        (lambda p: cache_dit.enable_cache(p, parallelism_config=object()), ValueError, "enable_parallelism"),
        (lambda p: cache_dit.enable_cache(p, attention_backend="sage"), ValueError, "set_attention_backend"),
        (lambda p: cache_dit.enable_cache(object()), TypeError, "BlockAdapter is not available"),
        (lambda p: cache_dit.enable_cache(p, max_warmup_step=2), TypeError,
         "unknown option 'max_warmup_step'; did you mean 'max_warmup_steps'?"),
        (lambda p: DBCacheConfig(max_warmup_steps=2, warmup_steps=2), TypeError,
         "mixes this library's names (warmup_steps) with cache-dit 1.x's (max_warmup_steps)"),
        (lambda p: BasicCacheConfig(Fn_compute_block=1), TypeError, "did you mean 'Fn_compute_blocks'?"),
        (lambda p: cache_dit.enable_cache(p, cache_config=DBPruneConfig(max_warmup_steps=2,
                                                                        max_continuous_cached_steps=2)),
         ValueError, "max_continuous_cached_steps with DBPrune is not available"),
        (lambda p: cache_dit.FoCaCalibratorConfig, AttributeError, "cache_dit.FoCaCalibratorConfig is cache-dit 1.x's"),
    ],
)  # fmt: skip
def test_what_this_library_lacks_is_a_clear_error(testbed, call, error, message):
    pipe, _ = testbed
    cache_dit.disable_cache(pipe)
    with pytest.raises(error) as raised:
        call(pipe)
    assert message in str(raised.value)
    assert get_runner(pipe.transformer) is None  # nothing was applied
