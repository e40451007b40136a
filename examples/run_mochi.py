"""Mochi 1 text-to-video with cache-dit (48 blocks; CFG batched into one call per step: one cache decision
for both halves).

python examples/run_mochi.py --model-path genmo/mochi-1-preview --compare
python examples/run_mochi.py --tiny --compare
"""

from __future__ import annotations

from common import Example, from_pretrained, main, tensor_frames, torch_dtype


def add_arguments(parser):
    parser.add_argument("--frames", type=int, default=85, help="number of frames (6k + 1)")


def load(args):
    from diffusers import MochiPipeline

    pipe = from_pretrained(MochiPipeline, args.model_path, torch_dtype(args)).to(args.device)
    pipe.enable_vae_tiling()
    return pipe


def generate(pipe, args, steps):
    import torch

    frames = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        num_inference_steps=steps,
        guidance_scale=4.5,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="pt",
    ).frames
    return tensor_frames(frames)


EXAMPLE = Example(
    name="mochi",
    pipeline="MochiPipeline",
    default_model="genmo/mochi-1-preview",
    kind="video",
    load=load,
    generate=generate,
    tiny_cases=("mochi",),
    add_arguments=add_arguments,
    defaults={"steps": 64, "height": 480, "width": 848},
)

if __name__ == "__main__":
    main(EXAMPLE)
