"""Issue 14 finding: our TaylorSeer forms its first differences from the very first computed steps.

Measures, without touching the library, what changes when the forecaster's differences start only at the third
computed step of a call (the first two computed steps store the value only: `d_0`, no derivative), as upstream
cache-dit 1.5.3 reportedly does. The variant is a bench-only patch of `TaylorSeer.update` for the duration of
a run. Same configurations, inputs and metric as bench/tuned_pareto.py (block-count speedup, PSNR vs uncached):
the bench's inputs (tuning) and the evaluation inputs (3 seeds x 4 other classes), 28 steps.

`python bench/taylorseer_start.py` rewrites only its marked section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_bench  # noqa: E402
import tuned_pareto as tp  # noqa: E402
from cache_dit.cache_factory import taylorseer as ts_module  # noqa: E402
from cache_dit.testing import testbed  # noqa: E402

HERE = Path(__file__).resolve().parent
MARKER = "taylorseer-start"
SKIPPED_UPDATES = 2  # computed steps that store the value only


@contextlib.contextmanager
def late_derivatives(skipped: int = SKIPPED_UPDATES) -> Iterator[None]:
    """Patch TaylorSeer.update: the first `skipped` updates after a reset keep only the value (no derivative)."""
    cls = ts_module.TaylorSeer
    original_update, original_reset = cls.update, cls.reset

    def reset(self: Any) -> None:
        original_reset(self)
        self._bench_updates = 0

    def update(self: Any, value: torch.Tensor, step: int) -> None:
        original_update(self, value, step)  # may reset (stale state), which zeroes the counter
        self._bench_updates = getattr(self, "_bench_updates", 0) + 1
        if self._bench_updates <= skipped:
            self.factors = self.factors[:1]

    cls.update, cls.reset = update, reset
    try:
        yield
    finally:
        cls.update, cls.reset = original_update, original_reset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE), help="folder of RESULTS.md (default: bench/)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    pipe = testbed.load_testbed_pipeline()
    pipe.set_progress_bar_config(disable=True)
    counter = run_bench.BlockCounter(pipe.transformer)
    inputs = {
        "tune": [(tp.TUNE_CLASSES, tp.TUNE_SEED)],
        "eval": [(tp.EVAL_CLASSES, seed) for seed in tp.EVAL_SEEDS],
    }
    refs = {k: np.concatenate([tp.call(pipe, c, s, tp.STEPS) for c, s in v]) for k, v in inputs.items()}
    rows = []
    for order in (1, 2):
        for warmup in (2, 4, 6):
            for cap, t in ((-1, 0.12), (-1, 0.24), (2, 1.0), (3, 1.0)):
                options = {
                    "cache_type": "dbcache",
                    "Fn_compute_blocks": 1,
                    "Bn_compute_blocks": 0,
                    "warmup_steps": warmup,
                    "max_continuous_cached_steps": cap,
                    "residual_diff_threshold": t,
                    "enable_taylorseer": True,
                    "enable_encoder_taylorseer": True,
                    "taylorseer_kwargs": {"n_derivatives": order},
                }
                label = f"F1B0 w{warmup} cap{cap} t={t} TS({order})"
                config = tp.ours(label, "ours", **options)
                row: dict[str, Any] = {"label": label}
                for variant, ctx in (("now", contextlib.nullcontext), ("late", late_derivatives)):
                    for split, ins in inputs.items():
                        with ctx():
                            images, speedup = tp.run_config(pipe, counter, config, ins, tp.STEPS)
                        row[f"{variant}_{split}"] = (speedup, tp.psnr(refs[split], images))
                rows.append(row)
                print(row, flush=True)

    def cell(x: tuple[float, float]) -> str:
        return f"{x[0]:.2f}x {x[1]:.2f}"

    gains = [r["late_eval"][1] - r["now_eval"][1] for r in rows]
    lines = [
        f"<!-- {MARKER}:start -->",
        "## TaylorSeer: differences from the first computed steps vs from the third (`bench/taylorseer_start.py`)",
        "",
        f"Generated on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {time.time() - started:.0f} s. "
        "'now': the library as it is (the first difference is formed at the second computed step of a call). "
        f"'late': a bench-only patch of `TaylorSeer.update` where the first {SKIPPED_UPDATES} computed steps "
        "store the value only, so differences start at the third computed step. Cells: block-count speedup "
        "and PSNR (dB) vs uncached; tune = the bench's inputs, eval = 3 seeds x 4 other classes, 28 steps.",
        "",
        "| config | now, tune | late, tune | now, eval | late, eval | eval gain (dB) |",
        "| --- | --- | --- | --- | --- | --- |",
        *[
            f"| {r['label']} | {cell(r['now_tune'])} | {cell(r['late_tune'])} | {cell(r['now_eval'])} | "
            f"{cell(r['late_eval'])} | {r['late_eval'][1] - r['now_eval'][1]:+.2f} |"
            for r in rows
        ],
        "",
        f"Eval gain over the {len(rows)} configurations: min {min(gains):+.2f} dB, median "
        f"{float(np.median(gains)):+.2f} dB, max {max(gains):+.2f} dB. Numbers only; the library is unchanged.",
        f"<!-- {MARKER}:end -->",
    ]
    path = Path(args.out) / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    section = "\n".join(lines)
    old = [s for s in run_bench.owned_sections(text) if s.startswith(f"<!-- {MARKER}:start")]
    text = text.replace(old[0], section) if old else text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
