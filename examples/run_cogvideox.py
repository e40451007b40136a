"""CogVideoX / CogVideoX 1.5 text-to-video with cache-dit (2B: 30 blocks, 5B: 42; CFG batched into one call
per step: one cache decision for both halves).

python examples/run_cogvideox.py --model-path THUDM/CogVideoX-5b --compare                        # GPU + weights
python examples/run_cogvideox.py --model-path THUDM/CogVideoX1.5-5B --num-frames 81 --height 768 --width 1360
python examples/run_cogvideox.py --tiny --compare                    # --tiny cogvideox1.5 for 1.5
"""

from __future__ import annotations

from common import Example, call_with, from_pretrained, main


def load(args, dtype):
    from diffusers import CogVideoXPipeline

    pipe = from_pretrained(CogVideoXPipeline, args.model_path, dtype)
    pipe.vae.enable_tiling()
    return pipe


def call(args):
    return call_with(args, "prompt", "negative_prompt", "height", "width", "num_frames", "guidance_scale")


EXAMPLE = Example(
    name="cogvideox",
    pipeline="CogVideoXPipeline",
    default_model="THUDM/CogVideoX-5b",
    load=load,
    call=call,
    tiny_cases=("cogvideox", "cogvideox1.5"),
    defaults={"steps": 50, "height": 480, "width": 720, "num_frames": 49, "guidance_scale": 6.0},
)

if __name__ == "__main__":
    main(EXAMPLE)
