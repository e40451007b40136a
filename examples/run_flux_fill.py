"""FLUX.1-Fill-dev inpainting with cache-dit: the masked region of --image is repainted from the prompt.

python examples/run_flux_fill.py --model-path black-forest-labs/FLUX.1-Fill-dev --image cup.png --mask mask.png \
    --prompt "a white paper cup" --compare                             # GPU + weights
python examples/run_flux_fill.py --tiny --compare
"""

from __future__ import annotations

from common import Example, call_with, from_pretrained, load_image, main


def add_arguments(group):
    group.add_argument("--image", help="image to inpaint (path or URL); required without --tiny")
    group.add_argument("--mask", help="mask, white where to repaint (path or URL); required without --tiny")


def load(args, dtype):
    from diffusers import FluxFillPipeline

    return from_pretrained(FluxFillPipeline, args.model_path, dtype)


def call(args):
    return call_with(
        args,
        "prompt",
        "height",
        "width",
        "guidance_scale",
        image=load_image(args.image, "--image"),
        mask_image=load_image(args.mask, "--mask"),
    )


EXAMPLE = Example(
    name="flux_fill",
    pipeline="FluxFillPipeline",
    default_model="black-forest-labs/FLUX.1-Fill-dev",
    load=load,
    call=call,
    tiny_cases=("flux_fill",),
    add_arguments=add_arguments,
    real_only=("image", "mask"),
    defaults={"steps": 50, "height": 1024, "width": 1024, "guidance_scale": 30.0},
)

if __name__ == "__main__":
    main(EXAMPLE)
