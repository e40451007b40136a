"""DBCache / FBCache: compute this step's middle blocks, or serve them from the cache?

The threshold gate compares the first Fn blocks' residual with the one of the last computed step (the one
host sync of a step, reduced over the context-parallel group); a fixed schedule (`compute_steps`) decides by
the step index alone, with no sync.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from ..decision import is_similar, relative_l1, step_can_cache
from ..state import BranchState, CallState, Pass, same_layout

if TYPE_CHECKING:
    from ..runner import CacheRunner

_log = logging.getLogger("cache_dit.cache_factory.runner")  # per-step decisions at DEBUG (set_verbose)


class StepGate:
    """The per-step decision of DBCache and FBCache."""

    def __init__(self, runner: CacheRunner) -> None:
        self.runner = runner

    def decide(self, p: Pass, fn_residual: torch.Tensor | None) -> None:
        """Cache this step or not. The one host sync of a DBCache step is here (none with a schedule)."""
        r = self.runner
        branch, step, db = p.branch, p.step, r.db
        p.fn_residual = fn_residual
        if p.replay:
            p.cached = self.middle_ready(branch, p.encoder_layout)
            return
        call = r.runs.call
        shared = not r.config.cfg.cfg_diff_compute_separate
        decided = call.step_decisions.get(step) if shared else None
        if r.schedule is not None:  # fixed schedule: no diff, no host sync
            cached = (
                r.caching_enabled and step not in r.schedule and self.middle_ready(branch, p.encoder_layout)
            )
        elif decided is not None:  # another branch already decided this step for both
            cached = decided and self.middle_ready(branch, p.encoder_layout)
        else:
            diff = None
            # can the diff change anything? (not at threshold 0, on warm-up steps or past the caching limits)
            can_cache = (
                r.caching_enabled
                and db.residual_diff_threshold > 0
                and step_can_cache(
                    step,
                    db.warmup_steps,
                    len(branch.cached_steps),
                    db.max_cached_steps,
                    branch.continuous_cached,
                    db.max_continuous_cached_steps,
                )
            )
            if same_layout(branch.fn_residual, fn_residual):
                if can_cache:
                    diff = r.sync.relative_l1(fn_residual, branch.fn_residual)  # host sync (all ranks alike)
                    branch.residual_diffs[step] = diff
                else:  # kept on the device for the stats: summary() reads it, this step needs no sync
                    branch.residual_diffs[step] = relative_l1(fn_residual, branch.fn_residual)
            elif branch.fn_residual is not None:
                r.warn_once(
                    "fn-layout",
                    "hidden states changed shape/dtype/device between steps of one call; computing fully",
                )
            cached = (
                diff is not None
                and is_similar(diff, db.residual_diff_threshold)
                and self.middle_ready(branch, p.encoder_layout)
            )
            if shared:
                call.step_decisions[step] = cached
        p.cached = cached
        if _log.isEnabledFor(logging.DEBUG):
            diff = branch.residual_diffs.get(step)
            diff = float(diff) if diff is not None else None  # a tensor where it decided nothing
            why = "schedule" if r.schedule is not None else "no diff (nothing to compare yet)"
            _log.debug(
                "step %d %s: %s, %s",
                step,
                branch.name,
                f"diff {diff:.4f}" if diff is not None else why,
                "cached" if cached else "computed",
            )
        if cached:
            branch.cached_steps.append(step)
            branch.continuous_cached += 1
        else:
            branch.continuous_cached = 0
            branch.fn_residual = fn_residual

    def middle_ready(self, branch: BranchState, encoder_layout: tuple[Any, ...] | None) -> bool:
        """Every middle segment has a stored residual, and the encoder stream entering the middle kept its
        layout (a residual computed against other text is stale). Whether each segment's residual fits its
        hidden input is checked at the segment's start."""
        r = self.runner
        if not all(
            start in branch.segments and branch.segments[start].hidden.factors for start in r.segment_starts
        ):
            return False
        if encoder_layout != branch.mid_encoder_layout:
            r.warn_once(
                "enc-step-layout",
                "encoder (text) states changed shape/dtype/device between steps of one call; computing fully",
            )
            return False
        return True

    def check_call(self, call: CallState) -> None:
        """After a call: warn when the options could cache nothing at the steps it ran, or when a fixed
        schedule was plainly made for another step count."""
        r = self.runner
        if not call.branches or not r.caching_enabled or r.db is None:
            return
        # the pipeline's own count where its marks carry it: with several denoisers (Wan 2.2) each one runs only
        # a stretch of the steps, numbered as the pipeline numbers them
        steps = call.marked_num_steps or max(branch.calls for branch in call.branches.values())
        if r.schedule is None:
            if r.db.warmup_steps >= steps:
                r.warn_once(
                    "nothing-cacheable",
                    f"warmup_steps={r.db.warmup_steps} >= the {steps} steps this call ran: no step can be "
                    "cached (lower warmup_steps, or run more steps)",
                )
            return
        if not r.schedule:
            return
        listed = sorted(r.schedule)
        if all(step in r.schedule for step in range(steps)):
            r.warn_once(
                "nothing-cacheable",
                f"compute_steps lists every one of the {steps} steps this call ran: no step can be cached",
            )
            return
        gaps = [b - a for a, b in zip([0, *listed], [*listed, steps])]
        if listed[-1] >= steps:
            r.warn_once(
                "schedule-steps",
                f"compute_steps lists step {listed[-1]}, but this call ran {steps} steps: the schedule was made "
                "for more steps (calibrate one for this step count)",
            )
        elif steps - listed[-1] > max(gaps[:-1], default=0) + 1:
            r.warn_once(
                "schedule-steps",
                f"compute_steps ends at step {listed[-1]}, but this call ran {steps} steps: its last "
                f"{steps - 1 - listed[-1]} steps were all served from the cache (the schedule was made for "
                "fewer steps; calibrate one for this step count)",
            )
