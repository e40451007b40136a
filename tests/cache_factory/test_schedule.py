"""Fixed schedules (`compute_steps`): exact steps, Fn=0, no decision statistics, exactness, step-count warnings."""

from __future__ import annotations

import warnings

import pytest
import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe
from cache_dit.testing.cases import CASES

FLUX, WAN = CASES["flux"], CASES["wan"]
STEPS = 6


class BlockCount:
    """Counts the real block computations of one transformer (wraps before the cache is applied)."""

    def __init__(self, transformer: torch.nn.Module, lists: tuple[str, ...]) -> None:
        self.calls = 0
        for name in lists:
            for block in getattr(transformer, name):
                original = block.forward

                def counting(*args, _original=original, **kwargs):
                    self.calls += 1
                    return _original(*args, **kwargs)

                block.forward = counting


@pytest.mark.parametrize("fn,bn", [(0, 0), (1, 0), (1, 1)])
def test_exact_cached_steps_and_block_calls(fn, bn):
    """Steps outside the schedule are cached, no others; a cached step runs exactly Fn + Bn blocks."""
    pipe = FLUX.build()
    counter = BlockCount(pipe.transformer, ("transformer_blocks", "single_transformer_blocks"))
    schedule = [0, 1, 3]
    apply_cache_on_pipe(
        pipe, cache_type="DBCache", Fn_compute_blocks=fn, Bn_compute_blocks=bn, compute_steps=schedule
    )
    FLUX.run(pipe, steps=STEPS)
    stats = cache_dit.summary(pipe)
    assert stats.cached_steps == [2, 4, 5]
    assert stats.residual_diffs == {}  # no diff is measured: nothing syncs to decide
    assert counter.calls == 3 * FLUX.num_blocks + 3 * (fn + bn)


def test_every_step_listed_is_bit_exact_and_fn0_order0_reuses_the_residual():
    pipe = FLUX.build()
    ref = FLUX.run(pipe, steps=STEPS)
    apply_cache_on_pipe(
        pipe, cache_type="DBCache", Fn_compute_blocks=0, Bn_compute_blocks=0, compute_steps=range(STEPS)
    )
    assert torch.equal(FLUX.run(pipe, steps=STEPS), ref)
    assert cache_dit.summary(pipe).cached_steps == []
    cache_dit.disable_cache(pipe)
    assert torch.equal(FLUX.run(pipe, steps=STEPS), ref)


def test_cached_step_adds_the_stored_stack_residual():
    """Fn=0, order 0: on a cached step the hidden states leaving the last block are exactly the ones entering
    block 0 plus the whole stack's residual stored at the last computed step."""
    pipe = FLUX.build()
    transformer = pipe.transformer
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (hidden into block 0, hidden out of the last block)
    first = transformer.transformer_blocks[0]
    grab: dict[str, torch.Tensor] = {}
    first.register_forward_pre_hook(
        lambda m, a, kw: grab.__setitem__("in", kw["hidden_states"]), with_kwargs=True
    )
    transformer.norm_out.register_forward_pre_hook(lambda m, a: seen.append((grab["in"], a[0])))
    apply_cache_on_pipe(
        pipe, cache_type="DBCache", Fn_compute_blocks=0, Bn_compute_blocks=0, compute_steps=[0, 1]
    )
    FLUX.run(pipe, steps=4)
    (in1, out1), (in2, out2), (in3, out3) = seen[1], seen[2], seen[3]
    torch.testing.assert_close(out2, in2 + (out1 - in1), rtol=0, atol=1e-6)
    torch.testing.assert_close(out3, in3 + (out1 - in1), rtol=0, atol=1e-6)


def test_order1_forecast_is_linear_in_the_step():
    """Fn=0, TaylorSeer order 1, computed steps 0 and 1: step k's stack residual is R1 + (R1 - R0) * (k - 1)."""
    pipe = FLUX.build()
    transformer = pipe.transformer
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    grab: dict[str, torch.Tensor] = {}
    transformer.transformer_blocks[0].register_forward_pre_hook(
        lambda m, a, kw: grab.__setitem__("in", kw["hidden_states"]), with_kwargs=True
    )
    transformer.norm_out.register_forward_pre_hook(lambda m, a: seen.append((grab["in"], a[0])))
    apply_cache_on_pipe(
        pipe,
        cache_type="DBCache",
        Fn_compute_blocks=0,
        Bn_compute_blocks=0,
        compute_steps=[0, 1],
        enable_taylorseer=True,
        taylorseer_kwargs={"n_derivatives": 1},
    )
    FLUX.run(pipe, steps=4)
    r0, r1 = seen[0][1] - seen[0][0], seen[1][1] - seen[1][0]
    for k in (2, 3):
        torch.testing.assert_close(seen[k][1] - seen[k][0], r1 + (r1 - r0) * (k - 1), rtol=1e-5, atol=1e-5)


