"""`calibrate`: the arguments, the order of the work (record, search, verify, pick) and the report."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..apply import _denoisers_of, _runners_of, apply_cache_on_pipe, disable_cache
from .io import CalibratedOptions, check_save_path, model_name, save_calibration
from .record import Layout, layout, record
from .report import print_report
from .search import Candidate, ScheduleSearch, block_speedup
from .verify import MAX_PSNR, Inputs, leave_one_out, pick_robust, sample_psnrs


def calibrate(
    pipe: Any,
    call_kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    target_speedup: float | None = None,
    min_psnr: float | None = None,
    max_order: int = 2,
    Fn_compute_blocks: int = 0,  # noqa: N803 - the option's own name
    Bn_compute_blocks: int = 0,  # noqa: N803
    verify_runs: int = 8,
    screen_runs: int = 16,
    cache_types: Sequence[str] = ("residual", "output"),
    seed: int = 0,
    worst_margin: float = 1.0,
    save_to: str | os.PathLike[str] | None = None,
    verbose: bool = True,
    progress: bool = True,
) -> CalibratedOptions:
    """Find cache options for `pipe` that reach `target_speedup` (block count) at the best quality, or the
    fastest that keep `min_psnr` (dB against the uncached output), on the inputs `pipe(**call_kwargs)`.

    Quality is PSNR on the pipeline's float output (`output_type="pil"` or none becomes "np" for the runs), per
    sample (image or video) of every input. With several inputs, a schedule the DP fits is cross-fitted: on input i
    it is scored as the DP fits it to the other inputs (an unseen input), and if it is picked, the options run the
    DP's fit to every input (scored on them too, for `.psnr`). Every candidate is scored on every sample of every input and picked
    by one rule (`pick_robust`): among the candidates whose worst sample (from 10 samples on: the worst after setting
    aside the lowest 10 %, `guard_sample`) is within `worst_margin` dB of the best one, the best mean PSNR over the
    samples. A call with a batch of 4 prompts counts as 4 samples; with
    one sample in all the rule is simply the best PSNR. The worst sample, not the worst call, is the guard: a
    schedule fitted to a batch's easy images shows there as one bad image.

    Args:
        pipe: an uncached diffusers pipeline (left as it was: uncached). With several denoisers (Wan 2.2's
            `transformer` and `transformer_2`) the schedule counts the pipeline's steps: each denoiser runs its
            own stretch of them, its first step is always computed, and the search splits the computed steps
            among the denoisers (they must have the same number of blocks).
        call_kwargs: the pipeline call's keyword arguments (prompt or prompt_embeds, num_inference_steps, ...),
            or a list of them: several inputs (prompts, seeds, sizes), which must run the same steps. An input
            without a `generator` runs with one seeded `seed + i` (i: its place in the list), so all runs of it
            share their noise; a given generator is rewound before each run and left as it was at the end (also
            when calibrate fails).
        target_speedup: wanted block-count speedup (> 1); the result reaches it (>=) as closely as the step count
            allows. Exactly one of target_speedup / min_psnr.
        min_psnr: wanted quality; the result is the fewest computed steps whose verified mean PSNR over the
            samples reaches it (the pick among them: the rule above, over those that reach it).
        max_order: highest TaylorSeer order tried (0 = plain reuse), default 2.
        Fn_compute_blocks / Bn_compute_blocks: blocks run on every step (default 0 / 0: a cached step runs none).
        verify_runs: candidates verified by cached runs, each on every input (default 8, >= 1).
        screen_runs: more candidates screened first (default 16, >= 0): the cost model's first
            verify_runs + screen_runs candidates each run on the first input, and the verify_runs best there go
            on to the other inputs. The cost model ranks schedules well but TaylorSeer orders poorly (it
            underrates order 2 at short gaps), so a real run, not the prediction, chooses what is verified.
            With one input every screened candidate is verified. 0: verify the cost model's first verify_runs.
        cache_types: what the candidates forecast: "residual" (the middle blocks' residual, as
            `taylorseer_cache_type="residual"`) and/or "output" (the transformer's whole output,
            `taylorseer_cache_type="output"`; only with Fn_compute_blocks = Bn_compute_blocks = 0, and only
            where the transformer returns one tensor). Default both: the verified runs pick.
        seed: the generator seed of inputs that have none (input i: seed + i).
        worst_margin: dB; the rule's guard on the worst sample (default 1.0; larger trusts the mean more).
            From 10 samples on the guard sets aside the lowest 10 % (one sample of 10-19): an image that nearly
            every candidate ruins would otherwise decide the pick alone.
        save_to: a JSON file to store the result in, keyed by model class and step count (merged with what the
            file holds); checked before any run; read it back with `load_calibration`.
        verbose: print the table of verified candidates (per-input PSNRs, the worst sample, the leave-one-out
            estimate).
        progress: a tqdm bar over the pipeline runs on stderr (default True; never where stderr is no terminal).

    Returns:
        `CalibratedOptions`: the options dict, with `.speedup`, `.psnr` (mean over the samples), `.psnrs` (per
        input), `.psnr_worst` (the worst sample), `.loo_psnr` (for each sample, the rule applied to the other
        samples' scores picks a candidate: the mean of those picks' PSNRs on the samples left out; None with one
        sample), `.runs` and `.table`.
    """
    inputs_given = _check_arguments(
        call_kwargs,
        target_speedup=target_speedup,
        min_psnr=min_psnr,
        max_order=max_order,
        fn=Fn_compute_blocks,
        bn=Bn_compute_blocks,
        verify_runs=verify_runs,
        screen_runs=screen_runs,
        cache_types=cache_types,
        worst_margin=worst_margin,
    )
    if save_to is not None:
        check_save_path(save_to)
    if _runners_of(pipe):
        raise ValueError("calibrate needs an uncached pipeline; call cache_dit.disable_cache(pipe) first")
    denoisers = _denoisers_of(pipe)
    if not denoisers:
        raise ValueError(f"calibrate: {type(pipe).__name__} has no denoiser a cache adapter knows")
    started = time.perf_counter()
    fn, bn = Fn_compute_blocks, Bn_compute_blocks
    inputs = Inputs(pipe, inputs_given, seed)
    bar = tqdm(desc="cache-dit calibrate", unit="run", disable=None if progress else True, file=sys.stderr)
    pipe_bar = getattr(pipe, "_progress_bar_config", None)
    if not bar.disable and hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)  # one bar: ours, over the runs
    inputs.progress = None if bar.disable else bar
    try:
        bar.total = len(inputs) * (1 + verify_runs) + screen_runs
        recordings, blocks = record(pipe, denoisers, inputs, fn, bn)
        shape = layout(recordings, blocks, denoisers, cache_types, fn, bn)
        references = [rec.reference for rec in recordings]
        found = _search_and_verify(
            pipe,
            shape,
            references,
            inputs,
            bar,
            target_speedup,
            min_psnr,
            max_order,
            verify_runs,
            screen_runs,
            worst_margin,
            fn,
            bn,
        )
    finally:
        inputs.restore()
        bar.close()
        if hasattr(pipe, "set_progress_bar_config"):
            if pipe_bar is None:
                pipe.__dict__.pop("_progress_bar_config", None)
            else:
                pipe._progress_bar_config = pipe_bar
    computed, chosen, verified, pool, speed, screened_out = found
    loo = leave_one_out([c.scores for c in pool], worst_margin) if pool else None
    table = [
        {
            "computed_steps": k,
            "speedup": round(speed[k], 4),
            "order": c.forecaster,
            "source": c.source,
            "predicted_error": round(c.predicted, 6),
            "psnr": c.psnr,
            "screen_psnr": c.screen_psnr,
            "psnrs": c.psnrs or None,
            "psnr_worst": min(c.scores) if c.samples else None,
            "sample_psnrs": c.samples or None,
            "picked": c is chosen,
            "compute_steps": list(c.steps),
            "cross_fitted": bool(c.fold_steps),
            "fold_steps": [list(steps) for steps in c.fold_steps] or None,
        }
        for k, c in [*verified, *screened_out]
    ]
    result = CalibratedOptions(chosen.options(fn, bn))
    result.speedup = speed[computed]
    # what the returned options gave on the calibration inputs (a cross-fitted pick: its fit to every input)
    runs_as_returned = replace(chosen, samples=chosen.in_sample) if chosen.in_sample else chosen
    result.psnrs = runs_as_returned.psnrs
    result.psnr = runs_as_returned.psnr
    result.psnr_worst = float(min(runs_as_returned.scores))
    result.cross_fitted_psnr = chosen.psnr if chosen.fold_steps else None
    result.loo_psnrs = loo
    result.loo_psnr = None if loo is None else float(np.mean(loo))
    result.inputs = len(inputs)
    result.num_inference_steps = shape.num_steps
    result.model = model_name(denoisers)
    result.runs = inputs.count
    result.table = table
    if verbose:
        goal = f"target_speedup={target_speedup}" if target_speedup is not None else f"min_psnr={min_psnr}"
        print_report(result, shape, goal, denoisers, chosen, time.perf_counter() - started)
    if save_to is not None:
        save_calibration(save_to, result)
    return result


def _search_and_verify(
    pipe: Any,
    shape: Layout,
    references: list[np.ndarray],
    inputs: Inputs,
    bar: Any,
    target_speedup: float | None,
    min_psnr: float | None,
    max_order: int,
    verify_runs: int,
    screen_runs: int,
    worst_margin: float,
    fn: int,
    bn: int,
) -> tuple[
    int,
    Candidate,
    list[tuple[int, Candidate]],
    list[Candidate],
    dict[int, float],
    list[tuple[int, Candidate]],
]:
    """The computed-step count, the pick, every verified (count, candidate), the candidates the pick was chosen
    from (the leave-one-out estimate re-picks among them), the speedup per computed-step count, and every
    (count, candidate) the screening left out (scored on the first input only)."""
    num_steps = shape.num_steps
    search = ScheduleSearch(shape.pieces, shape.targets, shape.cost_labels, max_order, num_steps)
    fewest = len(shape.spans)  # each denoiser's first step is computed
    speed = {k: block_speedup(num_steps, k, shape.num_blocks, fn + bn) for k in range(fewest, num_steps + 1)}

    runs: dict[
        tuple[tuple[int, ...], int, str, int], list[float]
    ] = {}  # (steps, order, target, input) -> PSNRs

    def score(candidate: Candidate, steps: tuple[int, ...], i: int) -> list[float]:
        key = (steps, candidate.order, candidate.target, i)
        if key not in runs:
            run = replace(candidate, steps=steps)
            apply_cache_on_pipe(pipe, **run.options(fn, bn))
            try:
                runs[key] = sample_psnrs(references[i], inputs.run(i))
            finally:
                disable_cache(pipe)
        return runs[key]

    folds = [search.without(i) for i in range(len(references))] if len(references) > 1 else []

    def schedule_on(candidate: Candidate, i: int) -> tuple[int, ...]:
        """What the candidate runs on input i. A schedule the DP fitted to the inputs is cross-fitted where there
        are several: on input i it runs the schedule the same DP fits to the other inputs, so its scores say what
        the DP gives on inputs it never saw, as they do for the schedules that are not fitted at all."""
        if candidate.fit is None or not folds:
            return candidate.steps
        if not candidate.fold_steps:
            candidate.fold_steps = [
                fold.best_schedule(candidate.target, candidate.fit, len(candidate.steps)) for fold in folds
            ]
        return candidate.fold_steps[i]

    def verify(candidate: Candidate) -> float:
        """Score the candidate on every input (runs already made, e.g. by the screening, are reused)."""
        candidate.samples = [score(candidate, schedule_on(candidate, i), i) for i in range(len(references))]
        return float(candidate.psnr)

    screened_out: list[tuple[int, Candidate]] = []

    def screened(computed: int, ranked: list[Candidate], keep: int) -> list[Candidate]:
        """The `keep` best of `ranked` by their mean PSNR on the first input (ties: the better predicted), in
        the order of `ranked`; with one input every one of them (each run is then its verification)."""
        first = [float(np.mean(score(c, schedule_on(c, 0), 0))) for c in ranked]
        for c, value in zip(ranked, first):
            c.screen_psnr = value
        if len(references) == 1:
            return ranked
        best = set(sorted(range(len(ranked)), key=lambda j: (-first[j], j))[:keep])
        screened_out.extend((computed, c) for j, c in enumerate(ranked) if j not in best)
        return [c for j, c in enumerate(ranked) if j in best]

    verified: list[tuple[int, Candidate]] = []
    others = len(references) - 1  # runs per verified candidate after its screening run
    if target_speedup is not None:
        reaching = [k for k in speed if speed[k] >= target_speedup - 1e-9]
        if not reaching:
            raise ValueError(
                f"target_speedup={target_speedup} is out of reach: with Fn_compute_blocks + "
                f"Bn_compute_blocks = {fn + bn} of {shape.num_blocks} blocks, {num_steps} steps give at most "
                f"{speed[fewest]:.2f}x"
            )
        computed = max(reaching)
        ranked = search.candidates(computed)[: verify_runs + screen_runs]
        bar.total = inputs.count + len(ranked) + others * min(verify_runs, len(ranked))
        top = screened(computed, ranked, verify_runs)
        verified = [(computed, c) for c in top]
        for c in top:
            verify(c)
        pool = top
    else:
        assert min_psnr is not None
        # binary search on the number of computed steps: all of them is exact, so `high` always qualifies
        low, high = fewest, num_steps
        probes = math.ceil(math.log2(high - low + 1))
        bar.total = inputs.count + len(inputs) * (probes + verify_runs - 1) + screen_runs
        while low < high:
            mid = (low + high) // 2
            c = search.candidates(mid)[0]
            verified.append((mid, c))
            if verify(c) >= min_psnr:
                high = mid
            else:
                low = mid + 1
        computed = low
        if computed < num_steps:
            done = {(c.steps, c.forecaster) for k, c in verified if k == computed}
            more = [c for c in search.candidates(computed) if (c.steps, c.forecaster) not in done]
            keep = verify_runs - len(done)
            if keep > 0:
                for c in screened(computed, more[: keep + screen_runs], keep):
                    verify(c)
                    verified.append((computed, c))
        pool = [c for k, c in verified if k == computed and c.psnr is not None and c.psnr >= min_psnr]
        bar.total = inputs.count
    if computed == num_steps:
        every = [[MAX_PSNR] * len(reference) for reference in references]
        chosen = Candidate(tuple(range(num_steps)), 0, "every step", 0.0, every)
        return computed, chosen, verified, [], speed, screened_out
    chosen = pool[pick_robust([c.scores for c in pool], worst_margin)]
    if chosen.fold_steps:  # cross-fitted: what runs is the schedule fitted to every input; score it there too
        bar.total = inputs.count + sum(
            (chosen.steps, chosen.order, chosen.target, i) not in runs for i in range(len(references))
        )
        chosen.in_sample = [score(chosen, chosen.steps, i) for i in range(len(references))]
    return computed, chosen, verified, pool, speed, screened_out


def _check_number(name: str, value: Any, low: float, low_ok: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    if not math.isfinite(value) or value < low or (value == low and not low_ok):
        raise ValueError(f"{name} must be finite and {'>=' if low_ok else '>'} {low}, got {value}")
    return float(value)


def _check_arguments(
    call_kwargs: Any,
    *,
    target_speedup: Any,
    min_psnr: Any,
    max_order: Any,
    fn: Any,
    bn: Any,
    verify_runs: Any,
    screen_runs: Any,
    cache_types: Any,
    worst_margin: Any,
) -> list[Mapping[str, Any]]:
    """Raises on a bad argument (before any run); returns the inputs as a list of call-kwargs dicts."""
    if (target_speedup is None) == (min_psnr is None):
        raise ValueError("calibrate needs exactly one of target_speedup=... or min_psnr=...")
    if target_speedup is not None:
        _check_number("target_speedup", target_speedup, 1.0, low_ok=False)
    if min_psnr is not None:
        _check_number("min_psnr", min_psnr, 0.0, low_ok=False)
    _check_number("worst_margin", worst_margin, 0.0, low_ok=True)
    for name, value, low in (
        ("max_order", max_order, 0),
        ("Fn_compute_blocks", fn, 0),
        ("Bn_compute_blocks", bn, 0),
        ("verify_runs", verify_runs, 1),
        ("screen_runs", screen_runs, 0),
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
    if "output" in cache_types and (fn or bn) and len(cache_types) == 1:
        raise ValueError(
            "cache_types=['output'] forecasts the whole transformer output, which runs no block on a cached "
            "step; it needs Fn_compute_blocks=0 and Bn_compute_blocks=0"
        )
    if isinstance(call_kwargs, Mapping):
        return [call_kwargs]
    if isinstance(call_kwargs, (str, bytes)) or not isinstance(call_kwargs, Sequence):
        raise TypeError(
            "call_kwargs must be a dict of the pipeline call's arguments or a list of them (one per input), got "
            f"{type(call_kwargs).__name__}"
        )
    if not call_kwargs:
        raise ValueError("call_kwargs is an empty list; give at least one input (a dict of call arguments)")
    for i, kwargs in enumerate(call_kwargs):
        if not isinstance(kwargs, Mapping):
            raise TypeError(
                f"call_kwargs[{i}] must be a dict of the pipeline call's arguments, got {type(kwargs).__name__}"
            )
    steps = {kwargs["num_inference_steps"] for kwargs in call_kwargs if "num_inference_steps" in kwargs}
    if len(steps) > 1:
        raise ValueError(
            f"calibrate's inputs must share num_inference_steps (one schedule fits them all); got {sorted(steps)}"
        )
    return list(call_kwargs)
