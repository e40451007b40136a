"""Reliability: runs are marked (no stale reuse across runs), any stream's layout change computes fully, one
owner per cache (threads), pickling and copying, diffusers' own caches refused, group offloading, and a soak."""

from __future__ import annotations

import copy
import io
import pickle
import random
import threading
import warnings

import pytest
import torch
from diffusers import FluxPipeline

import cache_dit
from cache_dit.cache_factory import CacheType, apply_cache_on_pipe
from cache_dit.cache_factory.runner import RUNNER_ATTR
from cache_dit.cache_factory.state import BlockBuffers
from cache_dit.testing import tiny
from cache_dit.testing.cases import CASES

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


def flux_inputs(seed: int = 0, tokens: int = 16, text: int = 8, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(batch, tokens, 16, generator=g),
        "encoder_hidden_states": torch.randn(batch, text, tiny.FLUX_TEXT_DIM, generator=g),
        "pooled_projections": torch.randn(batch, tiny.FLUX_POOLED_DIM, generator=g),
        "img_ids": torch.zeros(tokens, 3),
        "txt_ids": torch.zeros(text, 3),
        "return_dict": False,
    }


def wan_inputs(seed: int = 0, text: int = 8):
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, 16, 2, 4, 4, generator=g),
        "encoder_hidden_states": torch.randn(1, text, tiny.WAN_TEXT_DIM, generator=g),
        "return_dict": False,
    }


def run_steps(transformer, timesteps, inputs):
    """The caller's own loop (inputs fixed: the decisions come from the warmup/max rules)."""
    return [transformer(timestep=torch.tensor([float(t)]), **inputs)[0] for t in timesteps]


def assert_no_cache_left(pipe, original_class) -> None:
    assert type(pipe) is original_class
    for attr in ("forward", "cache_context", "enable_cache", RUNNER_ATTR):
        assert attr not in pipe.transformer.__dict__, attr
    for module in pipe.transformer.modules():
        assert "forward" not in module.__dict__


# ---------------------------------------------------------------------------------------------------------
# 1. Bare transformer: each run gets fresh state
# ---------------------------------------------------------------------------------------------------------

HALF_RUN = (1.0, 0.93, 0.86, 0.79, 0.72, 0.648)  # stops half way
IMG2IMG_RUN = (0.508, 0.38, 0.25, 0.12)  # starts below where the half run stopped


@torch.no_grad()
def test_denoising_run_marks_a_run_that_starts_below_the_previous_one():
    inputs = flux_inputs()
    fresh = tiny.tiny_flux_transformer()
    cache_dit.apply_cache_on_transformer(fresh, **db_options())
    with cache_dit.denoising_run(fresh):
        expected = run_steps(fresh, IMG2IMG_RUN, inputs)
    assert cache_dit.summary(fresh).cached_steps == [2, 3]

    transformer = tiny.tiny_flux_transformer()
    cache_dit.apply_cache_on_transformer(transformer, **db_options())
    with cache_dit.denoising_run(transformer):
        run_steps(transformer, HALF_RUN, inputs)
    assert cache_dit.summary(transformer).num_steps == 6
    with cache_dit.denoising_run(transformer):
        outs = run_steps(transformer, IMG2IMG_RUN, inputs)
    stats = cache_dit.summary(transformer)
    assert stats.num_steps == 4 and stats.cached_steps == [2, 3]  # warmup honoured again
    assert all(torch.equal(a, b) for a, b in zip(outs, expected))
    # unmarked calls after a marked run start a new run of their own
    outs = run_steps(transformer, IMG2IMG_RUN, inputs)
    assert cache_dit.summary(transformer).cached_steps == [2, 3]
    assert all(torch.equal(a, b) for a, b in zip(outs, expected))


@torch.no_grad()
def test_num_inference_steps_counts_runs():
    inputs = flux_inputs()
    transformer = tiny.tiny_flux_transformer()
    cache_dit.apply_cache_on_transformer(transformer, num_inference_steps=4, **db_options())
    first = run_steps(transformer, (1.0, 0.75, 0.5, 0.25), inputs)
    assert cache_dit.summary(transformer).cached_steps == [2, 3]
    second = run_steps(transformer, (0.2, 0.15, 0.1, 0.05), inputs)  # timesteps keep falling: still a new run
    stats = cache_dit.summary(transformer)
    assert stats.num_steps == 4 and stats.cached_steps == [2, 3]
    plain = tiny.tiny_flux_transformer()
    assert torch.equal(first[0], plain(timestep=torch.tensor([1.0]), **inputs)[0])
    assert torch.equal(second[0], plain(timestep=torch.tensor([0.2]), **inputs)[0])


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_num_inference_steps_is_validated(bad):
    with pytest.raises(ValueError, match="num_inference_steps"):
        cache_dit.apply_cache_on_transformer(tiny.tiny_flux_transformer(), num_inference_steps=bad)


