"""One rank of the 2-process CPU (gloo) context-parallel checks; launched by test_context_parallel.py.

Usage: `python cp_worker.py OUT_DIR` with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set. Writes
`OUT_DIR/rank{R}.json` (stats, sync values) and `OUT_DIR/rank{R}_{scenario}.pt` (outputs). The scenarios and
`run_scenario` are imported by the test too, which runs them in a single process for the reference.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

import cache_dit
from cache_dit.testing.cases import CASES, count_block_calls

STEPS = 8
THRESHOLD_SKEW = 0.3  # the decision threshold the skewed-shard check is read against


def dbcache_taylorseer(threshold: float) -> dict[str, Any]:
    """DBCache F1B2 with the first of the last two blocks reusing its residual (Bn ids), TaylorSeer order 1."""
    return {
        "cache_type": "DBCache",
        "Fn_compute_blocks": 1,
        "Bn_compute_blocks": 2,
        "Bn_compute_blocks_ids": [1],
        "non_compute_blocks_diff_threshold": 0.3,
        "residual_diff_threshold": threshold,
        "warmup_steps": 1,
        "enable_taylorseer": True,
        "taylorseer_kwargs": {"n_derivatives": 1},
    }


def dbprune(threshold: float) -> dict[str, Any]:
    return {
        "cache_type": "DBPrune",
        "Fn_compute_blocks": 1,
        "Bn_compute_blocks": 1,
        "residual_diff_threshold": threshold,
        "warmup_steps": 1,
    }


def output_schedule() -> dict[str, Any]:
    """The transformer's whole output forecast (TaylorSeer order 1) on a fixed schedule: no block on a cached step."""
    return {
        "cache_type": "DBCache",
        "Fn_compute_blocks": 0,
        "Bn_compute_blocks": 0,
        "compute_steps": [0, 1, 2, 4, 6],
        "enable_taylorseer": True,
        "taylorseer_cache_type": "output",
        "taylorseer_kwargs": {"n_derivatives": 1},
    }


# name -> (model case, options, order): "parallel_first" = enable_parallelism then cache, "cache_first" = reverse
SCENARIOS: dict[str, tuple[str, dict[str, Any], str]] = {
    "flux_dbcache_taylorseer": ("flux", dbcache_taylorseer(0.25), "parallel_first"),
    "wan_dbcache_taylorseer": ("wan", dbcache_taylorseer(0.25), "cache_first"),
    "flux_dbprune": ("flux", dbprune(0.15), "cache_first"),
    "wan_dbprune": ("wan", dbprune(0.25), "parallel_first"),
    "flux_output_schedule": ("flux", output_schedule(), "cache_first"),
    "wan_output_schedule": ("wan", output_schedule(), "parallel_first"),
}


def _hook_names(module: torch.nn.Module) -> list[list[str]]:
    """diffusers' hooks on every submodule (context-parallel split/gather hooks among them)."""
    return [list(getattr(m.__dict__.get("_diffusers_hook"), "_hook_order", [])) for m in module.modules()]


def _cache_wrappers_left(module: torch.nn.Module) -> int:
    """Forwards (or what they wrap) that still go through a cache runner."""
    from cache_dit.cache_factory.runner import CacheRunner

    left = 0
    for m in module.modules():
        fn, seen = m.__dict__.get("forward"), 0
        while fn is not None and seen < 20:
            inner = getattr(fn, "func", None)
            left += isinstance(getattr(inner, "__self__", None), CacheRunner)
            fn, seen = getattr(fn, "__wrapped__", None), seen + 1
    return left


