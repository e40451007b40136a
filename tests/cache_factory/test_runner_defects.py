"""Reliability round 3: each case here gave a silently wrong image or a misleading error before the runner split.

Every test drives the public API only, so it can be run against an older checkout to see it fail there.
"""

from __future__ import annotations

import copy
import threading
import warnings

import pytest
import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe, apply_cache_on_transformer
from cache_dit.testing import tiny
from cache_dit.testing.families import FAMILIES

ONE_COMPUTED = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "compute_steps": [0]}


def _flux_inputs(seed: int = 0, text: int = 8) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, 16, 16, generator=g),
        "encoder_hidden_states": torch.randn(1, text, tiny.FLUX_TEXT_DIM, generator=g),
        "pooled_projections": torch.randn(1, tiny.FLUX_POOLED_DIM, generator=g),
        "img_ids": torch.zeros(16, 3),
        "txt_ids": torch.zeros(text, 3),
        "return_dict": False,
    }


@torch.no_grad()
@pytest.mark.parametrize("family", ["ChromaTransformer2DModel", "BriaTransformer2DModel"])
def test_in_place_controlnet_residuals_are_not_added_twice(family):
    """D1: Chroma and Bria add ControlNet residuals into a block's output in place. With identical inputs a
    cached step (order 0) must give the computed output; before, it added the residuals twice."""
    fam = FAMILIES[family]
    model = fam.build(seed=0)
    inputs = fam.inputs(seed=0, step=0)
    inputs["return_dict"] = False
    g = torch.Generator().manual_seed(1)
    tokens, width = inputs["hidden_states"].shape[1], model.inner_dim
    text = inputs["encoder_hidden_states"].shape[1]
    # both add the single-block samples in place to `hidden[:, text:]`: Chroma's single stream is text + image,
    # Bria's (diffusers 0.42) is the image alone, so its slice is `tokens - text` long
    single = tokens if family == "ChromaTransformer2DModel" else tokens - text
    inputs["controlnet_block_samples"] = [torch.randn(1, tokens, width, generator=g)]
    inputs["controlnet_single_block_samples"] = [torch.randn(1, single, width, generator=g)]
    computed = model(**inputs)[0]
    # one branch for every call, so identical inputs (one timestep) are consecutive steps of it
    apply_cache_on_transformer(model, **ONE_COMPUTED, do_separate_classifier_free_guidance=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the first in-place change is reported once
        with cache_dit.denoising_run(model):
            outs = [model(**inputs)[0] for _ in range(3)]
        with cache_dit.denoising_run(model):  # a later run: the copies are kept from its first step on
            later = [model(**inputs)[0] for _ in range(2)]
    assert cache_dit.summary(model).cached_steps == [1]
    for out in outs + later:
        torch.testing.assert_close(out, computed, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_output_forecast_computes_when_the_text_length_changes():
    """D2: taylorseer_cache_type='output' served a step whose text got longer from the forecast."""
    model = tiny.tiny_flux_transformer()
    short, longer = _flux_inputs(0, text=8), _flux_inputs(0, text=16)
    reference = model(**longer, timestep=torch.tensor([0.4]))[0]
    apply_cache_on_transformer(
        model,
        Fn_compute_blocks=0,
        Bn_compute_blocks=0,
        compute_steps=[0],
        enable_taylorseer=True,
        enable_encoder_taylorseer=False,
        taylorseer_cache_type="output",
        taylorseer_kwargs={"n_derivatives": 0},
    )
    with cache_dit.denoising_run(model):
        model(**short, timestep=torch.tensor([0.5]))
        with pytest.warns(RuntimeWarning, match="changed shape/dtype/device"):
            out = model(**longer, timestep=torch.tensor([0.4]))[0]
    assert cache_dit.summary(model).cached_steps == []
    torch.testing.assert_close(out, reference)


@torch.no_grad()
def test_two_threads_sharing_a_bare_transformer_never_mix_their_runs():
    """D3: two threads, unmarked bare runs, each call under a lock: every run was wrong, with no error."""
    model = FAMILIES["FluxTransformer2DModel"].build(seed=0)
    inputs = [_flux_inputs_for(model, seed) for seed in (0, 1)]
    timesteps = (1.0, 0.8, 0.6, 0.4)
    reference = [[model(**inputs[k], timestep=torch.tensor([t]))[0] for t in timesteps] for k in (0, 1)]
    apply_cache_on_transformer(model, Fn_compute_blocks=1, Bn_compute_blocks=0, compute_steps=[0, 2])
    lock = threading.Lock()
    turns = [threading.Event() for _ in range(2 * len(timesteps))]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}

    def worker(k: int) -> None:
        for i, t in enumerate(timesteps):
            turns[2 * i + k].wait(5)  # strict interleaving: A0 B0 A1 B1 ...
            with lock, torch.no_grad():
                results[k].append(model(**inputs[k], timestep=torch.tensor([t]))[0])
            if 2 * i + k + 1 < len(turns):
                turns[2 * i + k + 1].set()

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    turns[0].set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert any("two threads" in str(w.message) for w in caught)
    for k in (0, 1):
        assert len(results[k]) == len(timesteps)
        for got, want in zip(results[k], reference[k]):
            torch.testing.assert_close(got, want)


def _flux_inputs_for(model: torch.nn.Module, seed: int) -> dict:
    inputs = FAMILIES["FluxTransformer2DModel"].inputs(seed=seed, step=0)
    inputs.pop("timestep")
    inputs["return_dict"] = False
    return inputs


@torch.no_grad()
def test_a_call_nested_in_a_step_callback_keeps_the_outer_calls_state():
    """D4: a pipeline call from inside another call's callback_on_step_end, through a from_pipe sibling
    sharing the transformer, reset the outer call's cache state (its cached steps and image changed)."""
    pipe = tiny.tiny_flux_pipeline()
    prompt, pooled = tiny.flux_prompt_embeds()
    kwargs = dict(
        prompt_embeds=prompt,
        pooled_prompt_embeds=pooled,
        height=32,
        width=32,
        num_inference_steps=6,
        output_type="latent",
    )
    apply_cache_on_pipe(pipe, Fn_compute_blocks=1, Bn_compute_blocks=0, compute_steps=[0, 3])
    plain = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    plain_steps = cache_dit.summary(pipe).cached_steps
    sibling = type(pipe).from_pipe(pipe, scheduler=copy.deepcopy(pipe.scheduler))  # shares the transformer
    assert sibling.transformer is pipe.transformer
    inner_kwargs = {**kwargs, "num_inference_steps": 3}
    inner_ref = sibling(**inner_kwargs, generator=torch.Generator().manual_seed(5)).images
    inner = []

    def callback(p, step, timestep, callback_kwargs):
        if step == 1:
            inner.append(sibling(**inner_kwargs, generator=torch.Generator().manual_seed(5)).images)
        return callback_kwargs

    nested = pipe(**kwargs, generator=torch.Generator().manual_seed(0), callback_on_step_end=callback).images
    assert plain_steps == [1, 2, 4, 5]
    torch.testing.assert_close(inner[0], inner_ref)  # the nested call ran with its own state
    assert cache_dit.summary(pipe).cached_steps == plain_steps
    torch.testing.assert_close(nested, plain)


@torch.no_grad()
def test_a_diffusers_cache_added_between_bare_runs_is_caught_when_the_timestep_goes_up():
    """D5: the foreign-cache check ran before the new-run test, so a restart by a rising timestep missed it."""
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    model = tiny.tiny_flux_transformer()
    inputs = _flux_inputs(0)
    apply_cache_on_transformer(model, Fn_compute_blocks=1, Bn_compute_blocks=0, compute_steps=[0])
    for t in (1.0, 0.5):
        model(**inputs, timestep=torch.tensor([t]))
    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(RuntimeError, match="diffusers' own cache"):
        model(**inputs, timestep=torch.tensor([1.0]))  # the timestep went up: a new run


class _TDiT(torch.nn.Module):
    """A custom DiT whose timestep argument is called `t` and whose blocks take (x, temb)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = torch.nn.ModuleList(_TBlock() for _ in range(4))
        self.time = torch.nn.Linear(1, 16)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(t[:, None])
        for block in self.blocks:
            x = block(x, temb)
        return x


class _TBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * torch.tanh(self.lin(x) + temb[:, None])


@torch.no_grad()
def test_auto_adapter_counts_its_first_call_and_reads_a_timestep_named_t():
    """adapter='auto': the learning call was not a computed step (warmup_steps=1 acted as 2, the first call
    after apply differed from later identical ones), and a timestep named `t` was not recognised (three runs
    merged into one)."""
    model = _TDiT()
    x = torch.randn(1, 8, 16, generator=torch.Generator().manual_seed(0))
    timesteps = (1.0, 0.75, 0.5, 0.25)
    options = dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=100.0, warmup_steps=1)
    apply_cache_on_transformer(model, adapter="auto", **options)
    runs = []
    for _ in range(3):
        runs.append(torch.stack([model(x, torch.tensor([t])) for t in timesteps]))
        assert cache_dit.summary(model).cached_steps == [1, 2, 3]  # one run each, warmup 1 computes step 0
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[1], runs[2])


def test_a_declared_encoder_that_is_not_a_text_stream_fails_on_the_first_call():
    from cache_dit.testing.toy import denoise, toy_dit

    declared = dict(blocks=["stages.dual"], hidden="hidden", encoder="temb", returns=("hidden", "encoder"))
    model = toy_dit()
    apply_cache_on_transformer(
        model, Fn_compute_blocks=1, Bn_compute_blocks=0, compute_steps=[0], adapter=declared
    )
    with pytest.raises(ValueError, match=r"stages.dual.0: the adapter's encoder argument 'temb' has shape"):
        denoise(model, steps=2)


@torch.no_grad()
@pytest.mark.parametrize(
    "options,match",
    [
        (dict(residual_diff_threshold=0.5, warmup_steps=4), "warmup_steps=4 >= the 4 steps"),
        (dict(compute_steps=[0, 1, 2, 3]), "compute_steps lists every one of the 4 steps"),
    ],
)
def test_options_that_can_cache_nothing_at_these_steps_warn(options, match):
    pipe = tiny.tiny_flux_pipeline()
    prompt, pooled = tiny.flux_prompt_embeds()
    apply_cache_on_pipe(pipe, Fn_compute_blocks=1, Bn_compute_blocks=0, **options)
    with pytest.warns(RuntimeWarning, match=match):
        pipe(prompt_embeds=prompt, pooled_prompt_embeds=pooled, height=32, width=32, num_inference_steps=4)
    assert cache_dit.summary(pipe).cached_steps == []


def test_small_api_edges_raise_clearly():
    pipe = tiny.tiny_flux_pipeline()
    apply_cache_on_pipe(pipe, Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.1)
    with pytest.raises(ValueError, match=r"no denoiser 'transfomer'; allowed: \['transformer'\]"):
        cache_dit.summary(pipe, denoiser="transfomer")
    with pytest.raises(TypeError, match="denoising_run expects"):
        with cache_dit.denoising_run(None):
            pass
    for bad in (0.0, False, 1.0):
        with pytest.raises(TypeError, match="Fn_compute_blocks must be an int"):
            apply_cache_on_pipe(pipe, Fn_compute_blocks=bad, Bn_compute_blocks=0, compute_steps=[0])
    assert cache_dit.summary(pipe).cache_type == "DBCache"  # a failed apply left the cache as it was


def test_a_second_thread_entering_a_denoising_run_is_named_as_such():
    model = tiny.tiny_flux_transformer()
    apply_cache_on_transformer(model, Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.1)
    errors: list[str] = []

    def other() -> None:
        try:
            with cache_dit.denoising_run(model):
                pass
        except RuntimeError as error:
            errors.append(str(error))

    with cache_dit.denoising_run(model):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(errors) == 1
    assert "a denoising run on FluxTransformer2DModel while a denoising run from another thread" in errors[0]


@torch.no_grad()
def test_disable_cache_leaves_no_cache_tensor_alive():
    """After disable_cache nothing keeps the runner (and so its stored residuals) alive."""
    import gc
    import weakref

    from cache_dit.cache_factory.runner import get_runner

    pipe = tiny.tiny_flux_pipeline()
    prompt, pooled = tiny.flux_prompt_embeds()
    apply_cache_on_pipe(
        pipe, Fn_compute_blocks=1, Bn_compute_blocks=1, compute_steps=[0, 2], enable_taylorseer=True
    )
    pipe(prompt_embeds=prompt, pooled_prompt_embeds=pooled, height=32, width=32, num_inference_steps=4)
    runner = get_runner(pipe.transformer)
    stored = [s.hidden.factors[0] for s in runner.call.branches["cond"].segments.values()]
    refs = [weakref.ref(runner)] + [weakref.ref(t) for t in stored]
    del runner, stored
    cache_dit.disable_cache(pipe)
    gc.collect()
    assert all(ref() is None for ref in refs)


@torch.no_grad()
def test_pipelines_that_batch_cfg_unmarked_label_the_branch_cond_uncond():
    """SD3 and PixArt run cond and uncond as one unmarked batched call per step: with CFG on the branch is
    "cond_uncond" (as Mochi/CogVideoX mark it); with CFG off it stays "cond". Before, both were "cond"."""
    options = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "warmup_steps": 1}
    sd3 = tiny.tiny_sd3_pipeline()
    sd3.set_progress_bar_config(disable=True)
    apply_cache_on_pipe(sd3, **options)
    pixart = tiny.tiny_pixart_pipeline()
    pixart.set_progress_bar_config(disable=True)
    apply_cache_on_pipe(pixart, **options)
    g = torch.Generator().manual_seed(0)
    prompt, mask = torch.randn(1, 8, 32, generator=g), torch.ones(1, 8)
    pixart_kwargs = {
        "prompt": None,
        "negative_prompt": None,
        "prompt_embeds": prompt,
        "prompt_attention_mask": mask,
        "negative_prompt_embeds": torch.zeros_like(prompt),
        "negative_prompt_attention_mask": mask,
        "use_resolution_binning": False,
    }
    runs = [
        (sd3, tiny.sd3_prompt_embeds(), 5.0, "cond_uncond"),
        (sd3, tiny.sd3_prompt_embeds(), 1.0, "cond"),
        (pixart, pixart_kwargs, 4.5, "cond_uncond"),
        (pixart, pixart_kwargs, 1.0, "cond"),
    ]
    for pipe, kwargs, scale, expected in runs:
        pipe(**kwargs, height=32, width=32, num_inference_steps=4, guidance_scale=scale, output_type="latent")
        stats = cache_dit.summary(pipe)
        assert list(stats.branches) == [expected], (type(pipe).__name__, scale)
        assert stats.branches[expected].name == expected
        assert stats.branches[expected].num_steps == 4
        assert stats.branches[expected].batched_cfg == (expected == "cond_uncond")
