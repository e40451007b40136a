"""Wan 2.1 image-to-video (first frame) and FLF2V (first + last frame) with cache-dit.

One transformer class for both (40 blocks in the 14B models; CFG as two marked calls per step); --last-image
makes it FLF2V (use an FLF2V checkpoint).

python examples/run_wan_i2v.py --model-path Wan-AI/Wan2.1-I2V-14B-480P-Diffusers --image first.png --compare
python examples/run_wan_i2v.py --model-path Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers --image first.png \
    --last-image last.png --height 720 --width 1280 --compare
python examples/run_wan_i2v.py --tiny --compare                       # --tiny wan_flf2v for FLF2V
"""

from __future__ import annotations

from common import Example, call_with, from_pretrained, load_image, main


def add_arguments(group):
    group.add_argument("--image", help="first frame (path or URL); required without --tiny")
    group.add_argument("--last-image", help="last frame (FLF2V checkpoints)")


def load(args, dtype):
    import torch
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline
    from transformers import CLIPVisionModel

    image_encoder = from_pretrained(
        CLIPVisionModel, args.model_path, torch.float32, subfolder="image_encoder"
    )
    vae = from_pretrained(AutoencoderKLWan, args.model_path, torch.float32, subfolder="vae")
    return from_pretrained(
        WanImageToVideoPipeline, args.model_path, dtype, vae=vae, image_encoder=image_encoder
    )


def call(args):
    last = {"last_image": load_image(args.last_image, "--last-image")} if args.last_image else {}
    keys = ("prompt", "negative_prompt", "height", "width", "num_frames", "guidance_scale")
    return call_with(args, *keys, image=load_image(args.image, "--image"), **last)


EXAMPLE = Example(
    name="wan_i2v",
    pipeline="WanImageToVideoPipeline",
    default_model="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    load=load,
    call=call,
    tiny_cases=("wan_i2v", "wan_flf2v"),
    add_arguments=add_arguments,
    real_only=("image", "last_image"),
    defaults={"steps": 40, "height": 480, "width": 832, "num_frames": 81, "guidance_scale": 5.0},
)

if __name__ == "__main__":
    main(EXAMPLE)
