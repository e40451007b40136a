"""FLUX.1-dev text-to-image with cache-dit (57 blocks: 19 dual-stream + 38 single-stream; no CFG call).

python examples/run_flux.py --model-path black-forest-labs/FLUX.1-dev --cache DBCache --Fn 8 --Bn 8 --rdt 0.12 \
    --taylorseer --order 1 --compare
python examples/run_flux.py --tiny --compare
"""

from __future__ import annotations

from common import Example, from_pretrained, main, tensor_frames, torch_dtype


def load(args):
    from diffusers import FluxPipeline

    return from_pretrained(FluxPipeline, args.model_path, torch_dtype(args)).to(args.device)


def generate(pipe, args, steps):
    import torch

    images = pipe(
        args.prompt,
        height=args.height,
        width=args.width,
        num_inference_steps=steps,
        guidance_scale=3.5,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="pt",
    ).images
    return tensor_frames(images)


EXAMPLE = Example(
    name="flux",
    pipeline="FluxPipeline",
    default_model="black-forest-labs/FLUX.1-dev",
    kind="image",
    load=load,
    generate=generate,
    tiny_cases=("flux",),
    defaults={"steps": 28, "height": 1024, "width": 1024},
)

if __name__ == "__main__":
    main(EXAMPLE)
