"""Baselines a user could pick instead of a cache: fewer steps, or a better sampler at the same transformer cost.

For a testbed and a full step count N (28 and 50), at each target speedup k in `SPEEDUPS` the transformer-call
budget is floor(N / k) (so the speedup reaches k, as a cache pick must), and these families spend it:

- "fewer steps (same scheduler)": the pipeline's own `FlowMatchEulerDiscreteScheduler` and config, floor(N / k)
  steps. Not tuned: what a user gets by lowering `num_inference_steps`.
- "Euler, tuned shift", "Euler + Karras sigmas", "Euler + exponential sigmas", "Euler + beta sigmas":
  `FlowMatchEulerDiscreteScheduler` with the timestep shift from `SHIFTS` (and `use_karras_sigmas` /
  `use_exponential_sigmas` / `use_beta_sigmas`).
- "DPM-Solver++ 2M (flow)": `DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")`,
  and "UniPC bh2 (flow)": `UniPCMultistepScheduler(...)` the same way; both one transformer call per step.
- "Heun (flow)": `FlowMatchHeunDiscreteScheduler`, 2n - 1 transformer calls for n steps, so n = (budget + 1) // 2.
  FluxPipeline hands `set_timesteps` custom `sigmas` and `mu`, which Heun's does not take (diffusers 0.42.1 raises
  "does not support custom sigmas schedules"); `FluxHeunScheduler` below takes the step count from them and
  nothing else, with the shift fixed at construction.

The shift is set the same way for every family: FluxPipeline computes `mu` from the scheduler config's
`base_shift`/`max_shift` and the token count, and all these schedulers shift by e^mu; setting both to ln(s)
makes the shift s at any size. "pipeline default" is e^mu of the testbed's own dynamic shifting (1.60 at the
default testbed's 64 tokens, 1.65 at the scenes testbed's 256).

Protocol (the conventions of `tuned_pareto.py`, and on the default testbed its very inputs, so its cache rows and
these baselines are measured on the same images): tune each family's shift on the tuning inputs
(`INPUTS[testbed]["tune"]`, batched calls) by the mean PSNR against the full-N default output of the same input;
pick per family and speed the best tuning PSNR; evaluate the picks on inputs never used for tuning
(`eval_classes` x `eval_seeds`, one batched call per seed): PSNR vs the full-N default output (float outputs,
mean and worst image) and the transformer calls counted by a hook (the cost). The judge
(`cache_dit.testing.judge.score`: accuracy and fd) needs more images and every class, so it scores a separate
judge set (`judge_classes` x `judge_seeds`, one batched call per seed, also never used for tuning), beside the
uncached output and as many real data-generator images (the fd floor at that size). The "best" baseline per
speed is the family whose pick evaluates best by PSNR (as the tuned Pareto's rows); the JSON also names the best
by fd.

Run: `OPENBLAS_NUM_THREADS=1 python bench/baselines.py --testbed shapes` (or `scenes`); rewrites only its marked
section `baselines-<testbed>` of bench/RESULTS.md and writes bench/baselines_<testbed>.json (`--render` rewrites
the section from that JSON without running). One OpenBLAS thread keeps the judge's fd (a scipy matrix square
root) fast on shared cores.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from skimage.metrics import peak_signal_noise_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_bench  # noqa: E402
import tuned_pareto  # noqa: E402
from cache_dit.testing import judge, testbed  # noqa: E402

HERE = Path(__file__).resolve().parent
STEP_COUNTS = (28, 50)
SPEEDUPS = (1.5, 2.0, 2.5, 3.0, 4.0)
DEFAULT_SHIFT = "pipeline default"
SHIFTS: tuple[float | str, ...] = (DEFAULT_SHIFT, 1.0, 2.0, 3.0, 4.5)
SAME = "fewer steps (same scheduler)"
INPUTS: dict[str, dict[str, Any]] = {
    # the tuned Pareto's own tuning, evaluation and judge inputs (`tuned_pareto.TESTBED_INPUTS`), so its cache rows
    # and these baselines are compared on the same images; the judge scores every kind x colour class on each judge
    # seed (one batched call per seed)
    name: {**inputs, "tune": [(list(c), s) for c, s in inputs["tune"]]}
    for name, inputs in tuned_pareto.TESTBED_INPUTS.items()
}
REAL_DATA_SEED = tuned_pareto.REAL_DATA_SEED  # the real images scored beside the runs (the judge's fd floor)


class FluxHeunScheduler(FlowMatchHeunDiscreteScheduler):
    """`FlowMatchHeunDiscreteScheduler` as FluxPipeline drives it: FluxPipeline passes `set_timesteps` custom
    `sigmas` (a linspace of the step count) and `mu`; this takes the step count from them and ignores the rest
    (the shift is the config's `shift`, fixed at construction)."""

    def set_timesteps(  # type: ignore[override]
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: Any = None,
        mu: float | None = None,
    ) -> None:
        super().set_timesteps(len(sigmas) if sigmas is not None else num_inference_steps, device)


@dataclass(frozen=True)
class Method:
    """One configuration of one family: how to build its scheduler and how many steps a call budget buys."""

    family: str
    label: str
    options: dict[str, Any]  # JSON-able: scheduler class, its kwargs, the shift
    build: Callable[[dict[str, Any]], Any] = field(compare=False)
    heun: bool = False

    def steps_for(self, budget: int) -> int:
        return (budget + 1) // 2 if self.heun else budget


def image_tokens(name: str) -> int:
    """Packed image tokens of a testbed's pipeline (what FluxPipeline's dynamic shift depends on)."""
    spec = testbed.testbed_spec(name)
    side = spec.image_size // spec.vae_scale_factor // 2
    return side * side


def shift_value(shift: float | str, tokens: int) -> float:
    """The shift s of a grid value (the pipeline default is e^mu at `tokens` image tokens)."""
    return math.exp(testbed.image_mu(tokens)) if shift == DEFAULT_SHIFT else float(shift)


def methods(tokens: int, quick: bool) -> list[Method]:
    """Every family's grid (one entry per shift) plus the untuned same-scheduler row."""
    shifts = SHIFTS[:2] if quick else SHIFTS
    found = [
        Method(SAME, "Euler, the pipeline's scheduler", {"scheduler": "pipeline's own"}, lambda base: None)
    ]

    def shift_config(base: dict[str, Any], s: float) -> dict[str, Any]:
        return {
            "use_dynamic_shifting": True,
            "base_shift": math.log(s),
            "max_shift": math.log(s),
            "base_image_seq_len": base["base_image_seq_len"],
            "max_image_seq_len": base["max_image_seq_len"],
        }

    euler_kinds = {
        "Euler, tuned shift": {},
        "Euler + Karras sigmas": {"use_karras_sigmas": True},
        "Euler + exponential sigmas": {"use_exponential_sigmas": True},
        "Euler + beta sigmas": {"use_beta_sigmas": True},
    }
    for shift in shifts:
        s = shift_value(shift, tokens)
        label = f"shift {s:.2f}" + (" (default)" if shift == DEFAULT_SHIFT else "")
        for family, extra in euler_kinds.items():
            found.append(
                Method(
                    family,
                    label,
                    {"scheduler": "FlowMatchEulerDiscreteScheduler", "shift": s, **extra},
                    lambda base, s=s, extra=extra: FlowMatchEulerDiscreteScheduler.from_config(
                        base, **shift_config(base, s), **extra
                    ),
                )
            )
        for family, cls, extra in (
            ("DPM-Solver++ 2M (flow)", DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
            ("UniPC bh2 (flow)", UniPCMultistepScheduler, {"solver_type": "bh2"}),
        ):
            kwargs = {
                "use_flow_sigmas": True,
                "prediction_type": "flow_prediction",
                "use_dynamic_shifting": True,
                "time_shift_type": "exponential",
                "solver_order": 2,
                **extra,
            }

            def build(
                base: dict[str, Any], cls: Any = cls, kwargs: dict[str, Any] = kwargs, s: float = s
            ) -> Any:
                scheduler = cls(num_train_timesteps=base["num_train_timesteps"], **kwargs)
                # FluxPipeline reads base_shift/max_shift/*_image_seq_len from the config to compute mu
                scheduler.register_to_config(
                    **{k: v for k, v in shift_config(base, s).items() if k != "use_dynamic_shifting"}
                )
                return scheduler

            found.append(Method(family, label, {"scheduler": cls.__name__, "shift": s, **kwargs}, build))
        found.append(
            Method(
                "Heun (flow)",
                label,
                {"scheduler": "FlowMatchHeunDiscreteScheduler (FluxHeunScheduler adapter)", "shift": s},
                lambda base, s=s: FluxHeunScheduler(num_train_timesteps=base["num_train_timesteps"], shift=s),
                heun=True,
            )
        )
    return found


# ----------------------------------------------------------------------------------------------------------


class Runner:
    """The testbed pipeline with a transformer-call counter; runs a method at a call budget on a batch."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.spec = testbed.testbed_spec(name)
        self.pipe = testbed.load_testbed_pipeline(name=name)
        self.pipe.set_progress_bar_config(disable=True)
        self.own_scheduler = self.pipe.scheduler
        self.base_config = dict(self.own_scheduler.config)
        self.calls = 0
        self.pipe.transformer.register_forward_pre_hook(lambda module, args: self._count())
        self.tokens = image_tokens(name)

    def _count(self) -> None:
        self.calls += 1

    def run(self, method: Method | None, steps: int, classes: list[int], seed: int) -> tuple[np.ndarray, int]:
        """Float images (B, S, S, 3) in [0, 1] and the transformer calls of one batched call (`method=None`:
        the pipeline's own scheduler)."""
        scheduler = None if method is None else method.build(self.base_config)
        self.pipe.scheduler = scheduler or self.own_scheduler
        prompt_embeds, pooled = testbed.testbed_prompt_embeds(classes, name=self.name)
        self.calls = 0
        try:
            images = self.pipe(
                prompt_embeds=prompt_embeds,
                pooled_prompt_embeds=pooled,
                height=self.spec.image_size,
                width=self.spec.image_size,
                num_inference_steps=steps,
                output_type="np",
                generator=torch.Generator().manual_seed(seed),
            ).images
        finally:
            self.pipe.scheduler = self.own_scheduler
        return np.asarray(images, dtype=np.float32), self.calls


def psnrs(reference: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of float images in [0, 1]."""
    return np.array([peak_signal_noise_ratio(r, i, data_range=1.0) for r, i in zip(reference, images)])


def budget(steps: int, speedup: float) -> int:
    return max(int(math.floor(steps / speedup + 1e-9)), 2)


def protocol(runner: Runner, steps: int, quick: bool) -> dict[str, Any]:
    """Tune, pick and evaluate every family at `steps` full steps."""
    started = time.time()
    inputs = INPUTS[runner.name]
    tune_inputs = inputs["tune"]
    eval_inputs = [(inputs["eval_classes"], seed) for seed in inputs["eval_seeds"][: 1 if quick else None]]
    judge_inputs = [(inputs["judge_classes"], seed) for seed in inputs["judge_seeds"][: 1 if quick else None]]
    judge_ids = np.concatenate([classes for classes, _ in judge_inputs])
    speedups = (2.0, 4.0) if quick else SPEEDUPS

    def run_all(
        method: Method | None, n: int, batches: list[tuple[list[int], int]]
    ) -> tuple[np.ndarray, int]:
        outputs = [runner.run(method, n, classes, seed) for classes, seed in batches]
        return np.concatenate([images for images, _ in outputs]), outputs[0][1]

    tune_ref, _ = run_all(None, steps, tune_inputs)
    eval_ref, _ = run_all(None, steps, eval_inputs)
    judge_ref, _ = run_all(None, steps, judge_inputs)
    full = {"calls": steps, **judge.score(judge_ref, judge_ids, runner.name)}
    real, real_ids = judge.data_images(
        runner.name,
        len(judge_inputs) * runner.spec.num_classes,
        REAL_DATA_SEED,
        classes=inputs["judge_classes"],
    )
    real_row = {"images": len(real), **judge.score(real, real_ids, runner.name)}
    print(f"[{steps}] full: {full}; real images: {real_row}", flush=True)

    grid = methods(runner.tokens, quick)
    tuned: dict[float, dict[str, list[dict[str, Any]]]] = {}
    tune_started = time.time()
    for speedup in speedups:
        calls_budget = budget(steps, speedup)
        tuned[speedup] = {}
        for method in grid:
            n = method.steps_for(calls_budget)
            images, calls = run_all(None if method.family == SAME else method, n, tune_inputs)
            value = float(psnrs(tune_ref, images).mean())
            tuned[speedup].setdefault(method.family, []).append(
                {"method": method, "steps": n, "calls": calls, "psnr": value}
            )
            print(
                f"[{steps}] tune {speedup:.1f}x ({calls_budget} calls) {method.family:28s} {method.label:22s} "
                f"{n:3d} steps {calls:3d} calls {value:6.2f} dB",
                flush=True,
            )
    tune_seconds = time.time() - tune_started

    eval_started = time.time()
    picks: dict[float, dict[str, dict[str, Any]]] = {}
    for speedup in speedups:
        picks[speedup] = {}
        for family, rows in tuned[speedup].items():
            chosen = max(rows, key=lambda r: r["psnr"])
            method = None if family == SAME else chosen["method"]
            images, calls = run_all(method, chosen["steps"], eval_inputs)
            values = psnrs(eval_ref, images)
            judged, _ = run_all(method, chosen["steps"], judge_inputs)
            row = {
                "family": family,
                "label": chosen["method"].label,
                "options": chosen["method"].options,
                "steps": chosen["steps"],
                "calls": calls,
                "speedup": steps / calls,
                "tune_psnr": chosen["psnr"],
                "psnr_mean": float(values.mean()),
                "psnr_min": float(values.min()),
                **judge.score(judged, judge_ids, runner.name),
                "judge_set_psnr_mean": float(psnrs(judge_ref, judged).mean()),
            }
            picks[speedup][family] = row
            print(
                f"[{steps}] eval {speedup:.1f}x {family:28s} {row['label']:22s} {calls:3d} calls "
                f"PSNR {row['psnr_mean']:6.2f} (min {row['psnr_min']:6.2f}) acc {row['accuracy']:.3f} "
                f"fd {row['fd']:.3f}",
                flush=True,
            )
    return {
        "steps": steps,
        "full": full,
        "real": real_row,
        "picks": picks,
        "grid_size": len(grid),
        "eval_images": len(eval_ref),
        "judge_images": len(judge_ref),
        "seconds": time.time() - started,
        "tune_seconds": tune_seconds,
        "eval_seconds": time.time() - eval_started,
    }


# ----------------------------------------------------------------------------------------------------------
# outputs


def best_of(picks: list[dict[str, Any]], key: str, higher: bool) -> dict[str, Any]:
    return (max if higher else min)(picks, key=lambda r: r[key])


def to_json(name: str, results: dict[int, dict[str, Any]], quick: bool, seconds: float) -> dict[str, Any]:
    """Everything the section shows, keyed for other scripts: `steps[N].speedups[k].best_by_psnr` is the best
    baseline at speedup k (its `options` say how to build its scheduler)."""
    out: dict[str, Any] = {
        "testbed": name,
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": f"python bench/baselines.py --testbed {name}{' --quick' if quick else ''}",
        "quick": quick,
        "seconds": round(seconds, 1),
        "versions": {"diffusers": diffusers.__version__, "torch": torch.__version__},
        "inputs": {
            **{k: v[:1] if quick and k.endswith("_seeds") else v for k, v in INPUTS[name].items()},
            "real_data_seed": REAL_DATA_SEED,
        },
        "shifts": [shift_value(s, image_tokens(name)) for s in (SHIFTS[:2] if quick else SHIFTS)],
        "cost": "transformer calls per image (one batched pipeline call counts each step once)",
        "psnr": "float outputs vs the full-N default output of the same input, dB",
        "steps": {},
    }
    for steps, result in results.items():
        per_speed = {}
        for speedup, picks in result["picks"].items():
            rows = list(picks.values())
            per_speed[f"{speedup:g}"] = {
                "budget_calls": budget(steps, speedup),
                "best_by_psnr": best_of(rows, "psnr_mean", True),
                "best_by_fd": best_of(rows, "fd", False),
                "same_scheduler": picks[SAME],
                "picks": rows,
            }
        out["steps"][str(steps)] = {
            "full": result["full"],
            "real_images": result["real"],
            "eval_images": result["eval_images"],
            "judge_images": result["judge_images"],
            "grid_size": result["grid_size"],
            "seconds": round(result["seconds"], 1),
            "tune_seconds": round(result["tune_seconds"], 1),
            "eval_seconds": round(result["eval_seconds"], 1),
            "speedups": per_speed,
        }
    return out


def section_lines(data: dict[str, Any]) -> list[str]:
    """The marked RESULTS.md section, rendered from `to_json`'s output."""
    name = data["testbed"]
    inputs = data["inputs"]
    first = next(iter(data["steps"].values()))
    shift_note = ", ".join(f"{s:.2f}" for s in data["shifts"])
    marker = f"baselines-{name}"
    lines = [
        f"<!-- {marker}:start -->",
        f"## Baselines instead of a cache: fewer steps and better samplers ({name} testbed)",
        "",
        f"Generated by `{data['command']}` on {data['generated']} in {data['seconds']:.0f} s on 2 shared CPU "
        f"cores (diffusers {data['versions']['diffusers']}, torch {data['versions']['torch']}); "
        f"`bench/baselines_{name}.json` holds every number below.",
        "",
        "What a user could run instead of a cache at the same transformer cost: at speedup k the budget is "
        "floor(N/k) transformer calls (counted by a hook; Heun spends 2n-1 calls on n steps). Families: the "
        "pipeline's own scheduler at fewer steps (untuned), `FlowMatchEulerDiscreteScheduler` with a tuned shift "
        "and with Karras / exponential / beta sigmas, DPM-Solver++ 2M and UniPC (bh2) with "
        "`use_flow_sigmas=True, prediction_type='flow_prediction'`, and FlowMatchHeun (through a set_timesteps "
        "adapter: FluxPipeline passes sigmas and mu, which Heun's does not take). Each family's shift is tuned "
        "per speed on the tuning inputs ("
        + "; ".join(f"classes {c} seed {seed}" for c, seed in inputs["tune"])
        + f", batched) over shifts {shift_note} (the first is the pipeline's own dynamic shift), by the mean PSNR "
        "against the full-N default output; the pick is evaluated on classes "
        f"{inputs['eval_classes']} x seeds {inputs['eval_seeds']} ({first['eval_images']} images, one batched "
        "call per seed, never used for tuning"
        + (
            "; the tuned Pareto's own tuning and evaluation inputs, so its cache rows compare directly"
            if name == "shapes"
            else ""
        )
        + "). PSNR is on the float outputs against the full-N default output of the same input (mean, and the "
        "worst image: an image whose sample flips to another layout scores near 13 dB there). Accuracy and "
        "fd are `cache_dit.testing.judge.score` on a separate judge set, classes "
        f"{inputs['judge_classes']} x seeds {inputs['judge_seeds']} ({first['judge_images']} images, one batched "
        "call per seed, never used for tuning); fd is against the judge's reference set weighted to the same "
        "classes, and with this few images it is biased upwards: compare it between rows and against as many "
        "real data-generator images (its floor at this size).",
        "",
    ]
    for steps, result in data["steps"].items():
        full, real = result["full"], result["real_images"]
        fewer = [
            (v["same_scheduler"]["calls"], v["same_scheduler"]["fd"]) for v in result["speedups"].values()
        ]
        above = all(fd > full["fd"] for _, fd in fewer)
        lines += [
            f"### {steps} steps",
            "",
            f"{result['seconds']:.0f} s (tuning {result['tune_seconds']:.0f} s over {result['grid_size']} "
            f"configurations per speed, evaluation {result['eval_seconds']:.0f} s). Judge set: uncached {steps}-step output accuracy {full['accuracy']:.3f}, fd {full['fd']:.3f}; "
            f"{real['images']} real data-generator images of the same classes: accuracy {real['accuracy']:.3f}, "
            f"fd {real['fd']:.3f}. The same scheduler at fewer steps: "
            + ", ".join(f"{calls} steps fd {fd:.3f}" for calls, fd in fewer)
            + f" (the uncached output ranks {'above all of them' if above else 'NOT above all of them'} by fd).",
            "",
            "| speedup | calls | fewer steps (same scheduler): PSNR mean / min, acc, fd | best by PSNR "
            "(family: pick) | its PSNR mean / min | its acc, fd | best by fd (family: pick) | its fd, PSNR |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for speedup, entry in result["speedups"].items():
            same, best, best_fd = entry["same_scheduler"], entry["best_by_psnr"], entry["best_by_fd"]
            lines.append(
                f"| {float(speedup):.1f}x | {entry['budget_calls']} | {same['psnr_mean']:.2f} / "
                f"{same['psnr_min']:.2f}, {same['accuracy']:.3f}, {same['fd']:.3f} | {best['family']}: "
                f"{best['label']}, {best['steps']} steps | {best['psnr_mean']:.2f} / {best['psnr_min']:.2f} | "
                f"{best['accuracy']:.3f}, {best['fd']:.3f} | {best_fd['family']}: {best_fd['label']} | "
                f"{best_fd['fd']:.3f}, {best_fd['psnr_mean']:.2f} |"
            )
        lines += [
            "",
            f"Every family's pick at {steps} steps (tuning PSNR on the tuning inputs; the rest on the evaluation "
            "inputs):",
            "",
            "| speedup | family | pick | steps | calls | tune PSNR | PSNR mean | PSNR min | accuracy | fd |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for speedup, entry in result["speedups"].items():
            for row in entry["picks"]:
                lines.append(
                    f"| {float(speedup):.1f}x | {row['family']} | {row['label']} | {row['steps']} | "
                    f"{row['calls']} | {row['tune_psnr']:.2f} | {row['psnr_mean']:.2f} | {row['psnr_min']:.2f} | "
                    f"{row['accuracy']:.3f} | {row['fd']:.3f} |"
                )
        lines.append("")
    lines.append(f"<!-- {marker}:end -->")
    return lines


def write_section(data: dict[str, Any], out: Path) -> Path:
    """Replace (or append) this testbed's marked section of `out`/RESULTS.md, leaving the rest as it is."""
    path = out / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    section = "\n".join(section_lines(data))
    marker = f"<!-- baselines-{data['testbed']}:start"
    old = [s for s in run_bench.owned_sections(text) if s.startswith(marker)]
    text = text.replace(old[0], section) if old else text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testbed", choices=list(INPUTS), default="shapes")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEP_COUNTS), help="full step counts")
    parser.add_argument(
        "--quick", action="store_true", help="two shifts, 2x and 4x, one evaluation seed (smoke run)"
    )
    parser.add_argument(
        "--out", default=str(HERE), help="folder of RESULTS.md and the JSON (default: bench/)"
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the section from the existing JSON (no runs)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    json_path = out / f"baselines_{args.testbed}.json"
    if args.render:
        data = json.loads(json_path.read_text())
    else:
        torch.set_num_threads(1)
        started = time.time()
        runner = Runner(args.testbed)
        results = {steps: protocol(runner, steps, args.quick) for steps in args.steps}
        data = to_json(args.testbed, results, args.quick, time.time() - started)
        json_path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {write_section(data, out)} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