def test_num_inference_steps_on_a_pipeline_says_where_it_belongs():
    pipe = CASES["flux"].build()
    original_class = type(pipe)
    with pytest.raises(ValueError, match="apply_cache_on_transformer"):
        apply_cache_on_pipe(pipe, num_inference_steps=4)
    assert_no_cache_left(pipe, original_class)


@torch.no_grad()
def test_heuristic_repeated_timestep_starts_a_new_run():
    """Two 1-step runs at t = 1: the second must not reuse the first one's residual."""
    transformer = tiny.tiny_flux_transformer()
    cache_dit.apply_cache_on_transformer(transformer, **db_options(warmup_steps=0))
    plain = tiny.tiny_flux_transformer()
    for seed in (0, 1):
        inputs = flux_inputs(seed)
        out = transformer(timestep=torch.tensor([1.0]), **inputs)[0]
        stats = cache_dit.summary(transformer)
        assert stats.num_steps == 1 and stats.cached_steps == []
        assert torch.equal(out, plain(timestep=torch.tensor([1.0]), **inputs)[0])


@torch.no_grad()
@pytest.mark.parametrize("change", [{"batch": 2}, {"tokens": 24}])
def test_heuristic_changed_latents_start_a_new_run(change):
    transformer = tiny.tiny_flux_transformer()
    cache_dit.apply_cache_on_transformer(transformer, **db_options())
    run_steps(transformer, (1.0, 0.8, 0.6), flux_inputs())
    assert cache_dit.summary(transformer).cached_steps == [2]
    other = flux_inputs(**change)
    out = run_steps(transformer, (0.5, 0.4, 0.3), other)  # timesteps keep falling, latents changed
    stats = cache_dit.summary(transformer)
    assert stats.num_steps == 3 and stats.cached_steps == [2]
    assert torch.equal(out[0], tiny.tiny_flux_transformer()(timestep=torch.tensor([0.5]), **other)[0])


@torch.no_grad()
def test_heuristic_keeps_the_two_cfg_calls_of_a_step_in_one_run():
    transformer = tiny.tiny_flux_transformer()
    cache_dit.apply_cache_on_transformer(transformer, **db_options(do_separate_classifier_free_guidance=True))
    cond, uncond = flux_inputs(0), flux_inputs(1)
    for t in (1.0, 0.75, 0.5, 0.25):  # both calls of a step share the timestep and the latents
        uncond["hidden_states"] = cond["hidden_states"]
        transformer(timestep=torch.tensor([t]), **uncond)
        transformer(timestep=torch.tensor([t]), **cond)
    stats = cache_dit.summary(transformer)
    assert stats.num_steps == 4 and stats.cfg_num_steps == 4
    assert stats.cached_steps == [2, 3] and stats.cfg_cached_steps == [2, 3]


def test_denoising_run_without_a_cache_does_nothing():
    transformer = tiny.tiny_flux_transformer()
    with cache_dit.denoising_run(transformer):
        pass
    assert RUNNER_ATTR not in transformer.__dict__


# ---------------------------------------------------------------------------------------------------------
# 2. A layout change in any stream the cache holds computes the step fully
# ---------------------------------------------------------------------------------------------------------


def test_block_buffers_match_both_streams():
    hidden, encoder = torch.zeros(1, 4, 8), torch.zeros(1, 3, 8)
    stored = BlockBuffers(
        hidden, hidden, None, encoder_in_layout=(encoder.shape, encoder.dtype, encoder.device)
    )
    assert stored.matches(hidden.clone(), encoder.clone())
    assert not stored.matches(hidden, torch.zeros(1, 5, 8))  # text length
    assert not stored.matches(hidden, encoder.double())  # dtype
    assert not stored.matches(hidden, None)
    assert not stored.matches(torch.zeros(2, 4, 8), encoder)  # batch


TEXT_CASES = {
    "flux": (tiny.tiny_flux_transformer, flux_inputs),
    "wan": (tiny.tiny_wan_transformer, wan_inputs),
}


