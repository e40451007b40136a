"""The Python surface: options objects, numpy scalars, adapted defaults, logging, types and messages."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tomllib

import cache_dit
from cache_dit import CFGConfig, DBCacheConfig, DBPruneConfig, TaylorSeerConfig
from cache_dit.cache_factory import apply_cache_on_pipe, apply_cache_on_transformer
from cache_dit.cache_factory.runner import get_runner
from cache_dit.testing.cases import CASES

FLUX = CASES["flux"]  # 6 blocks (2 dual + 4 single)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pipe():
    return FLUX.build()


@pytest.fixture(autouse=True)
def _clean(pipe):
    yield
    cache_dit.disable_cache(pipe)


def _options(pipe) -> dict:
    return dict(get_runner(pipe.transformer).config.options)


def test_options_objects_equal_the_same_keywords(pipe):
    apply_cache_on_pipe(
        pipe,
        DBCacheConfig(Fn_compute_blocks=2, Bn_compute_blocks=1, residual_diff_threshold=0.2, warmup_steps=2),
        TaylorSeerConfig(enable_taylorseer=True, n_derivatives=1),
        CFGConfig(cfg_compute_first=True),
    )
    from_objects = _options(pipe)
    apply_cache_on_pipe(
        pipe,
        Fn_compute_blocks=2,
        Bn_compute_blocks=1,
        residual_diff_threshold=0.2,
        warmup_steps=2,
        enable_taylorseer=True,
        taylorseer_kwargs={"n_derivatives": 1},
        cfg_compute_first=True,
    )
    assert from_objects == _options(pipe)
    apply_cache_on_pipe(pipe, DBPruneConfig(Fn_compute_blocks=1, Bn_compute_blocks=1), warmup_steps=3)
    options = _options(pipe)
    assert options["cache_type"] is cache_dit.CacheType.DBPrune and options["warmup_steps"] == 3


@pytest.mark.parametrize(
    "objects, keywords, error, match",
    [
        ((DBCacheConfig(warmup_steps=3),), {"warmup_steps": 2}, ValueError, "'warmup_steps' is given twice"),
        ((DBCacheConfig(),), {"cache_type": "dbprune"}, ValueError, "cache_type=DBPrune conflicts"),
        ((DBCacheConfig(), DBPruneConfig()), {}, ValueError, "pass one algorithm"),
        ((DBCacheConfig(), DBCacheConfig()), {}, TypeError, "two DBCacheConfig"),
        (({"Fn_compute_blocks": 1},), {}, TypeError, "options objects must be"),
        ((DBPruneConfig(), TaylorSeerConfig(enable_taylorseer=True)), {}, ValueError, "does not apply"),
    ],
)
def test_options_objects_cannot_silently_conflict(pipe, objects, keywords, error, match):
    with pytest.raises(error, match=match):
        apply_cache_on_pipe(pipe, *objects, **keywords)
    assert get_runner(pipe.transformer) is None


def test_options_objects_validate_at_construction():
    with pytest.raises(ValueError, match="residual_diff_threshold must be >= 0"):
        DBCacheConfig(residual_diff_threshold=-1.0)
    with pytest.raises(TypeError, match="Fn_compute_blocks must be an int"):
        DBCacheConfig(Fn_compute_blocks=1.5)


def test_numpy_scalars_are_accepted_where_numbers_are(pipe):
    apply_cache_on_pipe(
        pipe,
        Fn_compute_blocks=np.int64(2),
        Bn_compute_blocks=np.int32(2),
        residual_diff_threshold=np.float32(0.25),
        Bn_compute_blocks_ids=np.array([0]),
        taylorseer_kwargs={"n_derivatives": np.int64(1)},
        enable_taylorseer=np.bool_(True),
    )
    options = _options(pipe)
    assert (options["Fn_compute_blocks"], options["Bn_compute_blocks"]) == (2, 2)
    assert type(options["Fn_compute_blocks"]) is int and options["residual_diff_threshold"] == 0.25
    assert options["enable_taylorseer"] is True
    assert cache_dit.CacheType.range(0, np.int64(8), np.int32(3)) == [0, 3, 6, 7]
    config = DBCacheConfig(Fn_compute_blocks=np.int64(3), residual_diff_threshold=np.float32(0.5))
    assert type(config.Fn_compute_blocks) is int and type(config.residual_diff_threshold) is float


def test_default_blocks_adapt_to_a_small_model_with_a_warning_at_the_callers_line(pipe):
    with pytest.warns(UserWarning, match=r"using Fn_compute_blocks=1, Bn_compute_blocks=1") as record:
        apply_cache_on_pipe(pipe)  # defaults Fn=8, Bn=8 on 6 blocks
    assert record[0].filename == __file__
    runner = get_runner(pipe.transformer)
    assert (runner.Fn, runner.Bn) == (1, 1)
    with pytest.warns(UserWarning, match=r"= 3 \+ 8 \(default: Bn_compute_blocks\).*Bn_compute_blocks=2"):
        apply_cache_on_pipe(pipe, Fn_compute_blocks=3)  # Bn shrinks to leave one middle block
    assert (get_runner(pipe.transformer).Fn, get_runner(pipe.transformer).Bn) == (3, 2)
    with pytest.warns(UserWarning, match="using Fn_compute_blocks=1, Bn_compute_blocks=1"):
        apply_cache_on_pipe(pipe, cache_type="dbprune")


def test_explicit_blocks_that_do_not_fit_still_raise(pipe):
    with pytest.raises(ValueError, match=r"8 \+ 8 = 16 exceeds the 6 transformer blocks"):
        apply_cache_on_pipe(pipe, Fn_compute_blocks=8, Bn_compute_blocks=8)
    with pytest.raises(ValueError, match=r"7 \+ 8 = 15 exceeds the 6"):
        apply_cache_on_pipe(pipe, Fn_compute_blocks=7)
    assert get_runner(pipe.transformer) is None


def test_dbprune_with_nothing_prunable_warns(pipe):
    with pytest.warns(UserWarning, match="DBPrune has no block to prune") as record:
        apply_cache_on_pipe(
            pipe,
            cache_type="dbprune",
            Fn_compute_blocks=1,
            Bn_compute_blocks=0,
            non_prune_blocks_ids=[1, 2, 3, 4, 5],
        )
    assert len(record) == 1 and record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_cache_on_pipe(pipe, cache_type="dbprune", Fn_compute_blocks=1, Bn_compute_blocks=1)


def test_runner_warnings_point_at_the_callers_line(pipe):
    with pytest.warns(RuntimeWarning, match="nothing left to cache") as record:
        apply_cache_on_pipe(pipe, Fn_compute_blocks=3, Bn_compute_blocks=3)
    assert record[0].filename == __file__


@pytest.mark.parametrize(
    "options, match",
    [
        ({"cache_type": "none", "warmup_steps": 2}, r"cache_type=NONE, which takes no other options"),
        (
            {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "Bn_compute_blocks_ids": [0]},
            r"needs Bn_compute_blocks >= 1",
        ),
    ],
)
def test_message_slips(pipe, options, match):
    with pytest.raises(ValueError, match=match) as info:
        apply_cache_on_pipe(pipe, **options)
    assert "0..-1" not in str(info.value) and "options for NONE: " not in str(info.value)


@pytest.mark.parametrize("verb", [cache_dit.disable_cache, cache_dit.summary])
@pytest.mark.parametrize("thing", ["pipe", 3, None, object()])
def test_disable_and_summary_reject_what_is_not_a_pipeline_or_transformer(verb, thing):
    with pytest.raises(TypeError, match=f"{verb.__name__} expects a diffusers pipeline"):
        verb(thing)


def test_disable_and_summary_accept_uncached_pipelines_and_transformers(pipe):
    assert cache_dit.summary(pipe).cache_type == "NONE"
    assert cache_dit.disable_cache(pipe.transformer) is pipe.transformer
    apply_cache_on_transformer(pipe.transformer, DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=1))
    assert cache_dit.summary(pipe.transformer).cache_type == "DBCache"
    cache_dit.disable_cache(pipe.transformer)


def test_verbose_logging_reports_each_decision(pipe, caplog):
    logger = logging.getLogger("cache_dit")
    assert not logger.isEnabledFor(logging.DEBUG)  # off by default
    apply_cache_on_pipe(
        pipe, Fn_compute_blocks=1, Bn_compute_blocks=1, residual_diff_threshold=10.0, warmup_steps=2
    )
    with caplog.at_level(logging.DEBUG, logger="cache_dit"):
        FLUX.run(pipe, steps=6)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("cache_dit")]
    stats = cache_dit.summary(pipe)
    assert stats.cached_steps == [2, 3, 4, 5]
    assert [line.endswith(", cached") for line in lines] == [s in stats.cached_steps for s in range(6)]
    assert lines[3] == f"step 3 cond: diff {stats.residual_diffs[3]:.4f}, cached"


def test_set_verbose_toggles_a_stderr_handler():
    logger = logging.getLogger("cache_dit")
    handlers = list(logger.handlers)
    cache_dit.set_verbose()
    try:
        assert logger.isEnabledFor(logging.DEBUG) and len(logger.handlers) == len(handlers) + 1
    finally:
        cache_dit.set_verbose(False)
    assert logger.handlers == handlers and not logger.isEnabledFor(logging.DEBUG)


def test_version_matches_pyproject_and_the_package_is_typed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cache_dit.__version__ == project["version"]
    assert project["license"] == "Apache-2.0"
    assert (Path(cache_dit.__file__).parent / "py.typed").exists()


def test_importing_cache_dit_does_not_import_torch():
    import subprocess

    code = "import sys, cache_dit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_warnings_during_a_pipeline_call_point_at_the_callers_line():
    """Past diffusers' and torch's frames: the line that called the pipeline."""
    import torch

    from cache_dit.testing import tiny

    pipe = CASES["wan"].build()
    apply_cache_on_pipe(
        pipe, Fn_compute_blocks=1, Bn_compute_blocks=1, residual_diff_threshold=100.0, warmup_steps=0
    )

    def longer_text(pipeline, step, timestep, kwargs):  # the text stream changes length after step 0
        return {"prompt_embeds": torch.cat([kwargs["prompt_embeds"]] * 2, dim=1)}

    with pytest.warns(RuntimeWarning, match="encoder \\(text\\) states changed") as record:
        pipe(
            prompt_embeds=tiny.wan_prompt_embeds(),
            height=16,
            width=16,
            num_frames=5,
            num_inference_steps=3,
            guidance_scale=1.0,
            output_type="pt",
            callback_on_step_end=longer_text,
            callback_on_step_end_tensor_inputs=["prompt_embeds"],
        )
    assert record[0].filename == __file__
