"""`calibrate`'s printed table: every verified (and screened-out) candidate, the pick, the leave-one-out estimate."""

from __future__ import annotations

import math
from typing import Any

from .io import CalibratedOptions
from .record import Layout
from .search import Candidate


def print_report(
    result: CalibratedOptions,
    shape: Layout,
    goal: str,
    denoisers: dict[str, Any],
    chosen: Candidate,
    seconds: float,
) -> None:
    n = result.inputs
    samples = sum(len(per_input) for per_input in chosen.samples)
    print(
        f"cache-dit calibrate ({goal}, {shape.num_steps} steps, {shape.num_blocks} blocks of "
        f"{' + '.join(type(module).__name__ for module in denoisers.values())}, {n} input{'s' if n > 1 else ''}, "
        f"{samples} sample{'s' if samples > 1 else ''}; PSNR: the mean over the samples, the worst sample"
        f"{', each input' if n > 1 else ''}):"
    )
    if shape.skipped:
        print(shape.skipped)
    per_input = "".join(f" {f'in{i}':>7}" for i in range(n)) if n > 1 else ""
    print(
        f"  {'computed':>8} {'speedup':>8} {'order':>8} {'predicted':>10} {'PSNR dB':>8} {'worst':>7}{per_input}"
        "  source: steps"
    )
    for row in result.table:
        verified = row["psnr"] is not None
        mean = f"{row['psnr']:.2f}" if verified else "-"
        cells = f" {row['psnr_worst']:>7.2f}" if verified else f" {'-':>7}"
        if n > 1:
            if verified:
                cells += "".join(f" {s:>7.2f}" for s in row["psnrs"])
            else:  # screened out: its run on the first input only
                cells += f" {row['screen_psnr']:>7.2f}" + f" {'-':>7}" * (n - 1)
        print(
            f"{'*' if row['picked'] else ' '} {row['computed_steps']:>8} {row['speedup']:>7.2f}x {row['order']:>8} "
            f"{row['predicted_error']:>10.4g} {mean:>8}{cells}  {row['source']}"
            f"{' (cross-fitted)' if row['cross_fitted'] else ''}: {row['compute_steps']}"
        )
    if any(row["psnr"] is None for row in result.table):
        print(
            "rows with '-': screened out (run on in0 only; the verified ones were the best there of the cost "
            "model's first verify_runs + screen_runs candidates)"
        )
    if any(row["cross_fitted"] for row in result.table):
        print(
            "cross-fitted: on each input, the schedule the same DP fits to the other inputs (steps shown: the fit "
            "to every input, what the options run); its PSNRs are those of unseen inputs"
        )
    if result.cross_fitted_psnr is not None:
        print(
            f"picked on its cross-fitted score {result.cross_fitted_psnr:.2f} dB; the fit to every input gives:"
        )
    print(
        f"picked (*): {result.speedup:.2f}x, {result.psnr:.2f} dB (worst sample {result.psnr_worst:.2f}), order "
        f"{chosen.forecaster}, compute_steps={list(chosen.steps)} ({result.runs} pipeline runs, {seconds:.1f} s)"
    )
    if result.loo_psnr is not None:
        print(
            f"leave-one-out estimate for unseen samples: {result.loo_psnr:.2f} dB (each sample left out in turn, "
            f"the rule re-run on the others, scored on it; worst {min(result.loo_psnrs or [math.nan]):.2f})"
        )
