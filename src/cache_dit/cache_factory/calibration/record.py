"""The recorded runs: each calibration input once with every step computed (the same output as uncached),
recording a fixed random sample of every middle segment's hidden-stream residual and of the transformer's output
at every step (through `CacheRunner.recorder`), the timesteps, and which steps each denoiser ran."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..apply import apply_cache_on_pipe, disable_cache
from ..runner import get_runner
from .search import Piece, step_weights
from .verify import Inputs

SAMPLE = 16384  # recorded elements per (branch, segment): the cost model's view of a residual


class Recorder:
    """Keeps a fixed random sample of each (branch, segment) hidden residual, and of each branch's transformer
    output (segment -1), per step, as float32 on the CPU."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, int], dict[int, torch.Tensor]] = {}
        self.index: dict[tuple[str, int], torch.Tensor] = {}
        self.shape: dict[tuple[str, int], torch.Size] = {}  # the residual's shape at the key's first step

    def __call__(self, branch: str, step: int, start: int, stream: str, value: torch.Tensor) -> None:
        if stream not in ("hidden", "output"):
            return
        key = (branch, start)
        flat = value.detach().reshape(-1)
        if key not in self.index:
            n = flat.numel()
            g = torch.Generator().manual_seed(start)
            self.index[key] = torch.randperm(n, generator=g)[: min(n, SAMPLE)].to(flat.device)
            self.shape[key] = value.shape
        if value.shape != self.shape[key]:  # no device read: the sample indices fit every step alike
            what = "transformer output" if start < 0 else f"residual of segment {start}"
            raise ValueError(
                f"calibrate needs the same shapes at every denoising step; the {what} changed from "
                f"{tuple(self.shape[key])} to {tuple(value.shape)} at step {step}"
            )
        self.values.setdefault(key, {})[step] = flat[self.index[key]].float().cpu()

    def matrices(self, steps: int, output: bool = False, first: int = 0) -> list[torch.Tensor]:
        """One (steps, sample) matrix per (branch, segment) residual recorded at every step `first` ..
        `first + steps - 1` (`output`: per branch output instead)."""
        out = []
        wanted = list(range(first, first + steps))
        for key, per_step in self.values.items():
            if (key[1] < 0) != output:
                continue
            if sorted(per_step) != wanted:
                raise ValueError(
                    f"calibrate: branch {key[0]!r} was not recorded at every step (got {sorted(per_step)})"
                )
            out.append(torch.stack([per_step[k] for k in wanted]))
        return out

    def steps(self) -> list[int]:
        return sorted({step for per_step in self.values.values() for step in per_step})


class _EveryStepSchedule(frozenset):
    """The recording run's schedule: every step is computed, and no step-count warning applies."""

    def __contains__(self, step: object) -> bool:
        return True

    def __bool__(self) -> bool:
        return False


_EVERY_STEP = _EveryStepSchedule()


@dataclass
class Recording:
    """One input's every-step run."""

    reference: np.ndarray  # the pipeline's output (float64), what the cached runs are scored against
    recorders: dict[str, Recorder]  # per denoiser
    spans: dict[str, tuple[int, int]]  # denoiser -> (its first step, its steps); denoisers the call used
    timesteps: list[float]  # the first call's timestep at each step (CFG calls share it)


def record(
    pipe: Any, denoisers: dict[str, torch.nn.Module], inputs: Inputs, fn: int, bn: int
) -> tuple[list[Recording], dict[str, int]]:
    """Every input's recorded run, and each denoiser's block count. The pipeline is left uncached."""
    apply_cache_on_pipe(
        pipe, cache_type="DBCache", Fn_compute_blocks=fn, Bn_compute_blocks=bn, compute_steps=[0]
    )
    try:
        runners = {name: get_runner(module) for name, module in denoisers.items()}
        for runner in runners.values():
            runner.schedule = _EVERY_STEP
        recordings = [_record_one(denoisers, runners, inputs, i) for i in range(len(inputs))]
        blocks = {name: r.num_blocks for name, r in runners.items()}
    finally:
        disable_cache(pipe)
    return recordings, blocks


