"""Budget mode: search a fixed schedule (`compute_steps`) and forecast order for a pipeline and a speed or quality.

`calibrate(pipe, call_kwargs, target_speedup=2.0)` (or `min_psnr=40.0`):

1. Runs the pipeline once with every step computed (bit-identical to the uncached pipeline), recording a fixed
   random sample of every middle segment's hidden-stream residual and of the transformer's output at every step
   (`CacheRunner.recorder`).
2. Cost model, per forecast target (the middle's residual, `taylorseer_cache_type="residual"`, or the
   transformer's whole output, `"output"`): for a candidate schedule and TaylorSeer order, replays the forecasts
   the cache would make on the recorded values (the same `TaylorSeer` code) and sums the mean absolute forecast
   error over the cached steps. For order 1 the best schedule with K computed steps is found exactly by dynamic
   programming over the last two computed steps; uniform schedules (a warmup, then one computed step every few
   steps) are scored too, and every candidate is scored with orders 0..max_order.
3. Verifies the best predicted candidates of each target with real cached runs (PSNR against the recorded run's
   output) and returns the best verified one as options for `apply_cache_on_pipe`.

Cost in pipeline runs: target_speedup: 1 + verify_runs; min_psnr: 1 + one run per probed step budget (a binary
search, about log2(num_inference_steps)) + verify_runs - 1. The search itself is a few seconds on the CPU.
A calibrated schedule fixes which steps run, so its speedup is the same on every input; its quality on inputs it
was not calibrated on is what the bench reports (bench/RESULTS.md).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .apply import _denoisers_of, _runners_of, apply_cache_on_pipe, disable_cache
from .runner import get_runner
from .taylorseer import TaylorSeer

SAMPLE = 16384  # recorded elements per (branch, segment): the cost model's view of a residual


class CalibratedOptions(dict):
    """The options dict `calibrate` returns (pass it as `apply_cache_on_pipe(pipe, **options)`), with what the
    calibration measured: `speedup` (block count), `psnr` (dB, verified on the calibration inputs),
    `num_inference_steps`, `model` (transformer class), `runs` (pipeline runs spent) and `table` (the rows
    printed: every verified candidate)."""

    speedup: float
    psnr: float
    num_inference_steps: int
    model: str
    runs: int
    table: list[dict[str, Any]]


@dataclass
class _Candidate:
    steps: tuple[int, ...]
    order: int
    source: str  # how the schedule was found
    predicted: float = math.inf
    psnr: float | None = None
    mix: bool = False  # TaylorSeer mix_orders
    target: str = "residual"  # what is forecast: the middle's residual, or the transformer's output

    @property
    def forecaster(self) -> str:
        return f"{self.order}{' mix' if self.mix else ''}{' output' if self.target == 'output' else ''}"


# ----------------------------------------------------------------------------------------------------------
# Recording and the cost model (pure functions on the recorded residuals)
# ----------------------------------------------------------------------------------------------------------


class _Recorder:
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


@dataclass
class _Piece:
    """The steps one denoiser ran, `first` .. `first + n - 1` of the pipeline's steps, and what was recorded there
    per forecast target (row i = step first + i). One piece per denoiser (Wan 2.2: two)."""

    first: int
    n: int
    recorded: dict[str, list[torch.Tensor]]
    weights: dict[str, torch.Tensor | None]  # per cost model: the step weights of this piece's steps

    def local(self, steps: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s - self.first for s in steps if self.first <= s < self.first + self.n)


def _schedule_cost(errors: torch.Tensor, steps: tuple[int, ...]) -> float:
    """The order-1 cost of a schedule as `_order1_errors` counts it (what `best_order1_schedule` minimizes)."""
    computed = set(steps)
    last, previous, total = None, -1, 0.0
    for k in range(errors.shape[1]):
        if k in computed or last is None:
            last, previous = k, (last if last is not None else -1)
        else:
            total += float(errors[previous + 1, last, k])
    return total


def forecast_cost(
    recorded: list[torch.Tensor],
    steps: tuple[int, ...],
    order: int,
    weights: torch.Tensor | None = None,
    mix: bool = False,
) -> float:
    """Sum over the cached steps k of weights[k] x the mean |forecast - recorded| of every recorded stream,
    forecasting as the cache does (TaylorSeer of `order`, updated at the computed `steps`) along the recorded
    trajectory. Weights None: 1 per step."""
    total = 0.0
    computed = set(steps)
    for values in recorded:
        seer = TaylorSeer(order, mix_orders=mix)
        for k in range(values.shape[0]):
            if k in computed or not seer.factors:
                seer.update(values[k], k)
            else:
                weight = 1.0 if weights is None else float(weights[k])
                total += weight * float((seer.predict(k) - values[k]).abs().mean())
    return total


def _order1_errors(recorded: list[torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
    """E[p + 1, a, k]: weighted error at step k > a forecasting from computed steps p < a (p = -1: only a, order
    0), as `forecast_cost` counts it."""
    n = recorded[0].shape[0]
    errors = torch.zeros(n + 1, n, n, dtype=torch.float64)
    ks = torch.arange(n, dtype=torch.float32)
    for values in recorded:
        for a in range(n):
            base = values[a]
            ahead = values[a + 1 :]  # steps a+1 .. n-1
            errors[0, a, a + 1 :] += (ahead - base).abs().mean(1).double()
            for p in range(a):
                slope = (base - values[p]) / (a - p)
                forecast = base + slope * (ks[a + 1 :] - a)[:, None]
                errors[p + 1, a, a + 1 :] += (forecast - ahead).abs().mean(1).double()
    if weights is not None:
        errors *= weights.double()[None, None, :]
    return errors


def step_weights(timesteps: list[float], num_steps: int) -> torch.Tensor | None:
    """How much an error at each step moves the result: the step's size |t_k - t_(k+1)| (t after the last step
    = 0), normalized to mean 1. None when the timesteps of the recorded run are not one per step."""
    if len(timesteps) != num_steps or num_steps < 2:
        return None
    t = torch.tensor([*timesteps, 0.0], dtype=torch.float64)
    sizes = (t[:-1] - t[1:]).abs()
    if not torch.isfinite(sizes).all() or float(sizes.sum()) <= 0:
        return None
    return sizes / sizes.mean()


def best_order1_schedule(errors: torch.Tensor, computed: int) -> tuple[int, ...]:
    """The schedule with `computed` steps (step 0 included) of least total order-1 forecast error: exact dynamic
    programming over the last two computed steps (p, a), vectorized over them."""
    n = errors.shape[1]
    cum = np.cumsum(errors.numpy(), axis=2)  # cum[p+1, a, k] = sum of the errors up to step k
    diag = cum[:, np.arange(n), np.arange(n)]  # (n+1, n): cum[p+1, a, a]
    # gap[p+1, a, b]: the cached steps a+1 .. b-1 between computed steps a and b (b = n: to the end)
    gap = np.full((n + 1, n, n + 1), np.inf)
    gap[:, :, 1:] = cum - diag[:, :, None]
    a_idx, b_idx = np.meshgrid(np.arange(n), np.arange(n + 1), indexing="ij")
    gap[:, b_idx <= a_idx] = np.inf  # b must come after a
    cost = np.full((n + 1, n), np.inf)  # cost[p+1, a] of the best schedule so far ending with computed (p, a)
    cost[0, 0] = 0.0
    back = []
    for _ in range(computed - 1):
        total = cost[:, :, None] + gap[:, :, :n]  # (p+1, a, b)
        best_p = total.argmin(0)  # (a, b): p+1
        new = np.full((n + 1, n), np.inf)
        new[1:, :] = total.min(0)  # new[a+1, b]
        cost = new
        back.append(best_p)
    final = cost + gap[:, :, n]
    p1, a = np.unravel_index(np.argmin(final), final.shape)
    path = [int(a)]
    for best_p in reversed(back):
        path.append(int(p1) - 1)
        p1, a = best_p[p1 - 1, a], p1 - 1
    return tuple(reversed(path))


def uniform_schedule(
    num_inference_steps: int, warmup_steps: int = 1, interval: int = 2, include_last: bool = False
) -> list[int]:
    """A fixed schedule for `compute_steps`: steps 0 .. warmup_steps-1 run in full, then one step every `interval`
    steps (warmup_steps-1+interval, warmup_steps-1+2*interval, ...), and the last step too with `include_last`.

    >>> uniform_schedule(12, warmup_steps=3, interval=4)
    [0, 1, 2, 6, 10]
    >>> uniform_schedule(8)  # every other step
    [0, 2, 4, 6]
    """
    for name, value, low in (
        ("num_inference_steps", num_inference_steps, 1),
        ("warmup_steps", warmup_steps, 1),
        ("interval", interval, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"uniform_schedule: {name} must be an int, got {type(value).__name__}: {value!r}")
        if value < low:
            raise ValueError(f"uniform_schedule: {name} must be >= {low}, got {value}")
    steps = set(range(min(warmup_steps, num_inference_steps)))
    steps |= set(range(warmup_steps - 1 + interval, num_inference_steps, interval))
    if include_last:
        steps.add(num_inference_steps - 1)
    return sorted(steps)


def uniform_schedules(num_steps: int, computed: int) -> list[tuple[int, ...]]:
    """Every `uniform_schedule` (any warmup, interval >= 2, with or without the last step) with exactly
    `computed` computed steps."""
    found = set()
    for warmup in range(1, computed + 1):
        for interval in range(2, num_steps):
            for last in (False, True):
                steps = uniform_schedule(num_steps, warmup, interval, last)
                if len(steps) == computed:
                    found.add(tuple(steps))
    return sorted(found)


def block_speedup(num_steps: int, computed: int, num_blocks: int, always: int) -> float:
    """Uncached block calls / cached block calls, with `always` blocks (Fn + Bn) run on cached steps too."""
    return num_steps * num_blocks / (computed * num_blocks + (num_steps - computed) * always)


# ----------------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------------


def _output_array(out: Any) -> np.ndarray:
    """The pipeline's images/frames (or first output) as a float64 array, first axis = samples."""
    for name in ("images", "frames"):
        if hasattr(out, name):
            out = getattr(out, name)
            break
    else:
        out = out[0] if isinstance(out, (tuple, list)) else out
    if isinstance(out, torch.Tensor):
        return out.detach().float().cpu().numpy().astype(np.float64)
    if isinstance(out, list) and out and not isinstance(out[0], (np.ndarray, torch.Tensor)):
        out = [np.asarray(item) for item in out]  # PIL images (or lists of frames)
    if isinstance(out, list):
        out = np.stack([np.asarray(o.detach().cpu() if isinstance(o, torch.Tensor) else o) for o in out])
    return np.asarray(out).astype(np.float64)


