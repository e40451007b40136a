"""How hard is a trained testbed for caches? The target properties of issue 20, measured on held-out seeds.

For a testbed (`--testbed shapes|scenes`), at 28 steps, on seeds and classes never used for training data
selection or tuning (seeds 100..100+S-1, classes spread over the class table):

* PSNR of running half the steps (14, same scheduler, no cache) against the full 28-step output
  (target on "scenes": at most 38 dB);
* PSNR of a plain F1B0 reuse cache at exactly 2x (fixed schedule: every other step computed, Fn=1, Bn=0,
  order-0 reuse) against the full output (target: 25-40 dB);
* the first dual block's residual change per step, relative L1 (target shape: high at the start and the
  end, lower in the middle), averaged over the inputs, and plotted to `bench/testbed_profile_<name>.png`.

PSNR is on the float output (`output_type="np"`, range [0, 1]), per image; the table gives mean and worst.
Writes a section of bench/RESULTS.md between `<!-- testbed-properties:<name>:start/end -->` markers.

    python bench/testbed_properties.py --testbed scenes
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cache_dit.cache_factory import apply_cache_on_pipe, disable_cache
from cache_dit.testing import testbed as tb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tuned_pareto import REAL_DATA_SEED, TESTBED_INPUTS, judge_table  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def _psnr(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of float images in [0, 1], (B, H, W, 3)."""
    mse = ((ref.astype(np.float64) - test.astype(np.float64)) ** 2).reshape(len(ref), -1).mean(axis=1)
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-20))


def _sample(pipe, name, classes, seed, steps) -> np.ndarray:
    return tb.sample_classes(pipe, classes, seed=seed, num_inference_steps=steps, name=name, as_float=True)


def measure(name: str | None, seeds: int, steps: int = 28) -> dict:
    pipe = tb.load_testbed_pipeline(name=name)
    n = tb.testbed_num_classes(name)
    classes = sorted({round(i * (n - 1) / 3) for i in range(4)})  # 4 classes spread over the table
    half, reuse, profiles = [], [], []
    every_other = list(range(0, steps, 2))
    for seed in range(100, 100 + seeds):
        full = _sample(pipe, name, classes, seed, steps)
        half.append(_psnr(full, _sample(pipe, name, classes, seed, steps // 2)))
        apply_cache_on_pipe(pipe, Fn_compute_blocks=1, Bn_compute_blocks=0, compute_steps=every_other)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            reuse.append(_psnr(full, _sample(pipe, name, classes, seed, steps)))
        disable_cache(pipe)
        prompt, pooled = tb.testbed_prompt_embeds(classes, name=name)
        profiles.append(
            tb.first_block_residual_profile(
                pipe, prompt, pooled, steps, seed=seed, image_size=tb.testbed_image_size(name)
            )
        )
    steps_1_on = np.asarray(profiles, dtype=np.float64)[:, 1:].mean(axis=0)  # step 0 has no previous step
    profile = np.concatenate([[np.nan], steps_1_on])
    half_all, reuse_all = np.concatenate(half), np.concatenate(reuse)
    return {
        "name": name or "shapes",
        "classes": classes,
        "seeds": list(range(100, 100 + seeds)),
        "half": (float(half_all.mean()), float(half_all.min())),
        "reuse": (float(reuse_all.mean()), float(reuse_all.min())),
        "profile": profile.tolist(),
        "judge": judge_rows(pipe, name, seeds),
    }


def judge_rows(pipe, name: str | None, seeds: int) -> dict[str, dict[str, float]]:
    """`cache_dit.testing.judge.score` of uncached runs at 28 and 50 steps, of fewer steps (14, 9, 7: 2x, 3x, 4x
    of 28) and of as many real images, on every kind x colour class once per seed (12 classes; the count cycles
    1, 2, 3 on scenes) at the held-out seeds. Saves the 28-step images of the first seed as the samples plot."""
    from cache_dit.testing import judge

    n = tb.testbed_num_classes(name)
    classes = TESTBED_INPUTS[name or "shapes"]["judge_classes"]
    ids = np.asarray(classes * seeds)
    rows = {}
    for steps in (28, 50, 14, 9, 7):
        images = np.concatenate([_sample(pipe, name, classes, 100 + s, steps) for s in range(seeds)])
        if steps == 28:
            grid = (images[: len(classes)] * 255).round().astype(np.uint8)
            tb.save_grid(
                grid, Path(__file__).with_name(f"testbed_{name or 'shapes'}_samples.png"), columns=12, scale=1
            )
        rows[f"uncached, {steps} steps"] = judge.score(images, ids, name)
    real, real_ids = judge.data_images(name, seeds * n, seed=REAL_DATA_SEED, classes=classes)
    rows[f"real data ({len(real)} images, the fd floor)"] = judge.score(real, real_ids, name)
    return rows


def _section(result: dict, plot: Path) -> str:
    p = result["profile"]
    steps = len(p)
    third = steps // 3
    start, middle, end = (
        np.nanmean(p[1 : third + 1]),
        np.nanmean(p[third : 2 * third]),
        np.nanmean(p[2 * third :]),
    )
    lines = [
        f"### Testbed properties: {result['name']} (28 steps, held-out seeds {result['seeds'][0]}-"
        f"{result['seeds'][-1]} x classes {result['classes']})",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `python bench/testbed_properties.py --testbed {result['name']}` "
        "(PSNR on the float output vs the uncached 28-step output, per image).",
        "",
        "| what | mean PSNR | worst PSNR |",
        "| --- | --- | --- |",
        f"| half the steps (14), no cache | {result['half'][0]:.2f} dB | {result['half'][1]:.2f} dB |",
        f"| F1B0 reuse cache at 2x (every other step computed, order 0) | {result['reuse'][0]:.2f} dB | "
        f"{result['reuse'][1]:.2f} dB |",
        "",
        "First dual block's residual change per step (relative L1, mean over the inputs), steps 1..27: "
        + " ".join(f"{v:.3f}" for v in p[1:]),
        "",
        f"Mean over the first / middle / last third of the steps: {start:.3f} / {middle:.3f} / {end:.3f}. "
        f"Plot: `{plot.name}`.",
        "",
        "Judge (`cache_dit.testing.judge.score`; every kind x colour class once per held-out seed; accuracy: "
        "fraction predicted as the class asked for; fd: Fréchet distance of the judge's features to real data, "
        f"lower is closer). Samples: `testbed_{result['name']}_samples.png` (28 steps, first seed).",
        "",
        *(judge_table(result["judge"]) if result.get("judge") else []),
        "",
    ]
    return "\n".join(lines)


def _write(result: dict, plot: Path) -> None:
    start, end = (
        f"<!-- testbed-properties:{result['name']}:start -->",
        f"<!-- testbed-properties:{result['name']}:end -->",
    )
    block = f"{start}\n{_section(result, plot)}{end}"
    text = RESULTS.read_text()
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def _plot(result: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(__file__).with_name(f"testbed_profile_{result['name']}.png")
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(1, len(result["profile"])), result["profile"][1:], marker="o", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("relative L1 change of block 0's residual")
    ax.set_title(f"testbed '{result['name']}', 28 steps")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--testbed", choices=tb.TESTBED_NAMES, default="scenes")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(2)
    name = None if args.testbed == "shapes" else args.testbed
    result = measure(name, args.seeds)
    plot = _plot(result)
    print(_section(result, plot))
    if not args.no_write:
        _write(result, plot)


if __name__ == "__main__":
    main()
