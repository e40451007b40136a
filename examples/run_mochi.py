"""Mochi 1 text-to-video with cache-dit (48 blocks; CFG batched into one call per step: one cache decision
for both halves).

python examples/run_mochi.py --model-path genmo/mochi-1-preview --compare          # GPU + weights
python examples/run_mochi.py --tiny --compare
"""

from __future__ import annotations

from common import Example, call_with, from_pretrained, main


def load(args, dtype):
    from diffusers import MochiPipeline

    pipe = from_pretrained(MochiPipeline, args.model_path, dtype)
    pipe.enable_vae_tiling()
    return pipe


def call(args):
    return call_with(args, "prompt", "negative_prompt", "height", "width", "num_frames", "guidance_scale")


EXAMPLE = Example(
    name="mochi",
    pipeline="MochiPipeline",
    default_model="genmo/mochi-1-preview",
    load=load,
    call=call,
    tiny_cases=("mochi",),
    defaults={"steps": 64, "height": 480, "width": 848, "num_frames": 85, "guidance_scale": 4.5},
)

if __name__ == "__main__":
    main(EXAMPLE)
