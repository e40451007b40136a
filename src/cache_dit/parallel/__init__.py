"""Context-parallel glue: every rank takes the same cache decision.

- `sync`: the one collective, an all-reduce of a decision's statistics (a no-op without a group);
- `groups`: where the group comes from (explicit `parallel_group=`, diffusers' `enable_parallelism`,
  ParaAttention) and `DecisionSync`, which the cache runner asks at each decision;
- `native`: diffusers' context-parallel hooks kept outside the cache's wrappers; a mesh helper for CPU and GPU;
- `para_attn_compat`: ParaAttention detection and its supported versions.
"""

from __future__ import annotations

# cache_factory first: it imports this package's submodules (runner: groups, apply: native)
from .. import cache_factory as _cache_factory  # noqa: F401
from .groups import DecisionSync, diffusers_cp_group, resolve_group
from .native import enable_context_parallel, lifted_cp_hooks
from .para_attn_compat import check_para_attn, is_para_attn_parallelized
from .sync import ratio_from_stats, relative_l1_stats, synced_relative_l1

__all__ = [
    "DecisionSync",
    "check_para_attn",
    "diffusers_cp_group",
    "enable_context_parallel",
    "is_para_attn_parallelized",
    "lifted_cp_hooks",
    "ratio_from_stats",
    "relative_l1_stats",
    "resolve_group",
    "synced_relative_l1",
]
