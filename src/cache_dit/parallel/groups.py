"""Which process group a cache's decisions are reduced over, and the object the runner asks at each decision.

The rule (checked in this order; the first that applies wins):

1. `parallel_group=` given to `apply_cache_on_pipe`: a `torch.distributed` ProcessGroup, or a DeviceMesh (all of
   its ranks). If the transformer also carries diffusers' context-parallel config, the two must hold the same
   ranks, else a ValueError.
2. diffusers' native context parallelism (`transformer.enable_parallelism(config=ContextParallelConfig(...))`):
   the group of the config's flattened ("ring", "ulysses") mesh, the ranks that shard one sequence. Tensor
   parallelism alone needs no group: every rank holds the whole sequence and computes the same diff.
3. ParaAttention (`parallelize_pipe`, which marks the transformer `_is_parallelized`): it does not record its
   mesh on the transformer, so `parallel_group=mesh` is required; and para-attn <= 0.3.38 does not run with
   the diffusers versions this project supports (see `para_attn_compat.check_para_attn`).
4. Otherwise no group: each process decides on its own tensors (a process group alone, e.g. data parallel,
   is not a sign that ranks share a sequence).

The group is looked up again at every decision until one is found, so the cache may be applied before or after
the transformer is parallelized.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .para_attn_compat import check_para_attn, is_para_attn_parallelized
from .sync import synced_relative_l1

try:
    from torch.distributed.device_mesh import DeviceMesh
except ImportError:  # pragma: no cover - torch without distributed
    DeviceMesh = None  # type: ignore[assignment,misc]


def _is_mesh(value: Any) -> bool:
    return DeviceMesh is not None and isinstance(value, DeviceMesh)


def _group_of(value: Any, name: str = "parallel_group") -> Any:
    """A ProcessGroup for a ProcessGroup or a DeviceMesh (all of its ranks)."""
    if not dist.is_available():
        raise ValueError(f"{name} was given but torch.distributed is not available in this torch build")
    if isinstance(value, dist.ProcessGroup):
        return value
    if _is_mesh(value):
        if value.ndim == 1:
            return value.get_group()
        return value._flatten().get_group()  # every rank of the mesh (collective: all ranks apply alike)
    raise TypeError(
        f"{name} must be a torch.distributed ProcessGroup or DeviceMesh (or None to find it from the "
        f"transformer), got {type(value).__name__}: {value!r}"
    )


def _ranks(group: Any) -> list[int]:
    return sorted(dist.get_process_group_ranks(group))


def diffusers_cp_group(transformer: torch.nn.Module) -> Any:
    """The process group of diffusers' native context parallelism on `transformer`, or None."""
    config = getattr(transformer, "_parallel_config", None)
    cp = getattr(config, "context_parallel_config", None)
    mesh = getattr(cp, "_flattened_mesh", None)
    return mesh.get_group() if mesh is not None else None


def resolve_group(transformer: torch.nn.Module, explicit: Any = None) -> Any:
    """The group to reduce decisions over (see the module docstring), or None. Raises on ambiguity."""
    native = diffusers_cp_group(transformer)
    para = is_para_attn_parallelized(transformer)
    if native is not None and para:
        raise ValueError(
            f"{type(transformer).__name__} carries both diffusers' context parallelism (enable_parallelism) and "
            "ParaAttention's (parallelize_pipe); use one of them"
        )
    if para:
        check_para_attn()
    if explicit is not None:
        group = _group_of(explicit)
        if native is not None and _ranks(group) != _ranks(native):
            raise ValueError(
                f"parallel_group holds ranks {_ranks(group)}, but the transformer's context-parallel mesh "
                f"(enable_parallelism) shards the sequence over ranks {_ranks(native)}; pass that group or "
                "leave parallel_group=None to use it"
            )
    elif native is not None:
        group = native
    elif para:
        raise ValueError(
            f"{type(transformer).__name__} was parallelized by ParaAttention, which does not record its mesh on "
            "the transformer: pass parallel_group=mesh (the mesh given to parallelize_pipe) to apply_cache_on_pipe"
        )
    else:
        return None
    return group if dist.get_world_size(group) > 1 else None


class DecisionSync:
    """Held by a cache runner: reduces each decision's statistics over the context-parallel group.

    Built at apply time (bad `parallel_group` values and ambiguous setups raise there). Without a group every
    call is exactly `relative_l1(a, b).item()`.
    """

    def __init__(self, transformer: torch.nn.Module, parallel_group: Any = None) -> None:
        self.transformer = transformer
        self.explicit = parallel_group
        self.group = resolve_group(transformer, parallel_group)
        self._looked_at: tuple[int, bool] = self._marks()

    def _marks(self) -> tuple[int, bool]:
        return id(getattr(self.transformer, "_parallel_config", None)), is_para_attn_parallelized(
            self.transformer
        )

    def current_group(self) -> Any:
        """The group now; re-resolved when the transformer was parallelized after the cache was applied."""
        if self.group is None:
            marks = self._marks()
            if marks != self._looked_at:
                self._looked_at = marks
                self.group = resolve_group(self.transformer, self.explicit)
        return self.group

    def relative_l1(self, current: torch.Tensor, previous: torch.Tensor) -> float:
        """The decision's relative L1, the same float on every rank of the group (one host sync)."""
        return synced_relative_l1(current, previous, self.current_group())


__all__ = ["DecisionSync", "diffusers_cp_group", "resolve_group"]