@torch.no_grad()
@pytest.mark.parametrize("model", sorted(TEXT_CASES))
@pytest.mark.parametrize(
    "options",
    [
        db_options(warmup_steps=0),
        db_options(
            warmup_steps=0,
            Bn_compute_blocks=2,
            Bn_compute_blocks_ids=[0],
            non_compute_blocks_diff_threshold=FORCE,
        ),
        {
            "cache_type": CacheType.DBPrune,
            "Fn_compute_blocks": 1,
            "Bn_compute_blocks": 1,
            "residual_diff_threshold": FORCE,
            "warmup_steps": 0,
        },
    ],
    ids=["dbcache", "dbcache-bn-reuse", "dbprune"],
)
def test_text_length_change_within_a_run_computes_fully(model, options):
    build, make_inputs = TEXT_CASES[model]
    plain = build()
    transformer = build()
    # one call per step here (Wan's default is two, cond and uncond)
    cache_dit.apply_cache_on_transformer(transformer, do_separate_classifier_free_guidance=False, **options)
    short, long = make_inputs(text=8), make_inputs(text=12)
    long["hidden_states"] = short["hidden_states"]
    prune = options["cache_type"] is CacheType.DBPrune
    with cache_dit.denoising_run(transformer), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        transformer(timestep=torch.tensor([1.0]), **short)
        out = transformer(timestep=torch.tensor([0.9]), **long)[0]  # text length changed: compute fully
        stats = cache_dit.summary(transformer)
        assert stats.cached_steps == [] and stats.pruned_blocks in ([], [0, 0])
        assert len(caught) == 1 and "changed shape/dtype/device" in str(caught[0].message)
        transformer(timestep=torch.tensor([0.8]), **long)  # same layout again: caching resumes
    assert torch.equal(out, plain(timestep=torch.tensor([0.9]), **long)[0])
    stats = cache_dit.summary(transformer)
    if prune:
        assert stats.pruned_blocks[:2] == [0, 0] and stats.pruned_blocks[2] > 0
    else:
        assert stats.cached_steps == [2]


@torch.no_grad()
def test_warnings_come_once_per_call_not_once_per_runner():
    transformer = tiny.tiny_flux_transformer()
    cache_dit.apply_cache_on_transformer(transformer, **db_options(warmup_steps=0))
    texts = (8, 12, 8, 12)  # three changes in each run
    for _ in range(2):
        with cache_dit.denoising_run(transformer), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for t, text in zip((1.0, 0.8, 0.6, 0.4), texts):
                inputs = flux_inputs(text=text)
                transformer(timestep=torch.tensor([t]), **inputs)
        assert [str(w.message) for w in caught] == [
            "cache-dit: encoder (text) states changed shape/dtype/device between steps of one call; "
            "computing fully"
        ]


# ---------------------------------------------------------------------------------------------------------
# 3. One cache, one owner at a time
# ---------------------------------------------------------------------------------------------------------


def flux_from_pipe(pipe):
    """A second pipeline sharing pipe's transformer (its own scheduler: schedulers keep per-call state)."""
    other = FluxPipeline.from_pipe(pipe, scheduler=copy.deepcopy(pipe.scheduler))
    other.set_progress_bar_config(disable=True)
    return other


def test_concurrent_call_on_a_shared_transformer_raises_and_leaves_the_running_call_intact():
    case = CASES["flux"]
    fresh = case.build()
    apply_cache_on_pipe(fresh, **db_options())
    expected = case.run(fresh, steps=6)
    expected_stats = cache_dit.summary(fresh)

    pipe = case.build()
    apply_cache_on_pipe(pipe, **db_options())
    other = flux_from_pipe(pipe)
    apply_cache_on_pipe(other, **db_options())
    inside, tried = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold(p, step, t, kwargs):  # step callback: the first call is mid-run while the others try
        if step == 2:
            inside.set()
            tried.wait(30)
        return kwargs

    def intrude():
        inside.wait(30)
        for attempt in (
            lambda: case.run(other, steps=6),
            lambda: pipe.transformer(timestep=torch.tensor([0.5]), **flux_inputs(tokens=16)),
        ):
            try:
                attempt()
            except RuntimeError as e:
                errors.append(e)
        tried.set()

    thread = threading.Thread(target=intrude)
    thread.start()
    out = case.run(pipe, steps=6, callback_on_step_end=hold)
    thread.join()
    assert len(errors) == 2
    assert all("another thread" in str(e) and "one after another" in str(e) for e in errors)
    assert torch.equal(out, expected)
    assert cache_dit.summary(pipe) == expected_stats
    # the refused pipeline works once the first call is done
    assert torch.equal(case.run(other, steps=6), expected)