def _psnr(reference: np.ndarray, test: np.ndarray, data_range: float) -> float:
    """Mean PSNR over the samples (first axis); identical samples count as 100 dB. Images in [0, 1] are compared
    as the 8-bit images they become when saved (differences below half a level do not count)."""
    if data_range == 1.0:
        reference, test = np.round(np.clip(reference, 0, 1) * 255), np.round(np.clip(test, 0, 1) * 255)
        data_range = 255.0
    mse = ((reference - test) ** 2).reshape(reference.shape[0], -1).mean(1)
    values = [100.0 if m == 0 else min(100.0, 10 * math.log10(data_range**2 / m)) for m in mse]
    return float(np.mean(values))


class _Runs:
    """Runs the pipeline with the same inputs (and the same noise) every time."""

    def __init__(self, pipe: Any, call_kwargs: Mapping[str, Any], seed: int) -> None:
        self.pipe = pipe
        self.kwargs = dict(call_kwargs)
        self.count = 0
        generator = self.kwargs.pop("generator", None)
        gens = generator if isinstance(generator, list) else [generator] if generator is not None else []
        for g in gens:
            if not isinstance(g, torch.Generator):
                raise TypeError(
                    f"call_kwargs['generator'] must be a torch.Generator or a list of them, got {g!r}"
                )
        self.generators = gens
        self.states = [g.get_state() for g in gens]
        self.is_list = isinstance(generator, list)
        self.seed = seed

    def __call__(self) -> np.ndarray:
        self.count += 1
        if self.generators:
            for g, state in zip(self.generators, self.states):
                g.set_state(state)
            generator: Any = self.generators if self.is_list else self.generators[0]
        else:
            generator = torch.Generator().manual_seed(self.seed)
        return _output_array(self.pipe(**self.kwargs, generator=generator))

    def restore(self) -> None:
        for g, state in zip(self.generators, self.states):
            g.set_state(state)


