"""CogVideoX / CogVideoX 1.5 image-to-video with cache-dit (the first frame is --image; CFG batched into one
call per step).

python examples/run_cogvideox_i2v.py --model-path THUDM/CogVideoX-5b-I2V --image first.png --compare   # GPU
python examples/run_cogvideox_i2v.py --tiny --compare
"""

from __future__ import annotations

from common import Example, call_with, from_pretrained, load_image, main


def add_arguments(group):
    group.add_argument("--image", help="first frame (path or URL); required without --tiny")


def load(args, dtype):
    from diffusers import CogVideoXImageToVideoPipeline

    pipe = from_pretrained(CogVideoXImageToVideoPipeline, args.model_path, dtype)
    pipe.vae.enable_tiling()
    return pipe


def call(args):
    keys = ("prompt", "negative_prompt", "height", "width", "num_frames", "guidance_scale")
    return call_with(args, *keys, image=load_image(args.image, "--image"))


EXAMPLE = Example(
    name="cogvideox_i2v",
    pipeline="CogVideoXImageToVideoPipeline",
    default_model="THUDM/CogVideoX-5b-I2V",
    load=load,
    call=call,
    tiny_cases=("cogvideox_i2v",),
    add_arguments=add_arguments,
    real_only=("image",),
    defaults={"steps": 50, "height": 480, "width": 720, "num_frames": 49, "guidance_scale": 6.0},
)

if __name__ == "__main__":
    main(EXAMPLE)