def test_sequential_from_pipe_pipelines_share_the_cache_correctly():
    case = CASES["flux"]
    pipe = case.build()
    apply_cache_on_pipe(pipe, **db_options())
    plain_other = flux_from_pipe(pipe)  # not patched itself: its calls are caught by the run heuristic
    expected = {}
    for steps in (4, 6):
        fresh = case.build()
        apply_cache_on_pipe(fresh, **db_options())
        expected[steps] = (case.run(fresh, steps=steps), cache_dit.summary(fresh))
    for p, steps in ((pipe, 6), (plain_other, 4), (plain_other, 6), (pipe, 4), (plain_other, 6)):
        out = case.run(p, steps=steps)
        assert torch.equal(out, expected[steps][0])
        assert cache_dit.summary(p) == expected[steps][1]


def test_deepcopied_pipelines_run_concurrently():
    case = CASES["flux"]
    pipe = case.build()
    apply_cache_on_pipe(pipe, **db_options())
    expected = case.run(pipe, steps=6)
    copies = [pipe, copy.deepcopy(pipe)]
    outs: list = [None, None]

    def go(i):
        outs[i] = case.run(copies[i], steps=6)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(o, expected) for o in outs)


# ---------------------------------------------------------------------------------------------------------
# 4. Pickle and deepcopy
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_cached_pipeline_pickles_and_copies(case, how):
    pipe = case.build()
    original_class = type(pipe)
    ref = case.run(pipe, steps=6)
    if how == "pickle":
        try:
            pickle.dumps(pipe)
        except (AttributeError, TypeError, pickle.PicklingError) as error:
            # after a call, transformers' CLIP vision model (Wan I2V) holds local hooks: the uncached
            # pipeline cannot be pickled either, and the cached one fails the same way
            apply_cache_on_pipe(pipe, **db_options())
            with pytest.raises(type(error)):
                pickle.dumps(pipe)
            return
    apply_cache_on_pipe(pipe, **db_options())
    cached = case.run(pipe, steps=6)
    stats = cache_dit.summary(pipe)
    clone = pickle.loads(pickle.dumps(pipe)) if how == "pickle" else copy.deepcopy(pipe)
    assert type(clone).__name__ == original_class.__name__ and isinstance(clone, original_class)
    assert clone.transformer is not pipe.transformer
    assert cache_dit.summary(clone) == stats  # the last call's stats travel along
    assert torch.equal(case.run(clone, steps=6), cached)
    assert cache_dit.summary(clone) == stats
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache_dit.disable_cache(clone)
    assert_no_cache_left(clone, original_class)
    assert torch.equal(case.run(clone, steps=6), ref)
    assert torch.equal(case.run(pipe, steps=6), cached)  # the original keeps its own cache


@torch.no_grad()
def test_cached_transformer_survives_torch_save():
    transformer = tiny.tiny_flux_transformer()
    cache_dit.apply_cache_on_transformer(transformer, num_inference_steps=4, **db_options())
    buffer = io.BytesIO()
    torch.save(transformer, buffer)  # pickle protocol 2
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    inputs = flux_inputs()
    timesteps = (1.0, 0.75, 0.5, 0.25)
    assert all(
        torch.equal(a, b)
        for a, b in zip(run_steps(loaded, timesteps, inputs), run_steps(transformer, timesteps, inputs))
    )
    assert cache_dit.summary(loaded).cached_steps == [2, 3]
    cache_dit.disable_cache(loaded)
    assert not any("forward" in m.__dict__ for m in loaded.modules())


# ---------------------------------------------------------------------------------------------------------
# 5. diffusers' own caches are refused, in either order
# ---------------------------------------------------------------------------------------------------------


def test_diffusers_cache_then_ours_raises_and_changes_nothing():
    from diffusers.hooks import FirstBlockCacheConfig

    case = CASES["flux"]
    pipe = case.build()
    original_class = type(pipe)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    theirs = case.run(pipe, steps=6)
    with pytest.raises(RuntimeError, match=r"diffusers' own cache .*transformer.disable_cache\(\)"):
        apply_cache_on_pipe(pipe, **db_options())
    assert type(pipe) is original_class and RUNNER_ATTR not in pipe.transformer.__dict__
    assert torch.equal(case.run(pipe, steps=6), theirs)
    pipe.transformer.disable_cache()
    apply_cache_on_pipe(pipe, **db_options())  # fine once theirs is gone
    case.run(pipe, steps=6)
    assert cache_dit.summary(pipe).cached_steps == [2, 3, 4, 5]


