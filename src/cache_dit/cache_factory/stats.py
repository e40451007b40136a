"""`CacheStats`: what the cache did during the last pipeline call."""

from __future__ import annotations

from dataclasses import dataclass, field

from .state import BranchState, CallState

# Branch names pipelines mark (diffusers' `transformer.cache_context(name)`), by role. A pipeline that batches
# cond and uncond into one call ("cond_uncond": Mochi, CogVideoX) caches that call as one branch: one decision
# for the whole batch; its stats fill the conditional fields.
COND_NAMES = ("cond", "pred_cond", "cond_uncond")
UNCOND_NAMES = ("uncond", "pred_uncond")


@dataclass
class BranchStats:
    """What the cache did on one branch (a sequence of transformer calls the pipeline marks with one name).

    Attributes:
        name: the branch's mark ("cond", "uncond", "pred_cond", "cond_uncond", ...; "cond" when unmarked).
        num_steps: transformer calls on this branch.
        cached_steps / residual_diffs / pruned_blocks / actual_blocks / pruned_steps: as in `CacheStats`.
    """

    name: str
    num_steps: int = 0
    cached_steps: list[int] = field(default_factory=list)
    residual_diffs: dict[int, float] = field(default_factory=dict)
    pruned_blocks: list[int] = field(default_factory=list)
    actual_blocks: list[int] = field(default_factory=list)
    pruned_steps: int = 0

    @classmethod
    def from_branch(cls, branch: BranchState) -> BranchStats:
        return cls(
            name=branch.name,
            num_steps=branch.calls,
            cached_steps=list(branch.cached_steps),
            # a diff no decision needed may be kept as a 0-dim device tensor (no sync per step): read here
            residual_diffs={step: float(diff) for step, diff in branch.residual_diffs.items()},
            pruned_blocks=list(branch.pruned_blocks),
            actual_blocks=list(branch.actual_blocks),
            pruned_steps=branch.pruned_steps,
        )

    @property
    def batched_cfg(self) -> bool:
        """The pipeline's batched call ("cond_uncond"; cond + uncond when CFG is on): every decision here
        covered the whole batch."""
        return self.name == "cond_uncond"


@dataclass
class CacheStats:
    """Stats of the last pipeline call.

    Every branch the pipeline used is in `branches`, by its name, in order of first use. The flat fields are
    shortcuts: the unprefixed ones describe the conditional branch ("cond", "pred_cond", or the batched
    "cond_uncond" of Mochi/CogVideoX; a single branch of any other name counts as conditional too), the
    `cfg_*` ones the unconditional branch ("uncond" or "pred_uncond"); they stay empty for a role the pipeline
    did not run.

    Attributes:
        cache_type: the cache type in use ("NONE" when no cache is applied).
        num_steps / cfg_num_steps: transformer calls seen per branch.
        cached_steps: 0-based step ids that skipped the middle blocks (DBCache/FBCache).
        residual_diffs: step -> relative L1 diff that decided it (every step once it could be computed,
            warmup steps included). DBPrune: the mean of the block diffs measured in that step.
        pruned_blocks / actual_blocks: per step, blocks pruned / computed (DBPrune).
        pruned_steps: steps with at least one pruned block (DBPrune).
        pruned_ratio: percent of all block calls pruned, all branches (DBPrune).
        branches: branch name -> `BranchStats`, for every branch the pipeline used.
    """

    cache_type: str = "NONE"
    num_steps: int = 0
    cached_steps: list[int] = field(default_factory=list)
    residual_diffs: dict[int, float] = field(default_factory=dict)
    cfg_num_steps: int = 0
    cfg_cached_steps: list[int] = field(default_factory=list)
    cfg_residual_diffs: dict[int, float] = field(default_factory=dict)
    pruned_blocks: list[int] = field(default_factory=list)
    actual_blocks: list[int] = field(default_factory=list)
    pruned_steps: int = 0
    cfg_pruned_blocks: list[int] = field(default_factory=list)
    cfg_actual_blocks: list[int] = field(default_factory=list)
    cfg_pruned_steps: int = 0
    pruned_ratio: float = 0.0
    branches: dict[str, BranchStats] = field(default_factory=dict)

    @classmethod
    def from_call(cls, cache_type: str, call: CallState) -> CacheStats:
        stats = cls(cache_type=cache_type)
        stats.branches = {name: BranchStats.from_branch(b) for name, b in call.branches.items()}
        cond = _first(stats.branches, COND_NAMES)
        uncond = _first(stats.branches, UNCOND_NAMES)
        if cond is None and uncond is None and len(stats.branches) == 1:
            cond = next(iter(stats.branches.values()))
        for branch, prefix in ((cond, ""), (uncond, "cfg_")):
            if branch is None:
                continue
            for name in ("num_steps", "cached_steps", "residual_diffs", "pruned_blocks", "actual_blocks"):
                value = getattr(branch, name)
                setattr(stats, f"{prefix}{name}", value.copy() if hasattr(value, "copy") else value)
            setattr(stats, f"{prefix}pruned_steps", branch.pruned_steps)
        pruned = sum(sum(b.pruned_blocks) for b in call.branches.values())
        total = pruned + sum(sum(b.actual_blocks) for b in call.branches.values())
        stats.pruned_ratio = 100.0 * pruned / total if total else 0.0
        return stats

    def __str__(self) -> str:
        lines = [f"cache_type: {self.cache_type}"]
        for branch in self.branches.values():
            if not branch.num_steps:
                continue
            label = branch.name
            note = " (batched call: one decision for the whole batch)" if branch.batched_cfg else ""
            cached = branch.cached_steps
            lines.append(f"[{label}] steps: {branch.num_steps}, cached: {len(cached)} {cached}{note}")
            if branch.residual_diffs:
                shown = ", ".join(f"{k}: {v:.4f}" for k, v in sorted(branch.residual_diffs.items()))
                lines.append(f"[{label}] residual diffs: {{{shown}}}")
            if branch.pruned_blocks:
                lines.append(
                    f"[{label}] pruned steps: {branch.pruned_steps}, "
                    f"pruned blocks per step: {branch.pruned_blocks}"
                )
        if any(b.pruned_blocks for b in self.branches.values()):
            lines.append(f"pruned ratio: {self.pruned_ratio:.2f}%")
        return "\n".join(lines)


def _first(branches: dict[str, BranchStats], names: tuple[str, ...]) -> BranchStats | None:
    for name in names:
        if name in branches:
            return branches[name]
    return None
