"""FLUX.1-dev with DBCache: uncached vs cached, time and PSNR (needs the model weights and a GPU).

python examples/run_flux.py --model black-forest-labs/FLUX.1-dev --steps 28
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from diffusers import FluxPipeline

import cache_dit
from cache_dit.cache_factory import CacheType, apply_cache_on_pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="black-forest-labs/FLUX.1-dev")
    parser.add_argument("--prompt", default="A cat holding a sign that says hello world")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--threshold", type=float, default=0.12)
    args = parser.parse_args()

    pipe = FluxPipeline.from_pretrained(args.model, torch_dtype=torch.bfloat16).to("cuda")

    def generate() -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        image = pipe(
            args.prompt, num_inference_steps=args.steps, generator=torch.Generator("cpu").manual_seed(0)
        ).images[0]
        return np.asarray(image), time.perf_counter() - start

    reference, base_time = generate()
    options = CacheType.default_options(CacheType.DBCache)
    options.update(residual_diff_threshold=args.threshold)
    apply_cache_on_pipe(pipe, **options)
    cached, cached_time = generate()
    print(cache_dit.summary(pipe))
    mse = np.mean((reference.astype(np.float64) - cached.astype(np.float64)) ** 2)
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    print(
        f"uncached {base_time:.2f}s, cached {cached_time:.2f}s ({base_time / cached_time:.2f}x), PSNR {psnr:.2f} dB"
    )


if __name__ == "__main__":
    main()
