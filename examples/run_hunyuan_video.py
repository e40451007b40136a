"""HunyuanVideo text-to-video with cache-dit (60 blocks: 20 dual-stream + 40 single-stream; guidance-distilled,
one call per step).

python examples/run_hunyuan_video.py --model-path hunyuanvideo-community/HunyuanVideo --compare   # GPU + weights
python examples/run_hunyuan_video.py --tiny --compare
"""

from __future__ import annotations

from common import Example, call_with, from_pretrained, main


def load(args, dtype):
    import torch
    from diffusers import HunyuanVideoPipeline, HunyuanVideoTransformer3DModel

    transformer = from_pretrained(
        HunyuanVideoTransformer3DModel, args.model_path, dtype, subfolder="transformer"
    )
    pipe = from_pretrained(HunyuanVideoPipeline, args.model_path, torch.float16, transformer=transformer)
    pipe.vae.enable_tiling()
    return pipe


def call(args):
    return call_with(args, "prompt", "height", "width", "num_frames", "guidance_scale")


EXAMPLE = Example(
    name="hunyuan_video",
    pipeline="HunyuanVideoPipeline",
    default_model="hunyuanvideo-community/HunyuanVideo",
    load=load,
    call=call,
    tiny_cases=("hunyuan_video",),
    defaults={"steps": 30, "height": 320, "width": 512, "num_frames": 61, "guidance_scale": 6.0},
)

if __name__ == "__main__":
    main(EXAMPLE)
