"""Host syncs per transformer call: none where no decision needs one, at most one where a threshold decides.

A device-to-host sync (`.item()`, `bool(tensor)`, `.tolist()`, `.cpu()`, `nonzero`, ...) stalls an accelerator's
queue until it drains, so a cache that adds one per block forfeits much of what it skips. The counter is
bench/gpu_bench.py's `SyncCounter`: a TorchFunctionMode that counts every torch call reading tensor values on the
host, made inside the transformer's call (forward pre/post hooks), as if every tensor were on a GPU; on a CUDA
machine the last test also runs the sync-free modes under `torch.cuda.set_sync_debug_mode("error")`.

What is asserted, per transformer call (CFG: per branch):

- uncached, a fixed schedule (`compute_steps`, any Fn/Bn/TaylorSeer) and the output forecast
  (`taylorseer_cache_type="output"`): 0;
- the threshold gate (DBCache/FBCache): 1 per call once the branch has a residual to compare (0 on its first
  call), whatever Fn, Bn, TaylorSeer and CFG; with `cfg_diff_compute_separate=False` one per step for both
  branches; `Bn_compute_blocks_ids`: +1 per reusable Bn block on a cached step;
- DBPrune: one per prunable block from its warm-up on (a per-block gate): `(blocks - Fn - Bn - never) x steps`;
- a bare transformer: marked runs (`denoising_run` + `cache_context`) 0; unmarked calls 1 (the timestep read
  that tells runs, or CFG branches, apart).

"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe, apply_cache_on_transformer
from cache_dit.testing import testbed
from cache_dit.testing.tiny import flux_prompt_embeds, tiny_flux_transformer

STEPS = 5
BLOCKS = 12  # the testbed: 4 dual + 8 single FLUX blocks


def _load_sync_counter() -> type:
    path = Path(__file__).resolve().parents[2] / "bench" / "gpu_bench.py"
    name = "gpu_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].SyncCounter


SyncCounter = _load_sync_counter()


def _line(path: str, text: str) -> int:
    """The line of `text` in a cache_dit source file (where a counted sync is expected to come from)."""
    source = Path(cache_dit.__file__).parent.joinpath(path).read_text().splitlines()
    return next(i for i, line in enumerate(source, 1) if text in line)


_SYNC_LINE = _line("parallel/sync.py", "return float(relative_l1(current, previous).item())")


@pytest.fixture(scope="module")
def pipe():
    return testbed.load_testbed_pipeline()


def run_counted(pipe, options, cfg=False, steps=STEPS):
    """Syncs of each transformer call of one pipeline call (FLUX with CFG: cond, uncond, cond, ...)."""
    cache_dit.disable_cache(pipe)
    if options is not None:
        apply_cache_on_pipe(pipe, **options)
    prompt, pooled = testbed.testbed_prompt_embeds([0])
    kwargs = {"prompt_embeds": prompt, "pooled_prompt_embeds": pooled}
    if cfg:
        neg, neg_pooled = testbed.testbed_prompt_embeds([testbed.NULL_CLASS_ID])
        kwargs.update(
            true_cfg_scale=2.0, negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled
        )
    counter = SyncCounter()
    try:
        with counter.around(pipe.transformer):
            pipe(
                **kwargs,
                height=testbed.IMAGE_SIZE,
                width=testbed.IMAGE_SIZE,
                num_inference_steps=steps,
                output_type="latent",
                generator=torch.Generator().manual_seed(0),
            )
        stats = cache_dit.summary(pipe)
    finally:
        cache_dit.disable_cache(pipe)
    assert len(counter.per_call) == steps * (2 if cfg else 1)
    return counter, stats


def by_branch(per_call, cfg):
    """(cond calls, uncond calls): FluxPipeline runs cond then uncond in every step."""
    return (per_call[0::2], per_call[1::2]) if cfg else (per_call, [])


TS1 = {
    "enable_taylorseer": True,
    "enable_encoder_taylorseer": True,
    "taylorseer_kwargs": {"n_derivatives": 1},
}
TS2_MIX = {
    "enable_taylorseer": True,
    "enable_encoder_taylorseer": True,
    "taylorseer_kwargs": {"n_derivatives": 2, "mix_orders": True},
}


@pytest.mark.parametrize("cfg", [False, True], ids=["one-branch", "cfg"])
def test_uncached_transformer_makes_no_sync(pipe, cfg):
    counter, _ = run_counted(pipe, None, cfg)
    assert counter.total == 0, counter.sites


@pytest.mark.parametrize(
    "fn,bn,taylor,cfg",
    [(0, 0, TS1, False), (0, 0, TS2_MIX, True), (1, 1, {}, True), (2, 0, TS2_MIX, False), (1, 2, TS1, True)],
    ids=["F0B0-ts1", "F0B0-ts2mix-cfg", "F1B1-reuse-cfg", "F2B0-ts2mix", "F1B2-ts1-cfg"],
)
def test_fixed_schedule_makes_no_sync(pipe, fn, bn, taylor, cfg):
    options = {"Fn_compute_blocks": fn, "Bn_compute_blocks": bn, "compute_steps": [0, 2, 4], **taylor}
    counter, stats = run_counted(pipe, options, cfg)
    assert counter.per_call == [0] * len(counter.per_call), counter.sites
    assert stats.cached_steps == [1, 3]  # the cached path ran
    assert stats.cfg_cached_steps == ([1, 3] if cfg else [])


@pytest.mark.parametrize("order,cfg", [(1, False), (2, True)], ids=["ts1", "ts2-cfg"])
def test_output_forecast_makes_no_sync(pipe, order, cfg):
    options = {
        "Fn_compute_blocks": 0,
        "Bn_compute_blocks": 0,
        "compute_steps": [0, 2, 4],
        "enable_taylorseer": True,
        "taylorseer_cache_type": "output",
        "taylorseer_kwargs": {"n_derivatives": order},
    }
    counter, stats = run_counted(pipe, options, cfg)
    assert counter.per_call == [0] * len(counter.per_call), counter.sites
    assert stats.cached_steps == [1, 3]


GATE = {"residual_diff_threshold": 100.0, "warmup_steps": 1}  # every step after the first is cached


@pytest.mark.parametrize(
    "fn,bn,taylor,cfg",
    [
        (1, 0, {}, "off"),
        (1, 0, TS1, "separate"),
        (2, 1, TS2_MIX, "off"),
        (3, 3, {}, "separate"),
        (2, 1, TS1, "shared"),
        (1, 0, {}, "shared"),
    ],
    ids=["F1B0", "F1B0-ts1-cfg", "F2B1-ts2mix", "F3B3-cfg", "F2B1-ts1-cfg-shared", "F1B0-cfg-shared"],
)
def test_threshold_gate_syncs_at_most_once_per_step(pipe, fn, bn, taylor, cfg):
    """One read of the first Fn blocks' residual diff per call (none on a branch's first call: nothing to
    compare); `cfg_diff_compute_separate=False`: the first call of a step decides for both, one read per step."""
    options = {"Fn_compute_blocks": fn, "Bn_compute_blocks": bn, **GATE, **taylor}
    if cfg == "shared":
        options["cfg_diff_compute_separate"] = False
    counter, stats = run_counted(pipe, options, cfg != "off")
    cond, uncond = by_branch(counter.per_call, cfg != "off")
    assert max(counter.per_call) == 1
    assert cond == [0] + [1] * (STEPS - 1), counter.sites
    assert uncond == {"off": [], "separate": [0] + [1] * (STEPS - 1), "shared": [0] * STEPS}[cfg]
    assert set(counter.sites) == {f"item at cache_dit/parallel/sync.py:{_SYNC_LINE}"}
    assert stats.cached_steps == list(range(1, STEPS))


def test_bn_reuse_adds_one_sync_per_reusable_block_on_cached_steps(pipe):
    """Bn_compute_blocks_ids=[0] of Bn=2: the last block may reuse its residual, decided by its own diff."""
    options = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 2, "Bn_compute_blocks_ids": [0], **GATE}
    counter, stats = run_counted(pipe, options)
    assert stats.cached_steps == [1, 2, 3, 4]
    assert counter.per_call == [0, 2, 2, 2, 2], counter.sites


@pytest.mark.parametrize(
    "never,dynamic,cfg",
    [([], False, False), ([], True, True), ([4, 5], False, True)],
    ids=["F1B1", "F1B1-dynamic-cfg", "F1B1-never-4-5-cfg"],
)
def test_dbprune_syncs_once_per_prunable_block(pipe, never, dynamic, cfg):
    """DBPrune decides per block: one read per prunable block per call from its warm-up on, none before."""
    options = {
        "cache_type": "DBPrune",
        "Fn_compute_blocks": 1,
        "Bn_compute_blocks": 1,
        "residual_diff_threshold": 0.3,
        "warmup_steps": 2,
        "non_prune_blocks_ids": never,
        "enable_dynamic_prune_threshold": dynamic,
    }
    counter, stats = run_counted(pipe, options, cfg)
    prunable = BLOCKS - 2 - len(never)
    for branch in by_branch(counter.per_call, cfg):
        if branch:
            assert branch == [0, 0] + [prunable] * (STEPS - 2), counter.sites
    assert sum(stats.pruned_blocks) > 0  # it pruned: the reuse path ran too


@pytest.mark.parametrize(
    "options,uncacheable",
    [
        ({"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.0}, STEPS),
        (
            {
                "Fn_compute_blocks": 1,
                "Bn_compute_blocks": 0,
                "residual_diff_threshold": 100.0,
                "warmup_steps": 3,
            },
            3,
        ),
    ],
    ids=["threshold-0", "warmup-steps"],
)
def test_a_step_that_cannot_be_cached_needs_no_sync(pipe, options, uncacheable):
    counter, stats = run_counted(pipe, options)
    assert stats.cached_steps == list(range(uncacheable, STEPS))
    assert counter.per_call[:uncacheable] == [0] * uncacheable, counter.sites


def test_threshold_zero_records_the_diffs_with_no_sync(pipe):
    """The uncached machinery: threshold 0 computes every block and keeps each step's diff on the device for
    the stats (bench/run_bench.py's residual profile uses them); summary() reads them, no step syncs."""
    options = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.0}
    counter, stats = run_counted(pipe, options)
    assert sorted(stats.residual_diffs) == list(range(1, STEPS))
    assert all(isinstance(v, float) and v > 0 for v in stats.residual_diffs.values())
    assert counter.per_call == [0] * STEPS


