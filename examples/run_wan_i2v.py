"""Wan 2.1 image-to-video (first frame) and FLF2V (first + last frame) with cache-dit.

One transformer class for both (40 blocks in the 14B models; CFG as two marked calls per step); --last-image
makes it FLF2V (use an FLF2V checkpoint).

python examples/run_wan_i2v.py --model-path Wan-AI/Wan2.1-I2V-14B-480P-Diffusers --image first.png --compare
python examples/run_wan_i2v.py --model-path Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers --image first.png \
    --last-image last.png --height 720 --width 1280 --compare
python examples/run_wan_i2v.py --tiny --compare                       # --tiny-case wan_flf2v for FLF2V
"""

from __future__ import annotations

from common import Example, from_pretrained, load_image, main, tensor_frames, torch_dtype


def add_arguments(parser):
    parser.add_argument("--image", help="first frame (path or URL); required without --tiny")
    parser.add_argument("--last-image", help="last frame (FLF2V checkpoints)")
    parser.add_argument("--frames", type=int, default=81, help="number of frames (4k + 1)")


def load(args):
    import torch
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline
    from transformers import CLIPVisionModel

    image_encoder = from_pretrained(
        CLIPVisionModel, args.model_path, torch.float32, subfolder="image_encoder"
    )
    vae = from_pretrained(AutoencoderKLWan, args.model_path, torch.float32, subfolder="vae")
    return from_pretrained(
        WanImageToVideoPipeline, args.model_path, torch_dtype(args), vae=vae, image_encoder=image_encoder
    ).to(args.device)


def generate(pipe, args, steps):
    import torch

    extra = {"last_image": load_image(args.last_image, "--last-image")} if args.last_image else {}
    frames = pipe(
        image=load_image(args.image, "--image"),
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        num_inference_steps=steps,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="pt",
        **extra,
    ).frames
    return tensor_frames(frames)


EXAMPLE = Example(
    name="wan_i2v",
    pipeline="WanImageToVideoPipeline",
    default_model="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    kind="video",
    load=load,
    generate=generate,
    tiny_cases=("wan_i2v", "wan_flf2v"),
    add_arguments=add_arguments,
    defaults={"steps": 40, "height": 480, "width": 832},
)

if __name__ == "__main__":
    main(EXAMPLE)
