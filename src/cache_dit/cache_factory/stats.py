"""`CacheStats`: what the cache did during the last pipeline call."""

from __future__ import annotations

from dataclasses import dataclass, field

from .state import CallState


@dataclass
class CacheStats:
    """Stats of the last pipeline call. `cfg_*` fields describe the unconditional (CFG) branch.

    Attributes:
        cache_type: the cache type in use ("NONE" when no cache is applied).
        num_steps / cfg_num_steps: transformer calls seen per branch.
        cached_steps: 0-based step ids that skipped the middle blocks (DBCache/FBCache).
        residual_diffs: step -> relative L1 diff that decided it (every step once it could be computed,
            warmup steps included). DBPrune: the mean of the block diffs measured in that step.
        pruned_blocks / actual_blocks: per step, blocks pruned / computed (DBPrune).
        pruned_steps: steps with at least one pruned block (DBPrune).
        pruned_ratio: percent of all block calls pruned, both branches (DBPrune).
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

    @classmethod
    def from_call(cls, cache_type: str, call: CallState) -> CacheStats:
        stats = cls(cache_type=cache_type)
        for name, prefix in (("cond", ""), ("uncond", "cfg_")):
            branch = call.branches.get(name)
            if branch is None:
                continue
            setattr(stats, f"{prefix}num_steps", branch.calls)
            setattr(stats, f"{prefix}cached_steps", list(branch.cached_steps))
            setattr(stats, f"{prefix}residual_diffs", dict(branch.residual_diffs))
            setattr(stats, f"{prefix}pruned_blocks", list(branch.pruned_blocks))
            setattr(stats, f"{prefix}actual_blocks", list(branch.actual_blocks))
            setattr(stats, f"{prefix}pruned_steps", branch.pruned_steps)
        pruned = sum(sum(b.pruned_blocks) for b in call.branches.values())
        total = pruned + sum(sum(b.actual_blocks) for b in call.branches.values())
        stats.pruned_ratio = 100.0 * pruned / total if total else 0.0
        return stats

    def __str__(self) -> str:
        lines = [f"cache_type: {self.cache_type}"]
        for prefix, label in (("", "cond"), ("cfg_", "uncond")):
            n = getattr(self, f"{prefix}num_steps")
            if not n:
                continue
            cached = getattr(self, f"{prefix}cached_steps")
            diffs = getattr(self, f"{prefix}residual_diffs")
            lines.append(f"[{label}] steps: {n}, cached: {len(cached)} {cached}")
            if diffs:
                shown = ", ".join(f"{k}: {v:.4f}" for k, v in sorted(diffs.items()))
                lines.append(f"[{label}] residual diffs: {{{shown}}}")
            pruned = getattr(self, f"{prefix}pruned_blocks")
            if pruned:
                lines.append(
                    f"[{label}] pruned steps: {getattr(self, f'{prefix}pruned_steps')}, "
                    f"pruned blocks per step: {pruned}"
                )
        if self.pruned_blocks or self.cfg_pruned_blocks:
            lines.append(f"pruned ratio: {self.pruned_ratio:.2f}%")
        return "\n".join(lines)
