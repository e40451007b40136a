"""FLUX.1-Fill-dev inpainting with cache-dit: the masked region of --image is repainted from the prompt.

python examples/run_flux_fill.py --model-path black-forest-labs/FLUX.1-Fill-dev --image cup.png --mask mask.png \
    --prompt "a white paper cup" --compare
python examples/run_flux_fill.py --tiny --compare
"""

from __future__ import annotations

from common import Example, from_pretrained, load_image, main, tensor_frames, torch_dtype


def add_arguments(parser):
    parser.add_argument("--image", help="image to inpaint (path or URL); required without --tiny")
    parser.add_argument("--mask", help="mask, white where to repaint (path or URL); required without --tiny")


def load(args):
    from diffusers import FluxFillPipeline

    return from_pretrained(FluxFillPipeline, args.model_path, torch_dtype(args)).to(args.device)


def generate(pipe, args, steps):
    import torch

    images = pipe(
        args.prompt,
        image=load_image(args.image, "--image"),
        mask_image=load_image(args.mask, "--mask"),
        height=args.height,
        width=args.width,
        num_inference_steps=steps,
        guidance_scale=30.0,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="pt",
    ).images
    return tensor_frames(images)


EXAMPLE = Example(
    name="flux_fill",
    pipeline="FluxFillPipeline",
    default_model="black-forest-labs/FLUX.1-Fill-dev",
    kind="image",
    load=load,
    generate=generate,
    tiny_cases=("flux_fill",),
    add_arguments=add_arguments,
    defaults={"steps": 50, "height": 1024, "width": 1024},
)

if __name__ == "__main__":
    main(EXAMPLE)
