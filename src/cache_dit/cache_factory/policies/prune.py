"""DBPrune: per block, reuse its stored residual when its input barely changed since it was last computed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..decision import dynamic_prune_threshold, is_similar
from ..segments import block_buffers, reuse_block
from ..state import BranchState, Pass

if TYPE_CHECKING:
    from ..runner import CacheRunner

_log = logging.getLogger("cache_dit.cache_factory.runner")


class PrunePolicy:
    """The per-block decision of DBPrune (one host sync per prunable block it compares)."""

    def __init__(self, runner: CacheRunner) -> None:
        self.runner = runner
        cfg = runner.prune
        never = set(cfg.non_prune_blocks_ids)
        self.prunable = [
            cfg.Fn_compute_blocks <= i < runner.mid_end and i not in never for i in range(runner.num_blocks)
        ]

    def open(self, p: Pass) -> None:
        """May this pass prune at all (warm-up over, budget left)?"""
        cfg, branch = self.runner.prune, p.branch
        p.prune_allowed = (
            self.runner.caching_enabled
            and p.step >= cfg.warmup_steps
            and (cfg.max_pruned_steps < 0 or branch.pruned_steps < cfg.max_pruned_steps)
        )

    def block(
        self, p: Pass, idx: int, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not self.prunable[idx]:
            p.computed += 1
            return forward(*args, **kwargs)
        r = self.runner
        cfg, branch, io = r.prune, p.branch, r.ios[idx]
        hidden, encoder = io.inputs(args, kwargs)
        stored = branch.blocks.get(idx)
        if p.prune_allowed and stored is not None:
            if stored.matches(hidden, encoder):
                diff = r.sync.relative_l1(hidden, stored.hidden_in)  # host sync, one per prunable block
                threshold = cfg.residual_diff_threshold
                if cfg.enable_dynamic_prune_threshold:
                    threshold = dynamic_prune_threshold(
                        threshold,
                        p.prune_diffs,
                        cfg.dynamic_prune_threshold_relax_ratio,
                        cfg.max_dynamic_prune_threshold,
                    )
                p.prune_diffs.append(diff)
                pruned = is_similar(diff, threshold)
                _log.debug(
                    "step %d %s block %d: diff %.4g, threshold %.4g, %s",
                    p.step,
                    branch.name,
                    idx,
                    diff,
                    threshold,
                    "pruned" if pruned else "computed",
                )
                if pruned:
                    p.pruned += 1
                    return r.executor.output(idx, io, *reuse_block(io, stored, hidden, encoder))
            else:
                r.warn_once(
                    "prune-layout",
                    "block input (hidden or encoder states) changed shape/dtype/device between steps; "
                    "computing fully",
                )
        out = forward(*args, **kwargs)
        p.computed += 1
        if r.caching_enabled and (
            stored is None
            or not stored.matches(hidden, encoder)
            or p.step % cfg.residual_cache_update_interval == 0
        ):
            branch.blocks[idx] = block_buffers(io, hidden, encoder, out)
        return out

    @staticmethod
    def close(p: Pass, branch: BranchState) -> None:
        """A pass ended normally: record what it pruned."""
        branch.pruned_blocks.append(p.pruned)
        branch.actual_blocks.append(p.computed)
        if p.pruned:
            branch.pruned_steps += 1
        if p.prune_diffs:
            branch.residual_diffs[p.step] = sum(p.prune_diffs) / len(p.prune_diffs)