def test_cfg_branches_follow_the_same_schedule():
    pipe = WAN.build()
    apply_cache_on_pipe(
        pipe, cache_type="DBCache", Fn_compute_blocks=0, Bn_compute_blocks=0, compute_steps=[0, 2]
    )
    WAN.run(pipe, steps=4, cfg=True)
    stats = cache_dit.summary(pipe)
    assert stats.cached_steps == [1, 3] and stats.cfg_cached_steps == [1, 3]


@pytest.mark.parametrize(
    "schedule,message",
    [([0, 1, 9], "lists step 9, but this call ran 6 steps"), ([0, 1], "its last 4 steps were all served")],
)
def test_schedule_made_for_another_step_count_warns(schedule, message):
    pipe = FLUX.build()
    apply_cache_on_pipe(
        pipe, cache_type="DBCache", Fn_compute_blocks=0, Bn_compute_blocks=0, compute_steps=schedule
    )
    with pytest.warns(RuntimeWarning, match=message):
        FLUX.run(pipe, steps=STEPS)


def test_schedule_that_fits_does_not_warn():
    pipe = FLUX.build()
    apply_cache_on_pipe(
        pipe, cache_type="DBCache", Fn_compute_blocks=0, Bn_compute_blocks=0, compute_steps=[0, 1, 3, 5]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FLUX.run(pipe, steps=STEPS)


def test_options_object_carries_the_schedule():
    pipe = FLUX.build()
    config = cache_dit.DBCacheConfig(Fn_compute_blocks=0, Bn_compute_blocks=0, compute_steps=[0, 1, 3])
    apply_cache_on_pipe(pipe, config)
    FLUX.run(pipe, steps=STEPS)
    assert cache_dit.summary(pipe).cached_steps == [2, 4, 5]


# ----------------------------------------------------------------------------------------------------------
# taylorseer_cache_type="output": the transformer's whole output forecast, no block on a cached step
# ----------------------------------------------------------------------------------------------------------

OUTPUT = dict(
    cache_type="DBCache",
    Fn_compute_blocks=0,
    Bn_compute_blocks=0,
    enable_taylorseer=True,
    taylorseer_cache_type="output",
)


def _outputs(transformer: torch.nn.Module) -> list[torch.Tensor]:
    """Every transformer output, in call order (the hook sits outside the cache's forward)."""
    seen: list[torch.Tensor] = []
    transformer.register_forward_hook(lambda m, a, out: seen.append(out[0].clone()))
    return seen


def test_output_forecast_is_linear_in_the_step_and_runs_no_block():
    pipe = FLUX.build()
    counter = BlockCount(pipe.transformer, ("transformer_blocks", "single_transformer_blocks"))
    seen = _outputs(pipe.transformer)
    apply_cache_on_pipe(pipe, **OUTPUT, compute_steps=[0, 1], taylorseer_kwargs={"n_derivatives": 1})
    FLUX.run(pipe, steps=4)
    assert cache_dit.summary(pipe).cached_steps == [2, 3]
    assert counter.calls == 2 * FLUX.num_blocks
    o0, o1 = seen[0], seen[1]
    for k in (2, 3):
        torch.testing.assert_close(seen[k], o1 + (o1 - o0) * (k - 1), rtol=0, atol=1e-6)


def test_output_mode_every_step_listed_is_bit_exact():
    pipe = FLUX.build()
    ref = FLUX.run(pipe, steps=STEPS)
    apply_cache_on_pipe(pipe, **OUTPUT, compute_steps=range(STEPS))
    assert torch.equal(FLUX.run(pipe, steps=STEPS), ref)
    cache_dit.disable_cache(pipe)
    assert torch.equal(FLUX.run(pipe, steps=STEPS), ref)


def test_output_mode_keeps_cfg_branches_apart():
    """Order 0: each branch's cached step returns that branch's own last computed output."""
    pipe = WAN.build()
    seen = _outputs(pipe.transformer)
    apply_cache_on_pipe(pipe, **OUTPUT, compute_steps=[0, 1], taylorseer_kwargs={"n_derivatives": 0})
    WAN.run(pipe, steps=3, cfg=True)
    stats = cache_dit.summary(pipe)
    assert stats.cached_steps == [2] and stats.cfg_cached_steps == [2]
    assert len(seen) == 6 and not torch.equal(seen[2], seen[3])  # step 1: the two branches differ
    assert {(4, 2), (5, 3)} == {(i, j) for i in (4, 5) for j in (2, 3) if torch.equal(seen[i], seen[j])}


def test_output_mode_returns_the_callers_output_type():
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    from cache_dit.cache_factory.policies.output import single_tensor_output as _single_tensor_output
    from cache_dit.cache_factory.policies.output import with_first_tensor as _with_first_tensor

    x, y = torch.zeros(2), torch.ones(2)
    assert _with_first_tensor(Transformer2DModelOutput(sample=x), y).sample is y
    assert _with_first_tensor((x,), y)[0] is y and _with_first_tensor(x, y) is y
    assert _single_tensor_output(Transformer2DModelOutput(sample=x), "M") is x
    with pytest.raises(ValueError, match="one tensor; M returned tuple with 2 tensors"):
        _single_tensor_output((x, y), "M")


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(enable_taylorseer=False), "needs enable_taylorseer=True"),
        (dict(enable_encoder_taylorseer=True), "leave enable_encoder_taylorseer False"),
        (dict(compute_steps=None), "needs compute_steps"),
        (dict(Fn_compute_blocks=1), "allowed: Fn_compute_blocks=0 and Bn_compute_blocks=0, got 1 and 0"),
        (dict(cache_type="FBCache", Fn_compute_blocks=1), "cache_type=FBCache always runs its first block"),
    ],
)
def test_output_mode_bad_options_raise_and_leave_the_pipeline(options, match):
    pipe = FLUX.build()
    ref = FLUX.run(pipe, steps=3)
    with pytest.raises(ValueError, match=match):
        apply_cache_on_pipe(pipe, **{**OUTPUT, "compute_steps": [0, 1], **options})
    assert torch.equal(FLUX.run(pipe, steps=3), ref)


