"""Wan 2.1 text-to-video with cache-dit (30 blocks in 1.3B, 40 in 14B; CFG as two marked calls per step).

python examples/run_wan.py --model-path Wan-AI/Wan2.1-T2V-1.3B-Diffusers --cache DBCache --Fn 1 --Bn 0 \
    --rdt 0.1 --warmup-steps 8 --max-continuous-cached-steps 2 --taylorseer --order 1 --compare   # GPU + weights
python examples/run_wan.py --tiny --compare
"""

from __future__ import annotations

from common import Example, call_with, from_pretrained, main


def load(args, dtype):
    import torch
    from diffusers import AutoencoderKLWan, WanPipeline

    vae = from_pretrained(AutoencoderKLWan, args.model_path, torch.float32, subfolder="vae")
    return from_pretrained(WanPipeline, args.model_path, dtype, vae=vae)


def call(args):
    return call_with(args, "prompt", "negative_prompt", "height", "width", "num_frames", "guidance_scale")


EXAMPLE = Example(
    name="wan",
    pipeline="WanPipeline",
    default_model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    load=load,
    call=call,
    tiny_cases=("wan",),
    defaults={"steps": 50, "height": 480, "width": 832, "num_frames": 81, "guidance_scale": 5.0},
)

if __name__ == "__main__":
    main(EXAMPLE)