def test_ours_then_diffusers_cache_raises():
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    case = CASES["flux"]
    pipe = case.build()
    apply_cache_on_pipe(pipe, **db_options())
    cached = case.run(pipe, steps=6)
    with pytest.raises(RuntimeError, match=r"cache_dit.disable_cache\(pipe\)"):
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    assert torch.equal(case.run(pipe, steps=6), cached)
    # hooks applied directly (no enable_cache) are caught at the next call
    apply_first_block_cache(pipe.transformer, FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(RuntimeError, match="fbc_leader_block_hook"):
        case.run(pipe, steps=6)
    with pytest.warns(RuntimeWarning, match="wrapped again"):  # their hooks sit on top of ours
        cache_dit.disable_cache(pipe)
    assert RUNNER_ATTR not in pipe.transformer.__dict__ and "enable_cache" not in pipe.transformer.__dict__


# ---------------------------------------------------------------------------------------------------------
# 6. Group offloading (CPU -> CPU: the hooks run, no accelerator needed)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
@pytest.mark.parametrize("order", ["offload-first", "cache-first"])
def test_group_offloading_threshold_zero_exact_and_caching_caches(case, order, offload_type):
    pytest.importorskip("accelerate")  # diffusers' group offloading moves tensors with accelerate
    from diffusers.hooks import apply_group_offloading

    pipe = case.build()
    ref = case.run(pipe, steps=6)
    apply_cache_on_pipe(pipe, **db_options())
    cached, cached_stats = case.run(pipe, steps=6), cache_dit.summary(pipe)

    offloaded = case.build()
    cpu = torch.device("cpu")

    def offload():
        per_group = {"num_blocks_per_group": 1} if offload_type == "block_level" else {}
        apply_group_offloading(
            offloaded.transformer,
            onload_device=cpu,
            offload_device=cpu,
            offload_type=offload_type,
            **per_group,
        )

    if order == "offload-first":
        offload()
    apply_cache_on_pipe(offloaded, **db_options(residual_diff_threshold=0.0))
    if order == "cache-first":
        offload()
    assert torch.equal(case.run(offloaded, steps=6), ref)
    with warnings.catch_warnings():  # cache-first: the old wrappers stay inside the offload hooks
        warnings.simplefilter("ignore")
        apply_cache_on_pipe(offloaded, **db_options())
    assert torch.equal(case.run(offloaded, steps=6), cached)
    assert cache_dit.summary(offloaded) == cached_stats


# ---------------------------------------------------------------------------------------------------------
# 7. Soak: one cached pipeline, 20 varied calls, each against a fresh pipeline
# ---------------------------------------------------------------------------------------------------------

SOAK_OPTIONS = [
    db_options(),
    {"cache_type": CacheType.FBCache, "residual_diff_threshold": 0.3, "warmup_steps": 1},
    db_options(enable_taylorseer=True, taylorseer_kwargs={"n_derivatives": 1}, max_continuous_cached_steps=2),
    {
        "cache_type": CacheType.DBPrune,
        "Fn_compute_blocks": 1,
        "Bn_compute_blocks": 1,
        "residual_diff_threshold": 0.3,
        "warmup_steps": 1,
    },
]


class _Interrupt(Exception):
    pass


def test_soak_twenty_varied_calls_match_a_fresh_pipeline():
    """Size, steps 4-12, batch 1-2, CFG on/off, options re-applied every 5 calls, and a call interrupted from
    a step callback every 7: every completed call equals a fresh pipeline's, outputs and stats."""
    case = CASES["flux"]
    rng = random.Random(0)
    pipe = case.build()
    options = SOAK_OPTIONS[0]
    compared = skipped = 0
    for i in range(20):
        if i % 5 == 0:
            options = SOAK_OPTIONS[(i // 5) % len(SOAK_OPTIONS)]
            apply_cache_on_pipe(pipe, **options)
        kwargs = {
            "steps": rng.randint(4, 12),
            "size": rng.choice((32, 48)),
            "cfg": rng.random() < 0.5,
            "seed": i,
            "num_images_per_prompt": rng.choice((1, 2)),
        }
        if i % 7 == 6:

            def interrupt(p, step, t, kw):
                if step == 2:
                    raise _Interrupt
                return kw

            with pytest.raises(_Interrupt):
                case.run(pipe, callback_on_step_end=interrupt, **kwargs)
            continue
        out, stats = case.run(pipe, **kwargs), cache_dit.summary(pipe)
        fresh = case.build()
        apply_cache_on_pipe(fresh, **options)
        assert torch.equal(out, case.run(fresh, **kwargs)), (i, kwargs)
        assert stats == cache_dit.summary(fresh), (i, kwargs)
        assert stats.num_steps == kwargs["steps"]
        compared += 1
        skipped += len(stats.cached_steps) + len(stats.cfg_cached_steps) + sum(stats.pruned_blocks)
    assert compared == 18
    assert skipped > 100  # the caches did cache (cached steps + pruned blocks: 209 when written)