def test_output_mode_on_a_bare_transformer_with_return_dict_and_a_layout_change():
    """Your own loop: a cached step returns the output type the call asked for (return_dict=True: the diffusers
    output class) with the forecast in it; latents of another layout are computed, with a warning."""
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    pipe = FLUX.build()
    calls: list[dict] = []
    pipe.transformer.register_forward_pre_hook(lambda m, a, kw: calls.append(dict(kw)), with_kwargs=True)
    FLUX.run(pipe, steps=3)
    transformer = pipe.transformer
    cache_dit.apply_cache_on_transformer(
        transformer, **OUTPUT, compute_steps=[0, 1], taylorseer_kwargs={"n_derivatives": 0}
    )
    kwargs = [{**kw, "return_dict": True} for kw in calls]
    with cache_dit.denoising_run(transformer):
        outs = [transformer(**kw) for kw in kwargs]
    assert all(isinstance(o, Transformer2DModelOutput) for o in outs)
    assert torch.equal(outs[2].sample, outs[1].sample)  # order 0: the last computed output
    with cache_dit.denoising_run(transformer):
        transformer(**kwargs[0])
        transformer(**kwargs[1])
        wider = {**kwargs[2], "hidden_states": torch.cat([kwargs[2]["hidden_states"]] * 2)}
        wider["encoder_hidden_states"] = torch.cat([kwargs[2]["encoder_hidden_states"]] * 2)
        wider["pooled_projections"] = torch.cat([kwargs[2]["pooled_projections"]] * 2)
        with pytest.warns(RuntimeWarning, match="an input of the transformer .* changed shape/dtype/device"):
            out = transformer(**wider)
    assert out.sample.shape[0] == 2 * outs[2].sample.shape[0]
    assert cache_dit.summary(transformer).cached_steps == []


def test_output_mode_keeps_its_own_copy_of_the_output():
    """A pipeline may change the transformer's output in place: the stored forecast must not follow."""
    pipe = FLUX.build()
    transformer = pipe.transformer
    calls: list[dict] = []
    transformer.register_forward_pre_hook(lambda m, a, kw: calls.append(dict(kw)), with_kwargs=True)
    FLUX.run(pipe, steps=3)
    cache_dit.apply_cache_on_transformer(
        transformer, **OUTPUT, compute_steps=[0, 1], taylorseer_kwargs={"n_derivatives": 0}
    )
    with cache_dit.denoising_run(transformer):
        transformer(**calls[0])
        computed = transformer(**calls[1])[0]
        kept = computed.clone()
        computed.mul_(0)  # what an in-place pipeline would do
        cached = transformer(**calls[2])[0]
    assert torch.equal(cached, kept)
    cached.add_(1)  # and the forecast handed out is not the stored tensor either
    assert torch.equal(
        cache_dit.cache_factory.runner.get_runner(transformer).call.branch("cond").output.seer.factors[0],
        kept,
    )
