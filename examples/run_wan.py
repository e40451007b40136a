"""Wan 2.1 (T2V) with DBCache and TaylorSeer, CFG branches kept apart (needs the model weights and a GPU).

python examples/run_wan.py --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --steps 50
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import AutoencoderKLWan, WanPipeline
from diffusers.utils import export_to_video

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    parser.add_argument("--prompt", default="A cat walks on the grass, realistic")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", default="wan_cached.mp4")
    args = parser.parse_args()

    vae = AutoencoderKLWan.from_pretrained(args.model, subfolder="vae", torch_dtype=torch.float32)
    pipe = WanPipeline.from_pretrained(args.model, vae=vae, torch_dtype=torch.bfloat16).to("cuda")
    apply_cache_on_pipe(
        pipe,
        cache_type="dbcache",
        Fn_compute_blocks=1,
        Bn_compute_blocks=0,
        residual_diff_threshold=0.1,
        warmup_steps=8,
        max_continuous_cached_steps=2,
        enable_taylorseer=True,
        taylorseer_kwargs={"n_derivatives": 1},
    )
    start = time.perf_counter()
    frames = pipe(args.prompt, height=480, width=832, num_frames=81, num_inference_steps=args.steps).frames[0]
    print(f"{time.perf_counter() - start:.1f}s")
    print(cache_dit.summary(pipe))
    export_to_video(frames, args.out, fps=15)


if __name__ == "__main__":
    main()
