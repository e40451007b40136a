"""`python -m cache_dit.demo`: the trained testbed, uncached vs a few caches, a table and a labelled PNG grid.

Two speedups, side by side: *wall-clock* is the median over interleaved rounds (each round runs every
configuration once, uncached included) of uncached time / cached time within the round, so machine load hits
both sides alike; *blocks* is transformer block calls uncached / cached, exact and independent of the machine
(what caching saves inside the transformer; wall-clock also pays the VAE, the scheduler and Python per step).

Runs in well under a minute on 2 CPU cores. Falls back to a tiny random FLUX pipeline (and says so) when the
testbed weights are missing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe
from cache_dit.metrics import compute_psnr

CONFIGS: dict[str, dict[str, Any]] = {
    "FBCache t=0.08": {
        "cache_type": "fbcache",
        "residual_diff_threshold": 0.08,
        "warmup_steps": 4,
        "max_cached_steps": -1,
    },
    "DBCache F1B0 t=0.12 + TaylorSeer(1)": {
        "cache_type": "dbcache",
        "Fn_compute_blocks": 1,
        "Bn_compute_blocks": 0,
        "residual_diff_threshold": 0.12,
        "warmup_steps": 4,
        "enable_taylorseer": True,
        "enable_encoder_taylorseer": True,
        "taylorseer_kwargs": {"n_derivatives": 1},
    },
    "DBPrune F1B1 t=0.08": {
        "cache_type": "dbprune",
        "Fn_compute_blocks": 1,
        "Bn_compute_blocks": 1,
        "residual_diff_threshold": 0.08,
        "warmup_steps": 4,
    },
}


SCALE = 2  # nearest-neighbour upscale of the 64x64 samples in the grid
LABEL_HEIGHT = 16  # pixels of the text band above each grid row (and of the column header)
DIFF_GAIN = 10  # |cached - uncached| is multiplied by this in the difference rows


def _load(steps: int) -> tuple[Any, dict[str, Any], str, list[str]]:
    """The testbed pipeline, its call kwargs, a label and the column (class) names; tiny FLUX as fallback."""
    from cache_dit.testing import testbed

    if (testbed.WEIGHTS_DIR / "transformer.safetensors").exists():
        pipe = testbed.load_testbed_pipeline()
        class_ids = [0, 5, 10, 7]  # red circle, green square, blue triangle, yellow square
        prompt_embeds, pooled = testbed.testbed_prompt_embeds(class_ids)
        columns = [testbed.CLASS_NAMES[i] for i in class_ids]
        label = "trained testbed: " + ", ".join(columns)
        size = testbed.IMAGE_SIZE
    else:
        from cache_dit.testing import tiny

        pipe = tiny.tiny_flux_pipeline()
        prompt_embeds, pooled = tiny.flux_prompt_embeds(batch=4)
        label = "tiny RANDOM FLUX pipeline (testbed weights not found): quality numbers mean little"
        columns = [f"sample {i}" for i in range(4)]
        size = 32
    pipe.set_progress_bar_config(disable=True)
    kwargs = {
        "prompt_embeds": prompt_embeds,
        "pooled_prompt_embeds": pooled,
        "height": size,
        "width": size,
        "num_inference_steps": steps,
        "output_type": "np",
    }
    return pipe, kwargs, label, columns


def _count_block_calls(transformer: torch.nn.Module) -> list[int]:
    """Count real block computations (installed before any cache: a block the cache skips is not counted)."""
    from cache_dit.cache_factory.adapters import find_adapter

    counter = [0]
    for block, _ in find_adapter(transformer).blocks(transformer):
        original = block.forward

        def counting(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            counter[0] += 1
            return _original(*args, **kwargs)

        block.forward = counting
    return counter


def _generate(pipe: Any, kwargs: dict[str, Any]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    images = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images  # (B, H, W, 3) in [0, 1]
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), time.perf_counter() - start


def _save_grid(rows: list[tuple[str, np.ndarray]], columns: list[str], path: Path) -> np.ndarray:
    """One labelled row per (label, images (B, H, W, 3) uint8); a header with the column names."""
    from PIL import Image, ImageDraw

    height, width = rows[0][1].shape[1:3]
    cell_h, cell_w = height * SCALE, width * SCALE
    canvas = Image.new(
        "RGB", (cell_w * len(columns), LABEL_HEIGHT + len(rows) * (LABEL_HEIGHT + cell_h)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(columns):
        draw.text((j * cell_w + 3, 2), name, fill="black")
    y = LABEL_HEIGHT
    for label, images in rows:
        draw.text((3, y + 2), label, fill="black")
        y += LABEL_HEIGHT
        strip = np.concatenate(list(images), axis=1).repeat(SCALE, axis=0).repeat(SCALE, axis=1)
        canvas.paste(Image.fromarray(strip), (0, y))
        y += cell_h
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return np.asarray(canvas)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache_dit.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo_grid.png", help="PNG grid path (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=28, help="denoising steps (default: %(default)s)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="interleaved timing rounds, median reported (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    torch.set_num_threads(1)  # a 64x64 model is per-op overhead: one thread is fastest and steadiest

    pipe, kwargs, label, columns = _load(args.steps)
    print(
        f"cache-dit demo on the {label}; {args.steps} steps, batch of {len(kwargs['prompt_embeds'])}, "
        f"{args.repeats} timing round(s)"
    )
    counter = _count_block_calls(pipe.transformer)
    _generate(pipe, kwargs)  # warm-up
    names = ["uncached", *CONFIGS]
    times: dict[str, list[float]] = {name: [] for name in names}
    images: dict[str, np.ndarray] = {}
    blocks: dict[str, int] = {}
    cached: dict[str, str] = {}
    for round_ in range(args.repeats):  # interleaved: every round runs every configuration once
        for name in names:
            if name == "uncached":
                cache_dit.disable_cache(pipe)
            else:
                apply_cache_on_pipe(pipe, **CONFIGS[name])
            counter[0] = 0
            out, elapsed = _generate(pipe, kwargs)
            times[name].append(elapsed)
            if round_ == 0:  # outputs and block counts are deterministic: keep the first round's
                images[name], blocks[name] = out, counter[0]
                stats = cache_dit.summary(pipe)
                if stats.cache_type == "DBPrune":
                    cached[name] = f"{stats.pruned_ratio:.0f}% blocks pruned"
                elif stats.cache_type != "NONE":
                    cached[name] = f"{len(stats.cached_steps)}/{stats.num_steps} steps"
    cache_dit.disable_cache(pipe)

    table = []
    grid_rows: list[tuple[str, np.ndarray]] = [("uncached (reference)", images["uncached"])]
    for name in names:
        wall = statistics.median(u / t for u, t in zip(times["uncached"], times[name]))
        block_speedup = blocks["uncached"] / blocks[name]
        psnr = compute_psnr(images["uncached"], images[name])[0] if name != "uncached" else float("inf")
        psnr_text = "inf" if psnr == float("inf") else f"{psnr:.2f}"
        table.append(
            (
                name,
                f"{statistics.median(times[name]):.2f}",
                f"{wall:.2f}x",
                f"{block_speedup:.2f}x",
                cached.get(name, "-"),
                psnr_text,
            )
        )
        if name != "uncached":
            grid_rows.append(
                (
                    f"{name}: {wall:.2f}x wall-clock, {block_speedup:.2f}x blocks, PSNR {psnr_text} dB",
                    images[name],
                )
            )
            diff = np.abs(images[name].astype(np.int16) - images["uncached"].astype(np.int16)) * DIFF_GAIN
            grid_rows.append((f"|{name} - uncached| x {DIFF_GAIN}", np.clip(diff, 0, 255).astype(np.uint8)))

    header = ("config", "time (s)", "wall-clock", "blocks", "cached", "PSNR (dB)")
    cells = [header, *table]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(
        f"time and wall-clock: median of {args.repeats} interleaved round(s), speedup = uncached / cached time in "
        "the same round (includes VAE, scheduler and Python per step); blocks: transformer block calls "
        "uncached / cached (exact, machine-independent)"
    )
    out = Path(args.out)
    _save_grid(grid_rows, columns, out)
    print(
        f"grid (rows: each method, then |method - uncached| x {DIFF_GAIN}; columns: {', '.join(columns)}) -> {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
