"""FLUX.1-dev text-to-image with cache-dit (57 blocks: 19 dual-stream + 38 single-stream; no CFG call).

python examples/run_flux.py --model-path black-forest-labs/FLUX.1-dev --cache DBCache --Fn 8 --Bn 8 --rdt 0.12 \
    --taylorseer --order 1 --compare                                   # GPU + weights
python examples/run_flux.py --tiny --compare                         # tiny random FLUX, CPU, seconds
"""

from __future__ import annotations

from common import Example, call_with, from_pretrained, main


def load(args, dtype):
    from diffusers import FluxPipeline

    return from_pretrained(FluxPipeline, args.model_path, dtype)


def call(args):
    return call_with(args, "prompt", "height", "width", "guidance_scale")


EXAMPLE = Example(
    name="flux",
    pipeline="FluxPipeline",
    default_model="black-forest-labs/FLUX.1-dev",
    load=load,
    call=call,
    tiny_cases=("flux",),
    defaults={"steps": 28, "height": 1024, "width": 1024, "guidance_scale": 3.5},
)

if __name__ == "__main__":
    main(EXAMPLE)
