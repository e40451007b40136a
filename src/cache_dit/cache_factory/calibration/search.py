"""The cost model and the schedule search: pure functions on recorded values, no pipeline run.

For a candidate schedule and TaylorSeer order, the cost model replays the forecasts the cache would make on the
values recorded at every step (the same `TaylorSeer` code) and sums the mean absolute forecast error over the cached
steps (`forecast_cost`). For order 1 the best schedule with K computed steps is found exactly by dynamic programming
over the last two computed steps (`best_order1_schedule`); uniform schedules are scored too, and late-start
schedules (`late_start_schedules`: every step until k, then every j-th) get a ranking of their own at the highest
orders. With several inputs the costs (and the DP's error tables) are summed over the inputs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..taylorseer import TaylorSeer


@dataclass
class Candidate:
    """A schedule and forecaster, what the cost model predicted and, once verified, its PSNR per input."""

    steps: tuple[int, ...]
    order: int
    source: str  # how the schedule was found
    predicted: float = math.inf
    samples: list[list[float]] = field(default_factory=list)  # once verified: per input, each sample's PSNR
    mix: bool = False  # TaylorSeer mix_orders
    target: str = "residual"  # what is forecast: the middle's residual, or the transformer's output
    # the cost model whose DP fitted `steps` to the inputs (None: a schedule that is not fitted)
    fit: str | None = None
    # cross-fitted (several inputs, a fitted schedule): per input, the schedule the DP fitted to the *other* inputs,
    # the one `samples` scored on that input; `steps` (fitted to every input) is what the options run
    fold_steps: list[tuple[int, ...]] = field(default_factory=list)
    # cross-fitted and picked: `steps` (the fit to every input) scored on every input
    in_sample: list[list[float]] = field(default_factory=list)
    # screened (calibrate's screen_runs): its mean PSNR on the first input, which chose whether it is verified
    screen_psnr: float | None = None

    @property
    def forecaster(self) -> str:
        return f"{self.order}{' mix' if self.mix else ''}{' output' if self.target == 'output' else ''}"

    @property
    def scores(self) -> list[float]:
        """Every sample's PSNR, input after input: what the selection rule compares."""
        return [score for per_input in self.samples for score in per_input]

    @property
    def psnrs(self) -> list[float]:
        """Per input, the mean PSNR over its samples."""
        return [float(np.mean(per_input)) for per_input in self.samples]

    @property
    def psnr(self) -> float | None:
        """The mean PSNR over every sample of every input (None before verification)."""
        return float(np.mean(self.scores)) if self.samples else None

    def options(self, fn: int, bn: int) -> dict[str, Any]:
        """The `apply_cache_on_pipe` options that run this candidate."""
        options: dict[str, Any] = {
            "cache_type": "DBCache",
            "Fn_compute_blocks": fn,
            "Bn_compute_blocks": bn,
            "compute_steps": list(self.steps),
        }
        ts_kwargs: dict[str, Any] = {"n_derivatives": self.order}
        if self.mix:
            ts_kwargs["mix_orders"] = True
        if self.target == "output":
            options.update(
                enable_taylorseer=True, taylorseer_cache_type="output", taylorseer_kwargs=ts_kwargs
            )
        elif self.order > 0:
            options.update(
                enable_taylorseer=True, enable_encoder_taylorseer=True, taylorseer_kwargs=ts_kwargs
            )
        return options


@dataclass
class Piece:
    """The steps one denoiser ran on one input, `first` .. `first + n - 1` of the pipeline's steps, and what was
    recorded there per forecast target (row i = step first + i). One piece per denoiser (Wan 2.2: two)."""

    first: int
    n: int
    recorded: dict[str, list[torch.Tensor]]
    weights: dict[str, torch.Tensor | None]  # per cost model: the step weights of this piece's steps

    def local(self, steps: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s - self.first for s in steps if self.first <= s < self.first + self.n)


def schedule_cost(errors: torch.Tensor, steps: tuple[int, ...]) -> float:
    """The order-1 cost of a schedule as `order1_errors` counts it (what `best_order1_schedule` minimizes)."""
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