# -- a bare transformer (you drive the loop) -------------------------------------------------------------


FIXED = {"Fn_compute_blocks": 0, "Bn_compute_blocks": 0, "compute_steps": [0, 2, 4], **TS1}


def bare_loop(transformer, counter, marks: bool, run: bool):
    """A FLUX-style loop on a tiny transformer: timesteps 1 -> 0, marked with cache_context or not."""
    prompt, pooled = flux_prompt_embeds()
    hidden = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    run_ctx = cache_dit.denoising_run(transformer) if run else _nothing()
    with run_ctx, counter.around(transformer):
        for step in range(STEPS):
            mark = transformer.cache_context("cond") if marks else _nothing()
            with mark:
                out = transformer(
                    hidden_states=hidden,
                    encoder_hidden_states=prompt,
                    pooled_projections=pooled,
                    timestep=torch.tensor([1.0 - step / STEPS]),
                    img_ids=torch.zeros(16, 3),
                    txt_ids=torch.zeros(prompt.shape[1], 3),
                    return_dict=False,
                )[0]
            hidden = hidden - out / STEPS


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_bare_transformer_in_a_marked_run_makes_no_sync():
    t = tiny_flux_transformer(num_layers=2, num_single_layers=4)
    apply_cache_on_transformer(t, **FIXED)
    counter = SyncCounter()
    bare_loop(t, counter, marks=True, run=True)
    assert counter.per_call == [0] * STEPS, counter.sites
    assert cache_dit.summary(t).cached_steps == [1, 3]


