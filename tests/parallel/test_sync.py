"""The parallel glue in one process: the no-group path is the old decision bit for bit; bad setups raise at
apply time and leave the pipeline as it was; diffusers' context-parallel hooks stay outside the cache."""

from __future__ import annotations

import re
import sys
import types

import pytest
import torch
from diffusers.hooks import HookRegistry, ModelHook

import cache_dit
from cache_dit.cache_factory.config import build_config
from cache_dit.cache_factory.decision import relative_l1
from cache_dit.cache_factory.runner import get_runner
from cache_dit.parallel import (
    DecisionSync,
    lifted_cp_hooks,
    ratio_from_stats,
    relative_l1_stats,
    resolve_group,
    synced_relative_l1,
)
from cache_dit.parallel.native import _forward_is_registry_outermost
from cache_dit.testing.cases import CASES


def test_without_a_group_the_decision_is_exactly_relative_l1():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 64, 8, generator=g), torch.randn(2, 64, 8, generator=g)
    assert synced_relative_l1(a, b, None) == relative_l1(a, b).item()
    assert synced_relative_l1(torch.zeros(3), torch.zeros(3)) == 0.0
    assert synced_relative_l1(torch.ones(3), torch.zeros(3)) == float("inf")
    # the reduced statistics give the same ratio (sums instead of means: equal up to float order)
    assert ratio_from_stats(relative_l1_stats(a, b)) == pytest.approx(relative_l1(a, b).item(), rel=1e-6)
    assert relative_l1_stats(a.half(), b.half()).dtype == torch.float32


def test_plain_transformer_has_no_group():
    pipe = CASES["flux"].build()
    assert resolve_group(pipe.transformer) is None
    cache_dit.apply_cache_on_pipe(pipe, cache_type="FBCache")
    assert get_runner(pipe.transformer).sync.current_group() is None


@pytest.mark.parametrize("cache_type", ["DBCache", "FBCache", "DBPrune"])
def test_parallel_group_is_an_option_of_every_cache_type(cache_type):
    assert build_config(cache_type=cache_type, parallel_group=None).options["parallel_group"] is None
    with pytest.raises(ValueError, match="did you mean 'parallel_group'"):
        build_config(cache_type=cache_type, parallel_grop=None)


def test_bad_parallel_group_raises_and_leaves_the_pipeline_as_it_was():
    pipe = CASES["flux"].build()
    cls, forward = type(pipe), pipe.transformer.__dict__.get("forward")
    with pytest.raises(
        TypeError, match="parallel_group must be a torch.distributed ProcessGroup or DeviceMesh"
    ):
        cache_dit.apply_cache_on_pipe(pipe, parallel_group="ranks 0,1")
    assert type(pipe) is cls and pipe.transformer.__dict__.get("forward") is forward
    assert get_runner(pipe.transformer) is None


@pytest.fixture
def fake_para_attn(monkeypatch):
    """A transformer marked the way ParaAttention's parallelize_pipe marks it, and a para_attn module."""

    def install(version: str):
        module = types.ModuleType("para_attn")
        module.__version__ = version
        monkeypatch.setitem(sys.modules, "para_attn", module)
        pipe = CASES["flux"].build()
        pipe.transformer._is_parallelized = True
        return pipe

    return install


@pytest.mark.parametrize("version", ["0.3.38", "0.3.38.dev1", "0.3.5"])
def test_old_para_attn_is_refused_at_apply_time(fake_para_attn, version):
    pipe = fake_para_attn(version)
    with pytest.raises(RuntimeError, match=rf"para-attn {re.escape(version)} does not run with diffusers"):
        cache_dit.apply_cache_on_pipe(pipe, cache_type="FBCache")
    assert get_runner(pipe.transformer) is None and "forward" not in pipe.transformer.__dict__


def test_newer_para_attn_needs_its_mesh_named(fake_para_attn):
    pipe = fake_para_attn("0.4.0")
    with pytest.raises(ValueError, match="pass parallel_group=mesh"):
        cache_dit.apply_cache_on_pipe(pipe, cache_type="FBCache")


def test_para_attn_marked_after_the_cache_is_found_at_the_next_decision(fake_para_attn):
    pipe = fake_para_attn("0.3.38")
    del pipe.transformer._is_parallelized
    cache_dit.apply_cache_on_pipe(pipe, cache_type="FBCache", warmup_steps=0)  # not parallel yet: fine
    sync: DecisionSync = get_runner(pipe.transformer).sync
    assert sync.current_group() is None
    pipe.transformer._is_parallelized = True  # parallelized afterwards: looked up again, refused
    with pytest.raises(RuntimeError, match=r"para-attn 0\.3\.38"):
        CASES["flux"].run(pipe, steps=2)


class _Shift(ModelHook):
    """Stands in for diffusers' context-parallel split hook: changes the block's input before the block."""

    def pre_forward(self, module, *args, **kwargs):
        kwargs["hidden_states"] = kwargs["hidden_states"] + 1.0
        return args, kwargs


def _add_shift_hook(block):
    HookRegistry.check_if_exists_or_initialize(block).register_hook(_Shift(), "cp_input---blocks.0")
    return block.__dict__["_diffusers_hook"]


@pytest.mark.parametrize("order", ["hook_first", "cache_first"])
def test_cp_hooks_stay_outside_the_cache_in_either_order(order):
    """Whichever is applied first, the split hook runs before the cache's block wrapper; removing the cache
    leaves the hook and nothing of the cache."""
    case = CASES["flux"]
    reference = case.build()
    _add_shift_hook(reference.transformer.transformer_blocks[0])
    expected = case.run(reference, steps=3)

    pipe = case.build()
    block = pipe.transformer.transformer_blocks[0]
    if order == "hook_first":
        registry = _add_shift_hook(block)
    cache_dit.apply_cache_on_pipe(pipe, cache_type="FBCache", residual_diff_threshold=0.0)
    if order == "cache_first":
        registry = _add_shift_hook(block)
    runner = get_runner(pipe.transformer)
    assert _forward_is_registry_outermost(block, registry)  # the hook is outermost ...
    assert registry._fn_refs[0].forward.func.__self__ is runner  # ... and wraps the cache's block wrapper
    assert torch.equal(case.run(pipe, steps=3), expected)  # threshold 0: bit-identical

    cache_dit.disable_cache(pipe)
    assert registry._hook_order == ["cp_input---blocks.0"] and _forward_is_registry_outermost(block, registry)
    assert getattr(getattr(registry._fn_refs[0].forward, "func", None), "__self__", None) is not runner
    assert get_runner(pipe.transformer) is None
    assert torch.equal(case.run(pipe, steps=3), expected)


def test_a_hook_wrapped_over_by_someone_else_is_left_alone():
    pipe = CASES["flux"].build()
    block = pipe.transformer.transformer_blocks[0]
    registry = _add_shift_hook(block)
    hooked = block.forward
    block.forward = lambda *a, **k: hooked(*a, **k)  # e.g. an offload wrapper added after the hook
    assert not _forward_is_registry_outermost(block, registry)
    with lifted_cp_hooks(pipe.transformer):
        assert registry._hook_order == ["cp_input---blocks.0"]  # not lifted: that would drop the wrapper