def order1_errors(recorded: list[torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
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


def uniform_schedules(num_steps: int, computed: int, always: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every `uniform_schedule` (any warmup, interval >= 2, with or without the last step), with the steps
    `always` added (each denoiser's first step), that has exactly `computed` computed steps."""
    found = set()
    for warmup in range(1, computed + 1):
        for interval in range(2, num_steps):
            for last in (False, True):
                steps = set(uniform_schedule(num_steps, warmup, interval, last)) | set(always)
                if len(steps) == computed:
                    found.add(tuple(sorted(steps)))
    return sorted(found)


LATE_INTERVALS = (2, 3, 4, 5, 6)  # the j of the late-start grid


def late_start_schedules(
    num_steps: int, computed: int, intervals: tuple[int, ...] = LATE_INTERVALS, always: tuple[int, ...] = ()
) -> list[tuple[int, int, int, tuple[int, ...]]]:
    """Late-start schedules with exactly `computed` computed steps: every step until k (steps 0 .. k-1), then
    step `first` (k < first < k + j) and every j-th after it (first + j, first + 2j, ...), with the steps `always`
    added; for each j in `intervals`, each `first`, every k >= 1 that gives that count (a schedule found twice is
    kept once, at its smallest j). `first = k - 1 + j` is `uniform_schedule(num_steps, k, j)`; `first = k + 1` is
    diffusers' TaylorSeer (`disable_cache_before_step=k, cache_interval=j`). Returned as (k, first, j, steps), by
    j, then first - k, then k.

    >>> late_start_schedules(10, 6, intervals=(2,))
    [(2, 3, 2, (0, 1, 3, 5, 7, 9)), (3, 4, 2, (0, 1, 2, 4, 6, 8))]
    """
    found, seen = [], set()
    for j in intervals:
        for offset in range(1, j):
            for k in range(1, num_steps - offset):
                steps = tuple(sorted(set(range(k)) | set(range(k + offset, num_steps, j)) | set(always)))
                if len(steps) == computed and steps not in seen:
                    seen.add(steps)
                    found.append((k, k + offset, j, steps))
    return found


def block_speedup(num_steps: int, computed: int, num_blocks: int, always: int) -> float:
    """Uncached block calls / cached block calls, with `always` blocks (Fn + Bn) run on cached steps too."""
    return num_steps * num_blocks / (computed * num_blocks + (num_steps - computed) * always)


class ScheduleSearch:
    """Ranks candidate schedules and forecasters by the cost model, over every input's recorded pieces.

    `pieces[i][d]`: input i, denoiser d (the denoisers in step order, the same spans on every input).
    `cost_labels`: the cost models, each a name for the step weights in every piece (None weight: 1 per step).
    """

    def __init__(
        self,
        pieces: list[list[Piece]],
        targets: list[str],
        cost_labels: list[str],
        max_order: int,
        num_steps: int,
    ) -> None:
        self.pieces = pieces
        self.targets = targets
        self.labels = cost_labels
        # TaylorSeer orders 0..max_order. The order mixture (mix_orders) is not a candidate: on the bench's tuning
        # inputs it never verified best, and its candidates pushed better schedules out of the verified ones.
        self.orders = range(max_order + 1)
        self.num_steps = num_steps
        self.spans = [(p.first, p.n) for p in pieces[0]]
        self.first_steps = tuple(first for first, _ in self.spans)  # each denoiser's first step always runs
        # per target and cost model: one order-1 error table per denoiser, summed over the inputs
        self.models = {
            (target, label): [
                sum(
                    order1_errors(per_input[d].recorded[target], per_input[d].weights[label])
                    for per_input in pieces
                )
                for d in range(len(self.spans))
            ]
            for target in targets
            for label in cost_labels
        }
        self._best_local: dict[tuple[str, str, int, int], tuple[float, tuple[int, ...]]] = {}

    def cost(self, target: str, label: str, steps: tuple[int, ...], order: int) -> float:
        return sum(
            forecast_cost(piece.recorded[target], piece.local(steps), order, piece.weights[label])
            for per_input in self.pieces
            for piece in per_input
        )

    def best_schedule(self, target: str, label: str, computed: int) -> tuple[int, ...]:
        """The least order-1 cost schedule with `computed` steps: the exact DP; with several denoisers, the
        exact DP within each one's steps (its first step included) and the best split of the steps among them."""
        tables = self.models[target, label]
        if len(self.spans) == 1:
            return best_order1_schedule(tables[0], computed)
        splits: dict[int, tuple[float, tuple[int, ...]]] = {
            0: (0.0, ())
        }  # steps so far -> best (cost, steps)
        for index, (first, n) in enumerate(self.spans):
            grown: dict[int, tuple[float, tuple[int, ...]]] = {}
            for k in range(1, min(n, computed) + 1):
                key = (target, label, index, k)
                if key not in self._best_local:
                    local = best_order1_schedule(tables[index], k)
                    self._best_local[key] = (
                        schedule_cost(tables[index], local),
                        tuple(first + s for s in local),
                    )
                local_cost, steps = self._best_local[key]
                for used, (so_far, chosen) in splits.items():
                    total = (so_far + local_cost, chosen + steps)
                    if used + k <= computed and total[0] < grown.get(used + k, (math.inf,))[0]:
                        grown[used + k] = total
            splits = grown
        return tuple(sorted(splits[computed][1]))

    def without(self, index: int) -> ScheduleSearch:
        """The same search over every input but `index` (cross-fitting: its schedules never saw that input)."""
        pieces = [p for i, p in enumerate(self.pieces) if i != index]
        return ScheduleSearch(pieces, self.targets, self.labels, max(self.orders), self.num_steps)

    def candidates(self, computed: int) -> list[Candidate]:
        """Candidates with `computed` steps, best predicted first. Per forecast target (residual, output), each
        cost model (errors per step, errors weighted by step size) ranks that target's candidates; the uniform
        schedules get a ranking of their own (by the last cost model), so the most regular schedule of each
        target is verified too (the cost model's best schedules can fit the calibration inputs too closely); and
        the late-start schedules (`late_start_schedules`: every step until k, then every j-th) at the highest
        order get one more per target (by the last cost model): the cost model sums forecast errors without
        their effect on the later steps, and so underrates computing the early steps, where a deviation is
        carried through every later step.
        The rankings are interleaved: first the best of each, then the second of each, ... (the targets' errors
        are in different units, so they are never compared with each other; only the verified runs compare
        them). So the first len(targets) x (len(cost models) + 2) candidates, the ones `calibrate` verifies
        with its default verify_runs=8 (one target: the first 4), hold each ranking's best."""
        # a forecast from j computed steps has order j - 1 at most: higher orders would repeat its candidates
        orders = [order for order in self.orders if order <= max(0, computed - len(self.spans))]
        late_orders = [order for order in orders if order >= 1][-1:]  # the highest: 2 by default
        by_label: dict[str, list[list[Candidate]]] = {label: [] for label in self.labels}
        late_rankings, uniform_rankings = [], []
        always = self.first_steps if len(self.spans) > 1 else ()
        last = self.labels[-1]
        late = late_start_schedules(self.num_steps, computed, always=always)
        for target in self.targets:
            schedules: dict[tuple[int, ...], tuple[str, str | None]] = {}  # steps -> (source, fit)
            for label in self.labels:
                schedules.setdefault(
                    self.best_schedule(target, label, computed), (f"dp order 1, {label}", label)
                )
            for steps in uniform_schedules(self.num_steps, computed, always):
                schedules.setdefault(steps, ("uniform", None))
            for label in self.labels:
                scored = [
                    Candidate(
                        steps,
                        order,
                        source,
                        self.cost(target, label, steps, order),
                        target=target,
                        fit=fit,
                    )
                    for steps, (source, fit) in schedules.items()
                    for order in orders
                ]
                scored.sort(key=lambda c: c.predicted)
                by_label[label].append(scored)
                if label == last:
                    uniform_rankings.append([c for c in scored if c.source == "uniform"])
            late_scored = [
                Candidate(
                    steps,
                    order,
                    f"late start: 0..{k - 1}, {first}, +{j}",
                    self.cost(target, last, steps, order),
                    target=target,
                )
                for k, first, j, steps in late
                for order in late_orders
            ]
            late_scored.sort(key=lambda c: c.predicted)
            late_rankings.append(late_scored)
        rankings = (
            [ranking for group in by_label.values() for ranking in group] + late_rankings + uniform_rankings
        )
        merged, seen = [], set()
        for group in itertools.zip_longest(*rankings):
            for c in group:
                if c is not None and (c.steps, c.forecaster) not in seen:
                    seen.add((c.steps, c.forecaster))
                    merged.append(c)
        return merged
