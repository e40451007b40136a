"""diffusers' native context parallelism: a mesh helper, and keeping its hooks outside the cache's wrappers.

diffusers shards a transformer's inputs with hooks (`transformer.enable_parallelism`): FLUX splits the sequence
at the transformer's own forward, Wan at the input of `blocks.0`. The cache wraps the transformer's and every
block's `forward` too, and whichever is applied last ends up outermost. Were the cache's wrapper of Wan's
`blocks.0` outside the split hook, it would see the whole sequence going in and a slice coming out. So whenever
the cache installs or removes its wrappers, the context-parallel hooks on those modules are taken off and put
back afterwards (`lifted_cp_hooks`): the split always happens before the cache sees a block, in either order of
applying, and removing the cache leaves the hooks in place (re-registered) and nothing of the cache.

A module whose hooks were wrapped again by something else (an offload wrapper, say) is left alone: lifting
would drop that wrapper. There the cache's wrapper stays outermost; for a block that splits its input (Wan's
`blocks.0`) apply the cache before `enable_parallelism` in that case.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

_CP_HOOK_PREFIXES = ("cp_input---", "cp_output---")  # diffusers.hooks.context_parallel's hook names


def _cp_hooks(module: torch.nn.Module) -> list[tuple[str, Any]]:
    """The module's context-parallel hooks, in registration order; none where they cannot be lifted safely."""
    registry = module.__dict__.get("_diffusers_hook")
    if registry is None or not _forward_is_registry_outermost(module, registry):
        return []
    return [
        (name, registry.hooks[name]) for name in registry._hook_order if name.startswith(_CP_HOOK_PREFIXES)
    ]


def _forward_is_registry_outermost(module: torch.nn.Module, registry: Any) -> bool:
    """`module.forward` is the one diffusers' registry installed for its last hook (nothing wrapped it since).

    Removing a hook re-links the registry's own chain and sets `module.forward`; had something else wrapped
    the module after the hooks, that wrapper would be dropped, so such a module is left alone.
    """
    forward = module.__dict__.get("forward")
    fn_refs = getattr(registry, "_fn_refs", None)
    if not fn_refs or not isinstance(forward, functools.partial) or forward.args[:1] != (module,):
        return False
    cells = getattr(forward.func, "__closure__", None) or ()
    return any(cell.cell_contents is fn_refs[-1] for cell in cells)


@contextlib.contextmanager
def lifted_cp_hooks(root: torch.nn.Module) -> Iterator[None]:
    """Take diffusers' context-parallel hooks off `root` and its submodules, run the body, put them back."""
    lifted: list[tuple[torch.nn.Module, list[tuple[str, Any]]]] = []
    try:
        for module in root.modules():
            hooks = _cp_hooks(module)
            if not hooks:
                continue
            registry = module.__dict__["_diffusers_hook"]
            for name, _ in reversed(hooks):
                registry.remove_hook(name, recurse=False)
            lifted.append((module, hooks))
            _drop_own_bound_forward(module)
        yield
    finally:
        for module, hooks in lifted:
            registry = module.__dict__["_diffusers_hook"]
            for name, hook in hooks:
                registry.register_hook(hook, name)


def _drop_own_bound_forward(module: torch.nn.Module) -> None:
    """Removing the last hook leaves `module.forward` as an instance attribute bound to the class's forward;
    drop it so that the module is as it was before any hook (the cache restores instance attributes exactly)."""
    own = module.__dict__.get("forward")
    if getattr(own, "__self__", None) is module and getattr(own, "__func__", None) is type(module).forward:
        del module.__dict__["forward"]


def enable_context_parallel(
    transformer: torch.nn.Module, *, ulysses_degree: int | None = None, ring_degree: int = 1
) -> Any:
    """`transformer.enable_parallelism(ContextParallelConfig(...))` over all ranks, on GPUs or on CPU (gloo).

    Builds the ("ring", "ulysses") mesh on the accelerator when there is one, else on CPU. diffusers 0.42 divides
    by the accelerator count when it records the config (ZeroDivisionError without one); on CPU the count is
    reported as 1 for that call only (the device it records is not used by context parallelism).
    Returns the diffusers ParallelConfig.
    """
    from diffusers import ContextParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        raise RuntimeError("enable_context_parallel needs torch.distributed initialised (run under torchrun)")
    world = dist.get_world_size()
    ulysses = world // ring_degree if ulysses_degree is None else ulysses_degree
    if ulysses * ring_degree != world:
        raise ValueError(
            f"ring_degree * ulysses_degree = {ring_degree} * {ulysses} must equal the world size {world}"
        )
    accel = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    device_type = accel.type if accel is not None else "cpu"
    mesh = init_device_mesh(device_type, (ring_degree, ulysses), mesh_dim_names=("ring", "ulysses"))
    config = ContextParallelConfig(ring_degree=ring_degree, ulysses_degree=ulysses, mesh=mesh)
    if accel is None:
        original = torch.accelerator.device_count
        torch.accelerator.device_count = lambda: 1  # type: ignore[assignment]
        try:
            transformer.enable_parallelism(config=config)
        finally:
            torch.accelerator.device_count = original  # type: ignore[assignment]
    else:
        transformer.enable_parallelism(config=config)
    return transformer._parallel_config


__all__ = ["enable_context_parallel", "lifted_cp_hooks"]
