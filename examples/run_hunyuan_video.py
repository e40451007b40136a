"""HunyuanVideo text-to-video with cache-dit (60 blocks: 20 dual-stream + 40 single-stream; guidance-distilled,
one call per step).

python examples/run_hunyuan_video.py --model-path hunyuanvideo-community/HunyuanVideo --compare
python examples/run_hunyuan_video.py --tiny --compare
"""

from __future__ import annotations

from common import Example, from_pretrained, main, tensor_frames, torch_dtype


def add_arguments(parser):
    parser.add_argument("--frames", type=int, default=61, help="number of frames (4k + 1)")


def load(args):
    import torch
    from diffusers import HunyuanVideoPipeline, HunyuanVideoTransformer3DModel

    transformer = from_pretrained(
        HunyuanVideoTransformer3DModel, args.model_path, torch_dtype(args), subfolder="transformer"
    )
    pipe = from_pretrained(HunyuanVideoPipeline, args.model_path, torch.float16, transformer=transformer).to(
        args.device
    )
    pipe.vae.enable_tiling()
    return pipe


def generate(pipe, args, steps):
    import torch

    frames = pipe(
        args.prompt,
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        num_inference_steps=steps,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="pt",
    ).frames
    return tensor_frames(frames)


EXAMPLE = Example(
    name="hunyuan_video",
    pipeline="HunyuanVideoPipeline",
    default_model="hunyuanvideo-community/HunyuanVideo",
    kind="video",
    load=load,
    generate=generate,
    tiny_cases=("hunyuan_video",),
    add_arguments=add_arguments,
    defaults={"steps": 30, "height": 320, "width": 512},
)

if __name__ == "__main__":
    main(EXAMPLE)