@pytest.mark.parametrize("run", [False, True], ids=["no-marks", "denoising_run-without-cache_context"])
def test_bare_transformer_unmarked_calls_read_the_timestep_once(run):
    """Without `cache_context` marks each call's timestep is read (one small sync): it tells a new run (bare
    calls) or the CFG branch and a new denoising loop (inside `denoising_run`) apart."""
    t = tiny_flux_transformer(num_layers=2, num_single_layers=4)
    apply_cache_on_transformer(t, **FIXED)
    counter = SyncCounter()
    bare_loop(t, counter, marks=False, run=run)
    assert counter.per_call == [1] * STEPS
    assert len(counter.sites) == 1 and next(iter(counter.sites)).startswith(
        "__float__ at cache_dit/cache_factory/"
    )
    assert cache_dit.summary(t).cached_steps == [1, 3]


def test_bare_transformer_with_num_inference_steps_makes_no_sync():
    t = tiny_flux_transformer(num_layers=2, num_single_layers=4)
    apply_cache_on_transformer(t, num_inference_steps=STEPS, **FIXED)
    counter = SyncCounter()
    bare_loop(t, counter, marks=False, run=False)
    assert cache_dit.summary(t).cached_steps == [1, 3]
    assert counter.per_call == [0] * STEPS, counter.sites


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "options",
    [None, FIXED, {**FIXED, "enable_encoder_taylorseer": False, "taylorseer_cache_type": "output"}],
    ids=["uncached", "fixed", "output"],
)
def test_cuda_sync_debug_mode_error_inside_the_transformer(options):
    """On a GPU: any synchronisation inside a transformer call raises (torch.cuda.set_sync_debug_mode)."""
    pipe = testbed.load_testbed_pipeline(device="cuda")
    if options is not None:
        apply_cache_on_pipe(pipe, **options)
    prompt, pooled = testbed.testbed_prompt_embeds([0])
    handles = [
        pipe.transformer.register_forward_pre_hook(lambda *a: torch.cuda.set_sync_debug_mode("error")),
        pipe.transformer.register_forward_hook(
            lambda *a: torch.cuda.set_sync_debug_mode(0), always_call=True
        ),
    ]
    try:
        pipe(
            prompt_embeds=prompt.cuda(),
            pooled_prompt_embeds=pooled.cuda(),
            height=testbed.IMAGE_SIZE,
            width=testbed.IMAGE_SIZE,
            num_inference_steps=STEPS,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        torch.cuda.set_sync_debug_mode(0)
        for h in handles:
            h.remove()
    if options is not None:
        assert cache_dit.summary(pipe).cached_steps == [1, 3]


def test_summary_reads_a_diff_kept_on_the_device():
    """A diff no decision needed can stay a 0-dim tensor until `summary()` reads it (one read per call)."""
    from cache_dit.cache_factory.state import BranchState
    from cache_dit.cache_factory.stats import BranchStats

    branch = BranchState("cond")
    branch.residual_diffs = {1: torch.tensor(0.25), 2: 0.5}
    diffs = BranchStats.from_branch(branch).residual_diffs
    assert diffs == {1: 0.25, 2: 0.5} and all(type(v) is float for v in diffs.values())