def _record_one(
    denoisers: dict[str, torch.nn.Module], runners: dict[str, Any], inputs: Inputs, i: int
) -> Recording:
    recorders = {name: Recorder() for name in denoisers}
    timesteps: list[float] = []
    hooks = []
    for name, runner in runners.items():
        runner.recorder = recorders[name]

        def note_timestep(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], runner=runner) -> None:
            t = runner.timestep(args, kwargs)
            if t is not None and (not timesteps or t != timesteps[-1]):
                timesteps.append(t)

        hooks.append(denoisers[name].register_forward_pre_hook(note_timestep, with_kwargs=True))
    try:
        reference = inputs.run(i)
    finally:
        for hook in hooks:
            hook.remove()
    spans = {  # denoiser -> (its first step, its steps) in the pipeline's step numbering
        name: (
            min(recorders[name].steps(), default=0),
            max((b.calls for b in r.call.branches.values()), default=0),
        )
        for name, r in runners.items()
    }
    spans = {name: span for name, span in spans.items() if span[1] > 0}  # a denoiser the call never used
    return Recording(reference, recorders, spans, timesteps)


@dataclass
class Layout:
    """What the recorded runs say about the pipeline: the step count, each denoiser's stretch of steps (the
    same on every input), the block count, the forecast targets the search may use, and its inputs (pieces)."""

    num_steps: int
    spans: dict[str, tuple[int, int]]
    num_blocks: int
    targets: list[str]
    pieces: list[list[Piece]]  # [input][denoiser, in step order]
    cost_labels: list[str]
    skipped: str  # why the output forecast was not tried ("" when it was, or was not asked for)


def layout(
    recordings: list[Recording],
    blocks: dict[str, int],
    denoisers: dict[str, torch.nn.Module],
    cache_types: Sequence[str],
    fn: int,
    bn: int,
) -> Layout:
    """Checks the recorded runs fit one schedule and builds the search's inputs from them."""
    spans = recordings[0].spans
    for i, rec in enumerate(recordings[1:], start=1):
        if rec.spans != spans:
            raise ValueError(
                "calibrate needs every input to run the same steps with the same denoisers (one schedule fits "
                f"them all); input 0: {_describe(spans)}; input {i}: {_describe(rec.spans)}"
            )
    num_steps = max(first + n for first, n in spans.values())
    covered = sorted(step for first, n in spans.values() for step in range(first, first + n))
    if covered != list(range(num_steps)):
        raise ValueError(
            "calibrate needs each denoiser to run one stretch of consecutive steps, together every step once; "
            f"got {_describe(spans)}"
        )
    if len(set(blocks[name] for name in spans)) != 1:
        raise ValueError(
            "calibrate needs the denoisers to have the same number of blocks (its speedup counts steps); got "
            + ", ".join(f"{name}: {blocks[name]}" for name in spans)
        )
    num_blocks = blocks[next(iter(spans))]
    if fn + bn >= num_blocks:
        raise ValueError(
            f"Fn_compute_blocks + Bn_compute_blocks = {fn + bn} leaves no block of the {num_blocks} to cache"
        )
    skipped = ""
    if "output" in cache_types and (fn or bn):
        skipped = "output forecasts not tried: they need Fn_compute_blocks=0 and Bn_compute_blocks=0"
    elif "output" in cache_types:
        lacking = [
            name
            for rec in recordings
            for name, (f, n) in spans.items()
            if not rec.recorders[name].matrices(n, output=True, first=f)
        ]
        if lacking:
            skipped = f"output forecasts not tried: {type(denoisers[lacking[0]]).__name__} does not return one tensor"
            if list(cache_types) == ["output"]:
                raise ValueError(
                    f"calibrate: cache_types=['output'], but {skipped}; use cache_types=['residual']"
                )
    targets = [t for t in ("residual", "output") if t in cache_types and not (t == "output" and skipped)]
    weights = [step_weights(rec.timesteps, num_steps) for rec in recordings]
    cost_labels = ["per step"] + (["by step size"] if all(w is not None for w in weights) else [])
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    pieces = [
        [
            Piece(
                first,
                n,
                {t: rec.recorders[name].matrices(n, output=t == "output", first=first) for t in targets},
                {"per step": None, "by step size": None if w is None else w[first : first + n]},
            )
            for name, (first, n) in ordered
        ]
        for rec, w in zip(recordings, weights)
    ]
    return Layout(num_steps, spans, num_blocks, targets, pieces, cost_labels, skipped)


def _describe(spans: dict[str, tuple[int, int]]) -> str:
    return ", ".join(f"{name}: steps {f}..{f + n - 1}" for name, (f, n) in spans.items()) or "no step"