def _options(candidate: _Candidate, fn: int, bn: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "cache_type": "DBCache",
        "Fn_compute_blocks": fn,
        "Bn_compute_blocks": bn,
        "compute_steps": list(candidate.steps),
    }
    ts_kwargs: dict[str, Any] = {"n_derivatives": candidate.order}
    if candidate.mix:
        ts_kwargs["mix_orders"] = True
    if candidate.target == "output":
        options.update(enable_taylorseer=True, taylorseer_cache_type="output", taylorseer_kwargs=ts_kwargs)
    elif candidate.order > 0:
        options.update(enable_taylorseer=True, enable_encoder_taylorseer=True, taylorseer_kwargs=ts_kwargs)
    return options


def _check_number(name: str, value: Any, low: float, low_ok: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    if not math.isfinite(value) or value < low or (value == low and not low_ok):
        raise ValueError(f"{name} must be finite and {'>=' if low_ok else '>'} {low}, got {value}")
    return float(value)


def calibrate(
    pipe: Any,
    call_kwargs: Mapping[str, Any],
    *,
    target_speedup: float | None = None,
    min_psnr: float | None = None,
    max_order: int = 2,
    Fn_compute_blocks: int = 0,  # noqa: N803 - the option's own name
    Bn_compute_blocks: int = 0,  # noqa: N803
    verify_runs: int = 8,
    cache_types: Sequence[str] = ("residual", "output"),
    seed: int = 0,
    save_to: str | os.PathLike[str] | None = None,
    verbose: bool = True,
) -> CalibratedOptions:
    """Find cache options for `pipe` that reach `target_speedup` (block count) at the best quality, or the
    fastest that keep `min_psnr` (dB against the uncached output), on the inputs `pipe(**call_kwargs)`.

    Args:
        pipe: an uncached diffusers pipeline (left as it was: uncached). With several denoisers (Wan 2.2's
            `transformer` and `transformer_2`) the schedule counts the pipeline's steps: each denoiser runs its
            own stretch of them, its first step is always computed, and the search splits the computed steps
            among the denoisers (they must have the same number of blocks).
        call_kwargs: the pipeline call's keyword arguments (prompt or prompt_embeds, num_inference_steps, ...).
            Without a `generator`, calibrate seeds one with `seed` for every run, so all runs share their noise;
            with one, its state is restored before every run and at the end.
        target_speedup: wanted block-count speedup (> 1); the result reaches it (>=) as closely as the step count
            allows. Exactly one of target_speedup / min_psnr.
        min_psnr: wanted quality; the result is the fewest computed steps whose verified PSNR reaches it.
        max_order: highest TaylorSeer order tried (0 = plain reuse), default 2.
        Fn_compute_blocks / Bn_compute_blocks: blocks run on every step (default 0 / 0: a cached step runs none).
        verify_runs: cached runs that verify the best predicted candidates (default 8, >= 1).
        cache_types: what the candidates forecast: "residual" (the middle blocks' residual, as
            `taylorseer_cache_type="residual"`) and/or "output" (the transformer's whole output,
            `taylorseer_cache_type="output"`; only with Fn_compute_blocks = Bn_compute_blocks = 0, and only
            where the transformer returns one tensor). Default both: the verified runs pick.
        seed: the generator seed used when call_kwargs has none.
        save_to: a JSON file to store the result in, keyed by model class and step count (merged with what the
            file holds); read it back with `load_calibration`.
        verbose: print the table of verified candidates.

    Returns:
        `CalibratedOptions`: the options dict, with `.speedup`, `.psnr`, `.runs` and `.table`.
    """
    if (target_speedup is None) == (min_psnr is None):
        raise ValueError("calibrate needs exactly one of target_speedup=... or min_psnr=...")
    if target_speedup is not None:
        target_speedup = _check_number("target_speedup", target_speedup, 1.0, low_ok=False)
    if min_psnr is not None:
        min_psnr = _check_number("min_psnr", min_psnr, 0.0, low_ok=False)
    for name, value, low in (
        ("max_order", max_order, 0),
        ("Fn_compute_blocks", Fn_compute_blocks, 0),
        ("Bn_compute_blocks", Bn_compute_blocks, 0),
        ("verify_runs", verify_runs, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if isinstance(cache_types, str) or not isinstance(cache_types, Sequence) or not cache_types:
        raise TypeError(f"cache_types must be a non-empty list of 'residual' / 'output', got {cache_types!r}")
    bad = [c for c in cache_types if c not in ("residual", "output")]
    if bad or len(set(cache_types)) != len(cache_types):
        raise ValueError(
            f"cache_types={list(cache_types)!r}: allowed values 'residual' and 'output', each at most once"
        )
    if "output" in cache_types and (Fn_compute_blocks or Bn_compute_blocks) and len(cache_types) == 1:
        raise ValueError(
            "cache_types=['output'] forecasts the whole transformer output, which runs no block on a cached "
            "step; it needs Fn_compute_blocks=0 and Bn_compute_blocks=0"
        )
    if not isinstance(call_kwargs, Mapping):
        raise TypeError(
            f"call_kwargs must be a dict of the pipeline call's arguments, got {type(call_kwargs).__name__}"
        )
    if _runners_of(pipe):
        raise ValueError("calibrate needs an uncached pipeline; call cache_dit.disable_cache(pipe) first")
    denoisers = _denoisers_of(pipe)
    if not denoisers:
        raise ValueError(f"calibrate: {type(pipe).__name__} has no denoiser a cache adapter knows")
    started = time.perf_counter()
    runs = _Runs(pipe, call_kwargs, seed)
    fn, bn = Fn_compute_blocks, Bn_compute_blocks

    # 1. the recorded run: every step computed (exact), residual and output samples recorded per denoiser
    recorders = {name: _Recorder() for name in denoisers}
    apply_cache_on_pipe(
        pipe, cache_type="DBCache", Fn_compute_blocks=fn, Bn_compute_blocks=bn, compute_steps=[0]
    )
    try:
        runners = {name: get_runner(module) for name, module in denoisers.items()}
        timesteps: list[float] = []  # the first call's timestep at each step (CFG calls share it)
        hooks = []
        for name, runner in runners.items():
            runner.recorder = recorders[name]
            runner.schedule = _EVERY_STEP

            def note_timestep(
                module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], runner=runner
            ) -> None:
                t = runner._timestep(args, kwargs)
                if t is not None and (not timesteps or t != timesteps[-1]):
                    timesteps.append(t)

            hooks.append(denoisers[name].register_forward_pre_hook(note_timestep, with_kwargs=True))
        try:
            reference = runs()
        finally:
            for hook in hooks:
                hook.remove()
        ran = {  # denoiser -> (its first step, its steps) in the pipeline's step numbering
            name: (
                min(recorders[name].steps(), default=0),
                max((b.calls for b in r.call.branches.values()), default=0),
            )
            for name, r in runners.items()
        }
        blocks = {name: r.num_blocks for name, r in runners.items()}
    finally:
        disable_cache(pipe)
    ran = {name: span for name, span in ran.items() if span[1] > 0}  # a denoiser the call never used
    num_steps = max(first + n for first, n in ran.values())
    covered = sorted(step for first, n in ran.values() for step in range(first, first + n))
    if covered != list(range(num_steps)):
        raise ValueError(
            "calibrate needs each denoiser to run one stretch of consecutive steps, together every step once; "
            f"got {', '.join(f'{name}: steps {f}..{f + n - 1}' for name, (f, n) in ran.items())}"
        )
    if len(set(blocks[name] for name in ran)) != 1:
        raise ValueError(
            "calibrate needs the denoisers to have the same number of blocks (its speedup counts steps); got "
            + ", ".join(f"{name}: {blocks[name]}" for name in ran)
        )
    num_blocks = blocks[next(iter(ran))]
    first_steps = tuple(sorted(first for first, _ in ran.values()))  # each denoiser's first step always runs
    skipped = ""
    if "output" in cache_types and (fn or bn):
        skipped = "output forecasts not tried: they need Fn_compute_blocks=0 and Bn_compute_blocks=0"
    elif "output" in cache_types:
        lacking = [
            name for name, (f, n) in ran.items() if not recorders[name].matrices(n, output=True, first=f)
        ]
        if lacking:
            skipped = f"output forecasts not tried: {type(denoisers[lacking[0]]).__name__} does not return one tensor"
            if list(cache_types) == ["output"]:
                raise ValueError(
                    f"calibrate: cache_types=['output'], but {skipped}; use cache_types=['residual']"
                )
    targets = [t for t in ("residual", "output") if t in cache_types and not (t == "output" and skipped)]
    weights = step_weights(timesteps, num_steps)
    cost_weights = {"per step": None, **({"by step size": weights} if weights is not None else {})}
    pieces = [
        _Piece(
            first,
            n,
            {t: recorders[name].matrices(n, output=t == "output", first=first) for t in targets},
            {label: None if w is None else w[first : first + n] for label, w in cost_weights.items()},
        )
        for name, (first, n) in sorted(ran.items(), key=lambda item: item[1][0])
    ]
    data_range = 255.0 if reference.max() > 1.5 else 1.0
    if fn + bn >= num_blocks:
        raise ValueError(
            f"Fn_compute_blocks + Bn_compute_blocks = {fn + bn} leaves no block of the {num_blocks} to cache"
        )

    # TaylorSeer orders 0..max_order. The order mixture (mix_orders) is not a candidate: on the bench's tuning
    # inputs it never verified best, and its candidates pushed better schedules out of the verified ones.
    orders = range(max_order + 1)

    def cost(target: str, label: str, steps: tuple[int, ...], order: int) -> float:
        return sum(
            forecast_cost(piece.recorded[target], piece.local(steps), order, piece.weights[label])
            for piece in pieces
        )

    best_local: dict[tuple[str, str, int, int], tuple[float, tuple[int, ...]]] = {}

    def best_schedule(target: str, label: str, computed: int) -> tuple[int, ...]:
        """The least order-1 cost schedule with `computed` steps: the exact DP; with several denoisers, the
        exact DP within each one's steps (its first step included) and the best split of the steps among them."""
        if len(pieces) == 1:
            return best_order1_schedule(models[target, label][0], computed)
        splits: dict[int, tuple[float, tuple[int, ...]]] = {
            0: (0.0, ())
        }  # steps so far -> best (cost, steps)
        for index, piece in enumerate(pieces):
            errors = models[target, label][index]
            grown: dict[int, tuple[float, tuple[int, ...]]] = {}
            for k in range(1, min(piece.n, computed) + 1):
                key = (target, label, index, k)
                if key not in best_local:
                    local = best_order1_schedule(errors, k)
                    best_local[key] = (_schedule_cost(errors, local), tuple(piece.first + s for s in local))
                local_cost, steps = best_local[key]
                for used, (so_far, chosen) in splits.items():
                    total = (so_far + local_cost, chosen + steps)
                    if used + k <= computed and total[0] < grown.get(used + k, (math.inf,))[0]:
                        grown[used + k] = total
            splits = grown
        return tuple(sorted(splits[computed][1]))

    def uniform_for(computed: int) -> list[tuple[int, ...]]:
        if len(pieces) == 1:
            return uniform_schedules(num_steps, computed)
        found = set()  # uniform over the pipeline's steps, plus each denoiser's first step
        for warmup in range(1, computed + 1):
            for interval in range(2, num_steps):
                for last in (False, True):
                    steps = set(uniform_schedule(num_steps, warmup, interval, last)) | set(first_steps)
                    if len(steps) == computed:
                        found.add(tuple(sorted(steps)))
        return sorted(found)

    def candidates_for(computed: int) -> list[_Candidate]:
        """Candidates with `computed` steps, best predicted first. Per forecast target (residual, output), two
        cost models (errors per step, and errors weighted by step size) each rank that target's candidates, and
        the uniform schedules get a ranking of their own (by step size where known), so the most regular
        schedule of each target is verified too (the cost model's best schedules can fit the calibration input
        too closely). The rankings are interleaved: the targets' errors are in different units, so they are
        never compared with each other; only the verified runs compare them."""
        by_weight: dict[str, list[list[_Candidate]]] = {label: [] for label in cost_weights}
        uniform_rankings = []
        for target in targets:
            schedules = {}
            for label in cost_weights:
                schedules.setdefault(best_schedule(target, label, computed), f"dp order 1, {label}")
            for steps in uniform_for(computed):
                schedules.setdefault(steps, "uniform")
            for label in cost_weights:
                scored = [
                    _Candidate(steps, order, source, cost(target, label, steps, order), target=target)
                    for steps, source in schedules.items()
                    for order in orders
                ]
                scored.sort(key=lambda c: c.predicted)
                by_weight[label].append(scored)
                if label == list(cost_weights)[-1]:
                    uniform_rankings.append([c for c in scored if c.source == "uniform"])
        rankings = [ranking for group in by_weight.values() for ranking in group] + uniform_rankings
        merged, seen = [], set()
        for group in itertools.zip_longest(*rankings):
            for c in group:
                if c is None:
                    continue
                if (c.steps, c.forecaster) not in seen:
                    seen.add((c.steps, c.forecaster))
                    merged.append(c)
        return merged

    def verify(candidate: _Candidate) -> float:
        apply_cache_on_pipe(pipe, **_options(candidate, fn, bn))
        try:
            candidate.psnr = _psnr(reference, runs(), data_range)
        finally:
            disable_cache(pipe)
        return candidate.psnr

    models = {  # per target and cost model: one order-1 error table per denoiser
        (target, label): [_order1_errors(piece.recorded[target], piece.weights[label]) for piece in pieces]
        for target in targets
        for label in cost_weights
    }
    fewest = len(pieces)  # each denoiser's first step is computed
    speed = {k: block_speedup(num_steps, k, num_blocks, fn + bn) for k in range(fewest, num_steps + 1)}
    verified: list[tuple[int, _Candidate]] = []
    try:
        if target_speedup is not None:
            reaching = [k for k in speed if speed[k] >= target_speedup - 1e-9]
            if not reaching:
                raise ValueError(
                    f"target_speedup={target_speedup} is out of reach: with Fn_compute_blocks + "
                    f"Bn_compute_blocks = {fn + bn} of {num_blocks} blocks, {num_steps} steps give at most "
                    f"{speed[fewest]:.2f}x"
                )
            computed = max(reaching)
            top = candidates_for(computed)[:verify_runs]
            verified = [(computed, c) for c in top]
            for c in top:
                verify(c)
        else:
            # binary search on the number of computed steps: all of them is exact, so `high` always qualifies
            low, high = fewest, num_steps
            while low < high:
                mid = (low + high) // 2
                c = candidates_for(mid)[0]
                verified.append((mid, c))
                if verify(c) >= min_psnr:
                    high = mid
                else:
                    low = mid + 1
            computed = low
            if computed < num_steps:
                done = {(c.steps, c.forecaster) for k, c in verified if k == computed}
                for c in [c for c in candidates_for(computed) if (c.steps, c.forecaster) not in done][
                    : verify_runs - len(done)
                ]:
                    verify(c)
                    verified.append((computed, c))
    finally:
        runs.restore()
    if computed == num_steps:
        chosen = _Candidate(tuple(range(num_steps)), 0, "every step", 0.0, 100.0)
    else:
        chosen = max((c for k, c in verified if k == computed and c.psnr is not None), key=lambda c: c.psnr)
    table = [
        {
            "computed_steps": k,
            "speedup": round(speed[k], 4),
            "order": c.forecaster,
            "source": c.source,
            "predicted_error": round(c.predicted, 6),
            "psnr": c.psnr,
            "compute_steps": list(c.steps),
        }
        for k, c in verified
    ]
    result = CalibratedOptions(_options(chosen, fn, bn))
    result.speedup = speed[computed]
    result.psnr = float(chosen.psnr if chosen.psnr is not None else math.nan)
    result.num_inference_steps = num_steps
    result.model = _model_name(denoisers)
    result.runs = runs.count
    result.table = table
    if verbose:
        goal = f"target_speedup={target_speedup}" if target_speedup is not None else f"min_psnr={min_psnr}"
        print(
            f"cache-dit calibrate ({goal}, {num_steps} steps, {num_blocks} blocks of "
            f"{' + '.join(type(module).__name__ for module in denoisers.values())}):"
        )
        if skipped:
            print(skipped)
        print(f"{'computed':>8} {'speedup':>8} {'order':>8} {'predicted':>10} {'PSNR dB':>8}  source: steps")
        for row in table:
            psnr = "-" if row["psnr"] is None else f"{row['psnr']:.2f}"
            print(
                f"{row['computed_steps']:>8} {row['speedup']:>7.2f}x {row['order']:>8} "
                f"{row['predicted_error']:>10.4g} {psnr:>8}  {row['source']}: {row['compute_steps']}"
            )
        print(
            f"picked: {result.speedup:.2f}x, {result.psnr:.2f} dB, order {chosen.forecaster}, "
            f"compute_steps={list(chosen.steps)} ({runs.count} pipeline runs, "
            f"{time.perf_counter() - started:.1f} s)"
        )
    if save_to is not None:
        save_calibration(save_to, result)
    return result


class _EveryStepSchedule(frozenset):
    """The recording run's schedule: every step is computed, and no step-count warning applies."""

    def __contains__(self, step: object) -> bool:
        return True

    def __bool__(self) -> bool:
        return False


_EVERY_STEP = _EveryStepSchedule()


# ----------------------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------------------


def _model_name(denoisers: Mapping[str, Any]) -> str:
    """The denoisers' classes ("module.Class", joined by "+" for several, e.g. Wan 2.2's two)."""
    return "+".join(f"{type(m).__module__}.{type(m).__qualname__}" for m in denoisers.values())


def _key(model: str, num_steps: int) -> str:
    return f"{model}@{num_steps}"


def save_calibration(path: str | os.PathLike[str], result: CalibratedOptions) -> Path:
    """Store `result` in the JSON file at `path` under "<transformer class>@<steps>" (other entries are kept)."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[_key(result.model, result.num_inference_steps)] = {
        "options": dict(result),
        "speedup": result.speedup,
        "psnr": result.psnr,
        "runs": result.runs,
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def load_calibration(path: str | os.PathLike[str], pipe: Any, num_inference_steps: int) -> dict[str, Any]:
    """The options `calibrate(..., save_to=path)` stored for this pipeline's transformer class and step count."""
    data = json.loads(Path(path).read_text())
    key = _key(_model_name(_denoisers_of(pipe)), num_inference_steps)
    if key not in data:
        raise ValueError(
            f"{path} holds no calibration for {key}; it holds: {', '.join(sorted(data)) or 'nothing'}"
        )
    return dict(data[key]["options"])
