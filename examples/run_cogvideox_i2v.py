"""CogVideoX / CogVideoX 1.5 image-to-video with cache-dit (the first frame is --image; CFG batched into one
call per step).

python examples/run_cogvideox_i2v.py --model-path THUDM/CogVideoX-5b-I2V --image first.png --compare
python examples/run_cogvideox_i2v.py --tiny --compare
"""

from __future__ import annotations

from common import Example, from_pretrained, load_image, main, tensor_frames, torch_dtype


def add_arguments(parser):
    parser.add_argument("--image", help="first frame (path or URL); required without --tiny")
    parser.add_argument("--frames", type=int, default=49, help="number of frames (4k + 1)")


def load(args):
    from diffusers import CogVideoXImageToVideoPipeline

    pipe = from_pretrained(CogVideoXImageToVideoPipeline, args.model_path, torch_dtype(args))
    pipe = pipe.to(args.device)
    pipe.vae.enable_tiling()
    return pipe


def generate(pipe, args, steps):
    import torch

    frames = pipe(
        image=load_image(args.image, "--image"),
        prompt=args.prompt,
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
    name="cogvideox_i2v",
    pipeline="CogVideoXImageToVideoPipeline",
    default_model="THUDM/CogVideoX-5b-I2V",
    kind="video",
    load=load,
    generate=generate,
    tiny_cases=("cogvideox_i2v",),
    add_arguments=add_arguments,
    defaults={"steps": 50, "height": 480, "width": 720},
)

if __name__ == "__main__":
    main(EXAMPLE)
