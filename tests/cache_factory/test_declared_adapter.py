"""Declared adapters (`adapter=dict(...)`), derived ones (`adapter="auto"`), segments and `validate=True`,
on a toy DiT that no registry knows (two stages in a ModuleDict, text and image concatenated between them)."""

from __future__ import annotations

import pytest
import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_transformer
from cache_dit.cache_factory.runner import get_runner
from cache_dit.testing.toy import ToyDualBlock, denoise, toy_dit

TOY = dict(
    blocks=[
        {"path": "stages.dual", "hidden": "hidden", "encoder": "context", "returns": ("hidden", "encoder")},
        {"path": "stages.joint", "hidden": "tokens", "encoder": None, "returns": "hidden"},
    ]
)
FORCED = dict(
    cache_type="DBCache",
    Fn_compute_blocks=1,
    Bn_compute_blocks=1,
    residual_diff_threshold=100.0,
    warmup_steps=2,
)


def test_unknown_transformer_points_to_the_adapter_option():
    with pytest.raises(ValueError, match="ToyDiT is not supported.*adapter='auto'.*adapter=dict"):
        apply_cache_on_transformer(toy_dit(), **FORCED)


@pytest.mark.parametrize("adapter", [TOY, "auto"], ids=["declared", "auto"])
def test_declared_and_auto_adapters_keep_the_contract(adapter):
    model = toy_dit()
    ref = denoise(model)
    apply_cache_on_transformer(model, **{**FORCED, "residual_diff_threshold": 0.0}, adapter=adapter)
    assert torch.equal(denoise(model), ref)  # threshold 0: bit-exact
    apply_cache_on_transformer(model, **FORCED, adapter=adapter)
    cached = denoise(model)
    stats = cache_dit.summary(model)
    # "auto" learns the layout on step 0 (computed anyway): step 1 computes and stores, as in the declared run
    assert stats.cached_steps == [2, 3, 4, 5]
    assert not torch.equal(cached, ref)
    assert (cached - ref).abs().max() < 0.5 * ref.abs().max()
    runner = get_runner(model)
    # dual blocks 0-1, joint blocks 2-4: F1B1 caches blocks 1..3 in two segments, one per stage
    assert runner.segment_starts == {1, 2}
    cache_dit.disable_cache(model)
    assert torch.equal(denoise(model), ref)


def test_auto_derives_the_declaration():
    model = toy_dit()
    apply_cache_on_transformer(model, **FORCED, adapter="auto")
    denoise(model, steps=2)
    derived = get_runner(model).adapter.block_lists
    declared = cache_dit.cache_factory.adapters.declared.declare_adapter(model, TOY).block_lists
    assert derived == declared


def test_auto_second_run_equals_declared():
    a, b = toy_dit(), toy_dit()
    apply_cache_on_transformer(a, **FORCED, adapter=TOY)
    apply_cache_on_transformer(b, **FORCED, adapter="auto")
    denoise(a), denoise(b)  # b learns its layout here
    assert torch.equal(denoise(a, seed=1), denoise(b, seed=1))
    assert cache_dit.summary(a).cached_steps == cache_dit.summary(b).cached_steps == [2, 3, 4, 5]


@pytest.mark.parametrize("cache_type", ["DBCache", "DBPrune"])
def test_validate_replays_a_step_exactly(cache_type):
    model = toy_dit()
    apply_cache_on_transformer(model, **dict(FORCED, cache_type=cache_type), adapter=TOY, validate=True)
    denoise(model)
    diff = get_runner(model).last_validation_diff
    assert diff is not None and diff < 1e-5


def test_validate_catches_a_block_with_an_undeclared_side_effect():
    """A block that also changes its text input in place: skipping it cannot reproduce that."""

    model = toy_dit()
    original = ToyDualBlock.forward

    def in_place(self, hidden, context, temb):
        hidden, new_context = original(self, hidden, context, temb)
        context.mul_(0.5)  # state the declaration does not know about
        return hidden, new_context

    for block in model.stages["dual"]:
        block.forward = in_place.__get__(block)
    apply_cache_on_transformer(model, **FORCED, adapter=TOY, validate=True)
    with pytest.raises(ValueError, match="validate=True.*does not reproduce"):
        denoise(model)


@pytest.mark.parametrize(
    "adapter,error,match",
    [
        (dict(TOY, blockz=[]), ValueError, "unknown key 'blockz'.*did you mean 'blocks'"),
        (dict(blocks=["stages.nope"]), ValueError, r"ToyDiT.stages.nope is not a torch.nn.ModuleList"),
        (dict(blocks=["proj_in"]), ValueError, "ToyDiT.proj_in is not a torch.nn.ModuleList"),
        (dict(blocks=["stages.dual"], hidden="x"), ValueError, "ToyDualBlock.forward has no argument 'x'"),
        (dict(blocks=["stages.dual"], hidden="hidden", returns=("hidden", "aux")), ValueError, "must name"),
        (
            dict(blocks=["stages.dual"], hidden="hidden", encoder=None, returns=("hidden", "encoder")),
            ValueError,
            "no encoder",
        ),
        ("magic", ValueError, "adapter='magic' is not allowed"),
        (3, TypeError, "adapter must be None, 'auto', a dict"),
    ],
)
def test_bad_declarations_fail_at_apply(adapter, error, match):
    model = toy_dit()
    with pytest.raises(error, match=match):
        apply_cache_on_transformer(model, **FORCED, adapter=adapter)
    assert get_runner(model) is None and "forward" not in model.__dict__


@pytest.mark.parametrize(
    "adapter,match",
    [
        # a tuple of 3 where the block returns 2
        (
            dict(
                blocks=["stages.dual"],
                hidden="hidden",
                encoder="context",
                returns=("hidden", "encoder", "encoder"),
            ),
            None,
        ),
        (
            dict(blocks=["stages.dual"], hidden="hidden", encoder="context", returns="hidden"),
            r"ToyDiT.stages.dual.0 returned tuple, but the adapter says it returns the hidden states tensor",
        ),
        (
            dict(blocks=["stages.dual"], hidden="temb", encoder="context", returns=("hidden", "encoder")),
            r"ToyDiT.stages.dual.0: the output the adapter names as hidden states is \(1, 16, 32\), expected a "
            r"tensor of the input's shape \(1, 32\)",
        ),
        (
            dict(
                blocks=["stages.joint", "stages.dual"],
                hidden="hidden",
                encoder="context",
                returns=("hidden", "encoder"),
            )
            | {
                "blocks": [
                    {"path": "stages.joint", "hidden": "tokens", "encoder": None, "returns": "hidden"},
                    "stages.dual",
                ]
            },
            r"ToyDiT.stages.joint.0 ran after stages.dual.1.*execution order",
        ),
    ],
)
def test_wrong_declarations_fail_on_the_first_call_naming_the_block(adapter, match):
    model = toy_dit()
    if match is None:  # rejected at apply already (returns may name 'encoder' once)
        with pytest.raises(ValueError, match="must name 'hidden' once and 'encoder' at most once"):
            apply_cache_on_transformer(model, **FORCED, adapter=adapter)
        return
    apply_cache_on_transformer(model, **FORCED, adapter=adapter)
    with pytest.raises(ValueError, match=match):
        denoise(model, steps=2)
