"""`python -m cache_dit.demo`: the trained testbed, uncached vs a few caches, a table and a PNG grid.

Runs in well under two minutes on 2 CPU cores. Falls back to a tiny random FLUX pipeline (and says so) when the
testbed weights are missing.
"""

from __future__ import annotations

import argparse
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


def _load(steps: int) -> tuple[Any, dict[str, Any], str]:
    """The testbed pipeline and its call kwargs; a tiny random FLUX pipeline when the weights are missing."""
    from cache_dit.testing import testbed

    if (testbed.WEIGHTS_DIR / "transformer.safetensors").exists():
        pipe = testbed.load_testbed_pipeline()
        class_ids = [0, 5, 10, 7]  # red circle, green square, blue triangle, yellow square
        prompt_embeds, pooled = testbed.testbed_prompt_embeds(class_ids)
        label = "trained testbed: " + ", ".join(testbed.CLASS_NAMES[i] for i in class_ids)
        size = testbed.IMAGE_SIZE
    else:
        from cache_dit.testing import tiny

        pipe = tiny.tiny_flux_pipeline()
        prompt_embeds, pooled = tiny.flux_prompt_embeds(batch=4)
        label = "tiny RANDOM FLUX pipeline (testbed weights not found): quality numbers mean little"
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
    return pipe, kwargs, label


def _generate(pipe: Any, kwargs: dict[str, Any]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    images = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images  # (B, H, W, 3) in [0, 1]
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), time.perf_counter() - start


def _save_grid(rows: list[np.ndarray], path: Path) -> None:
    """One row per configuration, one column per sample, 2x nearest-neighbour upscaled."""
    from PIL import Image

    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    grid = grid.repeat(2, axis=0).repeat(2, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache_dit.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo_grid.png", help="PNG grid path (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=28, help="denoising steps (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2")

    pipe, kwargs, label = _load(args.steps)
    print(f"cache-dit demo on the {label}; {args.steps} steps, batch of {len(kwargs['prompt_embeds'])}")
    _generate(pipe, kwargs)  # warm-up
    reference, base_time = _generate(pipe, kwargs)
    rows = [reference]
    table = [("uncached", base_time, 1.0, "-", "inf")]
    for name, options in CONFIGS.items():
        apply_cache_on_pipe(pipe, **options)
        images, elapsed = _generate(pipe, kwargs)
        stats = cache_dit.summary(pipe)
        psnr, _ = compute_psnr(reference, images)
        if stats.cache_type == "DBPrune":
            cached = f"{stats.pruned_ratio:.0f}% blocks pruned"
        else:
            cached = f"{len(stats.cached_steps)}/{stats.num_steps} steps"
        table.append((name, elapsed, base_time / elapsed, cached, f"{psnr:.2f}"))
        rows.append(images)
    cache_dit.disable_cache(pipe)

    header = ("config", "time (s)", "speedup", "cached", "PSNR (dB)")
    cells = [header] + [(n, f"{t:.2f}", f"{x:.2f}x", c, p) for n, t, x, c, p in table]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    out = Path(args.out)
    _save_grid(rows, out)
    print(f"grid (rows: {', '.join(r[0] for r in table)}) -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
