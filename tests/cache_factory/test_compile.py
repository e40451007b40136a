"""torch.compile on cached pipelines: every way users compile, before or after applying the cache.

Tiny FLUX (2 dual + 4 single blocks), 4 steps. Most tests count with dynamo's `CompileCounter` as the backend
(dynamo captures the same graphs as with inductor; the backend runs them eagerly, so outputs are exact); one
test compiles with inductor. What every compiled run must show:

- the cached steps (and pruned blocks) of the eager run with the same options, and an output equal to it;
- no graph break at all (the cache's decisions sit in frames dynamo skips, outside every compiled graph);
- one compiled frame per block class and input layout (FLUX: 3) and never the recompile limit on the first
  call; the second call with the same shapes compiles nothing (`set_stance("fail_on_recompile")`);
- `summary` / `disable_cache` working on the pipeline whose transformer was compiled.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe
from cache_dit.testing.cases import CASES

FLUX = CASES["flux"]
STEPS = 4
# FLUX compiles FluxTransformerBlock.forward once, FluxSingleTransformerBlock.forward twice (the first single
# block gets the concatenated text+image sequence with other strides), with or without a cache.
MAX_FRAMES = 3

DB = {"cache_type": "db", "Fn_compute_blocks": 1, "Bn_compute_blocks": 1, "warmup_steps": 1}
FORCED = {"residual_diff_threshold": 100.0, "max_continuous_cached_steps": 1}  # caches steps 1 and 3
TAYLOR = {
    "enable_taylorseer": True,
    "enable_encoder_taylorseer": True,
    "taylorseer_kwargs": {"n_derivatives": 1},
}
PRUNE = {
    "cache_type": "dbprune",
    "Fn_compute_blocks": 1,
    "Bn_compute_blocks": 1,
    "warmup_steps": 1,
    "residual_diff_threshold": 100.0,
    "residual_cache_update_interval": 2,
}
FB = {"cache_type": "fb", "warmup_steps": 1, **FORCED}
# a fixed schedule with no first/last blocks and the order mixture (weighted from step 2 on): caches step 3
SCHEDULE = {
    "cache_type": "db",
    "Fn_compute_blocks": 0,
    "Bn_compute_blocks": 0,
    "compute_steps": [0, 1, 2],
    **TAYLOR,
    "taylorseer_kwargs": {"n_derivatives": 1, "mix_orders": True},
}

# the transformer's whole output forecast (order 2): caches step 3, where no block runs
OUTPUT = {
    "cache_type": "db",
    "Fn_compute_blocks": 0,
    "Bn_compute_blocks": 0,
    "compute_steps": [0, 1, 2],
    "enable_taylorseer": True,
    "taylorseer_cache_type": "output",
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):  # hitting the limit raises
        yield
    torch._dynamo.reset()


def compile_transformer(pipe, how: str, backend) -> None:
    t = pipe.transformer
    if how == "torch.compile":
        pipe.transformer = torch.compile(t, backend=backend)
    elif how == "module.compile":
        t.compile(backend=backend)
    elif how == "compile_repeated_blocks":
        t.compile_repeated_blocks(backend=backend, fullgraph=True)
    elif how == "block.compile":
        for block in [*t.transformer_blocks, *t.single_transformer_blocks]:
            block.compile(backend=backend, fullgraph=True)
    else:
        raise AssertionError(how)


def cached_fields(stats):
    return (stats.cached_steps, stats.cfg_cached_steps, stats.pruned_blocks, stats.cfg_pruned_blocks)


def graph_breaks() -> int:
    return sum(counters["graph_break"].values())


CASES_ = [
    # (how, order, options, cfg)
    ("torch.compile", "after", {**DB, **FORCED, **TAYLOR}, False),
    ("torch.compile", "before", PRUNE, False),
    ("module.compile", "after", FB, True),
    ("module.compile", "before", {**FB, **TAYLOR}, False),
    ("compile_repeated_blocks", "after", {**DB, **FORCED}, True),
    ("compile_repeated_blocks", "before", {**DB, **FORCED, **TAYLOR}, True),
    ("compile_repeated_blocks", "after", SCHEDULE, True),
    ("torch.compile", "after", OUTPUT, True),
    ("block.compile", "after", PRUNE, True),
    (
        "block.compile",
        "before",
        {**DB, **FORCED, "Bn_compute_blocks": 2, "Bn_compute_blocks_ids": [0]},
        False,
    ),
]


@pytest.mark.parametrize(
    "how,order,options,cfg",
    CASES_,
    ids=[f"{h}-{o}-{opt['cache_type']}{'-cfg' if c else ''}" for h, o, opt, c in CASES_],
)
def test_compiled_matches_eager_without_breaks_or_recompiles(how, order, options, cfg):
    pipe = FLUX.build()
    uncached = FLUX.run(pipe, steps=STEPS, cfg=cfg)
    apply_cache_on_pipe(pipe, **options)
    eager = FLUX.run(pipe, steps=STEPS, cfg=cfg)
    expected = cached_fields(cache_dit.summary(pipe))
    assert any(expected), "the options must cache something for this test to mean anything"
    cache_dit.disable_cache(pipe)

    counter = CompileCounter()
    if order == "before":
        compile_transformer(pipe, how, counter)
        apply_cache_on_pipe(pipe, **options)
    else:
        apply_cache_on_pipe(pipe, **options)
        compile_transformer(pipe, how, counter)

    out = FLUX.run(pipe, steps=STEPS, cfg=cfg)
    assert cached_fields(cache_dit.summary(pipe)) == expected
    torch.testing.assert_close(out, eager, rtol=0, atol=1e-6)
    assert graph_breaks() == 0, dict(counters["graph_break"])
    assert 1 <= counter.frame_count <= MAX_FRAMES

    frames = counter.frame_count
    with torch.compiler.set_stance("fail_on_recompile"):
        again = FLUX.run(pipe, steps=STEPS, cfg=cfg)
    assert counter.frame_count == frames
    torch.testing.assert_close(again, eager, rtol=0, atol=1e-6)
    assert cached_fields(cache_dit.summary(pipe)) == expected

    cache_dit.disable_cache(pipe)
    assert cache_dit.summary(pipe).cache_type == "NONE"
    torch.testing.assert_close(FLUX.run(pipe, steps=STEPS, cfg=cfg), uncached, rtol=0, atol=1e-6)


def test_inductor_block_compile_stays_close_to_eager():
    """Inductor on the dual-stream blocks only (one compiled frame keeps this test short)."""
    pipe = FLUX.build()
    options = {**DB, **FORCED, **TAYLOR}
    apply_cache_on_pipe(pipe, **options)
    eager = FLUX.run(pipe, steps=STEPS)
    expected = cached_fields(cache_dit.summary(pipe))
    for block in pipe.transformer.transformer_blocks:
        block.compile(fullgraph=True)  # inductor
    out = FLUX.run(pipe, steps=STEPS)
    assert cached_fields(cache_dit.summary(pipe)) == expected == ([1, 3], [], [], [])
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
    assert graph_breaks() == 0 and counters["stats"]["unique_graphs"] == 1
    with torch.compiler.set_stance("fail_on_recompile"):
        FLUX.run(pipe, steps=STEPS)


def test_new_shapes_recompile_as_the_uncompiled_cache_free_model_would():
    """Frames compiled over 32px, 48px, 32px again: the same count with and without the cache."""

    def frames_over_sizes(options) -> int:
        torch._dynamo.reset()
        pipe = FLUX.build()
        if options:
            apply_cache_on_pipe(pipe, **options)
        counter = CompileCounter()
        pipe.transformer.compile_repeated_blocks(backend=counter)
        for size in (32, FLUX.alt_size, 32):
            FLUX.run(pipe, steps=STEPS, size=size)
        if options:
            assert cache_dit.summary(pipe).cached_steps == [1, 3]
        return counter.frame_count

    assert frames_over_sizes({**DB, **FORCED}) == frames_over_sizes(None)


def test_set_compile_configs_raises_limits_and_returns_the_previous():
    config = torch._dynamo.config
    before = (config.recompile_limit, config.accumulated_recompile_limit)
    previous = cache_dit.set_compile_configs(recompile_limit=48)
    try:
        assert previous == {"recompile_limit": before[0], "accumulated_recompile_limit": before[1]}
        assert config.recompile_limit == 48
        assert config.accumulated_recompile_limit == max(before[1], 48)
    finally:
        cache_dit.set_compile_configs(**previous)
    assert (config.recompile_limit, config.accumulated_recompile_limit) == before
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises((ValueError, TypeError), match="recompile_limit"):
            cache_dit.set_compile_configs(recompile_limit=bad)
    assert config.recompile_limit == before[0]


def test_wan_regional_compile_one_graph_for_all_blocks_both_cfg_branches():
    wan = CASES["wan"]
    pipe = wan.build()
    apply_cache_on_pipe(pipe, **DB, **FORCED, **TAYLOR)
    eager = wan.run(pipe, steps=STEPS)
    expected = cached_fields(cache_dit.summary(pipe))
    assert expected[:2] == ([1, 3], [1, 3])
    counter = CompileCounter()
    pipe.transformer.compile_repeated_blocks(backend=counter, fullgraph=True)
    out = wan.run(pipe, steps=STEPS)
    assert cached_fields(cache_dit.summary(pipe)) == expected
    torch.testing.assert_close(out, eager, rtol=0, atol=1e-6)
    assert counter.frame_count == 1 and graph_breaks() == 0
    with torch.compiler.set_stance("fail_on_recompile"):
        wan.run(pipe, steps=STEPS)