def run_scenario(name: str, parallel: bool) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Run one scenario; `parallel`: under diffusers' Ulysses context parallelism over all ranks.

    Returns (stats and checks, cached output, output of a second call after `disable_cache`).
    """
    from cache_dit.parallel import enable_context_parallel

    case_name, options, order = SCENARIOS[name]
    case = CASES[case_name]
    pipe = case.build()
    counts, _ = count_block_calls(pipe.transformer)  # innermost: counts real block computations
    info: dict[str, Any] = {}
    if parallel and order == "parallel_first":
        enable_context_parallel(pipe.transformer)
    cache_dit.apply_cache_on_pipe(pipe, **options)
    if parallel and order == "cache_first":
        enable_context_parallel(pipe.transformer)
    out = case.run(pipe, steps=STEPS)
    stats = cache_dit.summary(pipe)
    info["stats"] = {
        "cached_steps": stats.cached_steps,
        "cfg_cached_steps": stats.cfg_cached_steps,
        "pruned_blocks": stats.pruned_blocks,
        "cfg_pruned_blocks": stats.cfg_pruned_blocks,
        "block_calls": {str(k): v for k, v in sorted(counts.items())},
    }
    info["residual_diffs"] = {str(k): v for k, v in sorted(stats.residual_diffs.items())}
    info["cfg_residual_diffs"] = {str(k): v for k, v in sorted(stats.cfg_residual_diffs.items())}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache_dit.disable_cache(pipe)
    info["disable_warnings"] = [str(w.message) for w in caught if "cache-dit" in str(w.message)]
    info["cache_wrappers_left"] = _cache_wrappers_left(pipe.transformer)
    info["hook_names"] = _hook_names(pipe.transformer)
    return info, out, case.run(pipe, steps=STEPS)  # the last: after disable_cache


def sync_checks(rank: int) -> dict[str, Any]:
    """The sync function on hand-built shards: rank 1's shard is far more dynamic than rank 0's."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from cache_dit.cache_factory.decision import relative_l1
    from cache_dit.parallel import DecisionSync, synced_relative_l1

    world = dist.group.WORLD
    prev = [torch.ones(2, 16, 8), torch.ones(2, 16, 8)]
    cur = [prev[0] * 1.01, prev[1] * 2.0]  # local relative L1: 0.01 (rank 0) and 1.0 (rank 1)
    mine_cur, mine_prev = cur[rank], prev[rank]
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("seq",))
    zeros = torch.zeros(3, 4)
    one_sided = torch.ones(3, 4) if rank == 1 else zeros  # rank 0: 0/0 locally; the whole: 12/0
    return {
        "local": relative_l1(mine_cur, mine_prev).item(),
        "synced": synced_relative_l1(mine_cur, mine_prev, world),
        "single": relative_l1(torch.cat(cur, 1), torch.cat(prev, 1)).item(),
        "via_runner_sync": DecisionSync(torch.nn.Linear(1, 1), world).relative_l1(mine_cur, mine_prev),
        "via_mesh": DecisionSync(torch.nn.Linear(1, 1), mesh).relative_l1(mine_cur, mine_prev),
        "both_zero": synced_relative_l1(zeros, zeros, world),
        "prev_zero": synced_relative_l1(one_sided, zeros, world),
        "one_rank_zero": synced_relative_l1(one_sided, one_sided * 0.5 if rank == 1 else zeros, world),
    }


def para_attn_check() -> dict[str, Any]:
    """ParaAttention, where installed: the cache must refuse it at apply time with the versions named."""
    try:
        from para_attn.context_parallel import init_context_parallel_mesh
        from para_attn.context_parallel.diffusers_adapters import parallelize_pipe
    except ImportError:
        return {"installed": False}
    pipe = CASES["flux"].build()
    parallelize_pipe(pipe, mesh=init_context_parallel_mesh("cpu"))
    try:
        cache_dit.apply_cache_on_pipe(pipe, cache_type="FBCache", warmup_steps=1)
    except RuntimeError as exc:
        return {
            "installed": True,
            "error": str(exc),
            "runner_left": hasattr(pipe.transformer, "_cache_dit_runner"),
        }
    return {"installed": True, "error": None}


def main() -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    out_dir = Path(sys.argv[1])
    # a collective that never completes errors out here instead of hanging (the test also has a hard timeout)
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank = dist.get_rank()
    result: dict[str, Any] = {"sync": sync_checks(rank), "scenarios": {}}
    for name in SCENARIOS:
        info, out, uncached = run_scenario(name, parallel=True)
        result["scenarios"][name] = info
        torch.save({"cached": out, "disabled": uncached}, out_dir / f"rank{rank}_{name}.pt")
    result["para_attn"] = para_attn_check()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
