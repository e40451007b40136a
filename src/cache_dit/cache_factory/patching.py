"""Putting the cache's wrappers on a transformer instance and taking them off again, exactly.

Every patch is an instance attribute (the class, the state dict and the block lists stay untouched), recorded
with what was there before, so removing the cache restores the instance bit for bit. This module also finds
diffusers' own step caches, which must never run together with ours.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

RUNNER_ATTR = "_cache_dit_runner"

# diffusers' own step caches (hooks registered by `transformer.enable_cache(...)` / `apply_*_cache`): stacked
# with ours, both skip work and the errors add up. Other diffusers hooks (group offloading, layerwise casting,
# context parallel, text KV cache) are fine.
_DIFFUSERS_CACHE_HOOK_MODULES = frozenset(
    f"diffusers.hooks.{name}"
    for name in (
        "first_block_cache",
        "faster_cache",
        "mag_cache",
        "pyramid_attention_broadcast",
        "sea_cache",
        "taylorseer_cache",
    )
)


def _unset(*args: Any, **kwargs: Any) -> Any:  # placeholder callable of a Wrapper being unpickled
    raise RuntimeError("cache-dit: a wrapper was called before it was restored")


class Wrapper(functools.partial):
    """The cache's wrappers. A plain `functools.partial` is copied/unpickled from its arguments *before* it is
    memoized, so the cycle wrapper -> runner -> patch -> wrapper would give the copy two different wrappers (and
    `disable_cache` on a deepcopy would leave one behind); this one is created empty first and filled in after.
    """

    def __reduce__(self) -> Any:
        return (type(self), (_unset,), (self.func, self.args, self.keywords or None, self.__dict__ or None))


@dataclass
class Patch:
    obj: Any
    attr: str
    had_own: bool  # the instance had its own attribute before (else the class's was in use)
    old: Any
    new: Any


class Patcher:
    """The instance attributes the cache has set, in order, so that each can be put back exactly."""

    def __init__(self) -> None:
        self.patches: list[Patch] = []

    def set(self, obj: Any, attr: str, value: Any) -> None:
        had_own = attr in obj.__dict__
        self.patches.append(Patch(obj, attr, had_own, obj.__dict__.get(attr), value))
        object.__setattr__(obj, attr, value)

    def restore(self) -> list[str]:
        """Put every patched attribute back (an own attribute restored, a class one un-shadowed).

        Where something else wrapped our wrapper afterwards (e.g. accelerate's offload hooks), removing ours
        would drop theirs too: ours stays in their chain (the caller switches it off). Returns those places.
        """
        wrapped_over = []
        for patch in reversed(self.patches):
            if patch.obj.__dict__.get(patch.attr) is not patch.new:
                wrapped_over.append(f"{type(patch.obj).__name__}.{patch.attr}")
                continue
            if patch.had_own:
                object.__setattr__(patch.obj, patch.attr, patch.old)
            else:
                patch.obj.__dict__.pop(patch.attr, None)
        self.patches.clear()
        return wrapped_over


def foreign_cache_hooks(module: torch.nn.Module) -> list[str]:
    """Names of diffusers' own cache hooks anywhere in the transformer (see _DIFFUSERS_CACHE_HOOK_MODULES).

    Walks every submodule (PAB and TaylorSeer hook attention layers): a few us per module, so it runs once per
    apply, pipeline call or bare-transformer run, not per step.
    """
    found: list[str] = []
    config = getattr(module, "_cache_config", None)
    if config is not None and type(config).__name__ != "TextKVCacheConfig":
        found.append(f"transformer.enable_cache({type(config).__name__}(...))")
    for m in module.modules():
        registry = m.__dict__.get("_diffusers_hook")
        for name, hook in getattr(registry, "hooks", {}).items():
            if type(hook).__module__ in _DIFFUSERS_CACHE_HOOK_MODULES and name not in found:
                found.append(name)
    return found


def check_no_foreign_cache(transformer: torch.nn.Module) -> None:
    """Raise if one of diffusers' own caches is on the transformer (it would stack with ours)."""
    found = foreign_cache_hooks(transformer)
    if found:
        raise RuntimeError(
            f"cache-dit: diffusers' own cache ({', '.join(found)}) is on {type(transformer).__name__} "
            "together with cache-dit's; both would skip work and their errors add up. Remove one: "
            "`transformer.disable_cache()` (or `HookRegistry.remove_hook(name)` for hooks applied with "
            "diffusers' `apply_*` functions), or `cache_dit.disable_cache(pipe)`."
        )


def refuse_diffusers_cache(model_name: str, *args: Any, **kwargs: Any) -> None:
    """Stands in for diffusers' `transformer.enable_cache(...)` while cache-dit's cache is applied."""
    raise RuntimeError(
        f"cache-dit's cache is applied to this {model_name}; diffusers' enable_cache would stack a second cache "
        "on it (both skip work and their errors add up). Remove cache-dit's first with "
        "`cache_dit.disable_cache(pipe)` (or `disable_cache(transformer)`)."
    )
