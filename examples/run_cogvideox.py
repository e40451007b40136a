"""CogVideoX / CogVideoX 1.5 text-to-video with cache-dit (2B: 30 blocks, 5B: 42; CFG batched into one call
per step: one cache decision for both halves).

python examples/run_cogvideox.py --model-path THUDM/CogVideoX-5b --compare
python examples/run_cogvideox.py --model-path THUDM/CogVideoX1.5-5B --frames 81 --height 768 --width 1360
python examples/run_cogvideox.py --tiny --compare                    # --tiny-case cogvideox1.5 for 1.5
"""

from __future__ import annotations

from common import Example, from_pretrained, main, tensor_frames, torch_dtype


def add_arguments(parser):
    parser.add_argument("--frames", type=int, default=49, help="number of frames (4k + 1)")


def load(args):
    from diffusers import CogVideoXPipeline

    pipe = from_pretrained(CogVideoXPipeline, args.model_path, torch_dtype(args)).to(args.device)
    pipe.vae.enable_tiling()
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
        guidance_scale=6.0,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="pt",
    ).frames
    return tensor_frames(frames)


EXAMPLE = Example(
    name="cogvideox",
    pipeline="CogVideoXPipeline",
    default_model="THUDM/CogVideoX-5b",
    kind="video",
    load=load,
    generate=generate,
    tiny_cases=("cogvideox", "cogvideox1.5"),
    add_arguments=add_arguments,
    defaults={"steps": 50, "height": 480, "width": 720},
)

if __name__ == "__main__":
    main(EXAMPLE)
