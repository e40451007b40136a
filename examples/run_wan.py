"""Wan 2.1 text-to-video with cache-dit (30 blocks in 1.3B, 40 in 14B; CFG as two marked calls per step).

python examples/run_wan.py --model-path Wan-AI/Wan2.1-T2V-1.3B-Diffusers --cache DBCache --Fn 1 --Bn 0 \
    --rdt 0.1 --warmup-steps 8 --max-continuous-cached-steps 2 --taylorseer --order 1 --compare
python examples/run_wan.py --tiny --compare
"""

from __future__ import annotations

from common import Example, from_pretrained, main, tensor_frames, torch_dtype


def add_arguments(parser):
    parser.add_argument("--frames", type=int, default=81, help="number of frames (4k + 1)")


def load(args):
    import torch
    from diffusers import AutoencoderKLWan, WanPipeline

    vae = from_pretrained(AutoencoderKLWan, args.model_path, torch.float32, subfolder="vae")
    return from_pretrained(WanPipeline, args.model_path, torch_dtype(args), vae=vae).to(args.device)


def generate(pipe, args, steps):
    import torch

    frames = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        num_inference_steps=steps,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="pt",
    ).frames
    return tensor_frames(frames)


EXAMPLE = Example(
    name="wan",
    pipeline="WanPipeline",
    default_model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    kind="video",
    load=load,
    generate=generate,
    tiny_cases=("wan",),
    add_arguments=add_arguments,
    defaults={"steps": 50, "height": 480, "width": 832},
)

if __name__ == "__main__":
    main(EXAMPLE)
