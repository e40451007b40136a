"""What every example shares: `cache-dit-generate`'s flags and run (`cache_dit.cli_common`, `cache_dit.generate`).

An example (`run_<model>.py`) only says how to load its pipeline and what to call it with; the flags, the tiny
mode, the warm-up, the timing, `--compare`, `--calibrate`, the report and the output files are the CLI's:

    python examples/run_flux.py --model-path black-forest-labs/FLUX.1-dev --cache DBCache --Fn 8 --Bn 0 \
        --rdt 0.12 --taylorseer --order 1 --compare          # GPU + weights
    python examples/run_flux.py --tiny --compare               # the same script on tiny random components

Outputs go to outputs/NAME.png (or .mp4) unless --out says otherwise. Exit codes: 0 done, 2 bad flags, missing
weights or an unavailable device (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cache_dit.cli_common import UsageError, build_parser
from cache_dit.generate import (
    REAL_MODEL_FLAGS,
    build_source_for_pipeline,
    guarded,
    load_pretrained,
    run,
    tiny_case_source,
)

DEFAULT_PROMPT = "A cat walks on the grass, realistic"


@dataclass
class Example:
    """One example: how to load its pipeline and what to call it with.

    Attributes:
        name: the output file's stem (outputs/flux.png, and outputs/flux_uncached.png with --compare).
        pipeline: the diffusers pipeline class name (for messages).
        default_model: hub id used when --model-path is left out.
        load: load(args, dtype) -> the pipeline (the run moves it to --device).
        call: call(args) -> the pipeline call's keyword arguments besides the steps, the generator and the output
            type (prompt, size, frames, input images, ...).
        tiny_cases: names in `cache_dit.testing.cases.CASES` that --tiny can run (the first is the default).
        add_arguments: extra flags (input images); `real_only` names those --tiny rejects.
        defaults: the real model's values of flags left out (steps, height, width, num_frames, guidance_scale).
    """

    name: str
    pipeline: str
    default_model: str
    load: Callable[[argparse.Namespace, Any], Any]
    call: Callable[[argparse.Namespace], dict[str, Any]]
    tiny_cases: tuple[str, ...]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    real_only: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)


def build_example_parser(example: Example, prog: str | None = None) -> argparse.ArgumentParser:
    defaults = {"prompt": DEFAULT_PROMPT, **example.defaults}
    parser = build_parser(
        prog or f"{example.name} example",
        f"{example.pipeline} with cache-dit (the flags of cache-dit-generate)",
        default_model=example.default_model,
        tiny_cases=example.tiny_cases,
        defaults=defaults,
    )
    if example.add_arguments is not None:
        example.add_arguments(parser.add_argument_group(f"{example.pipeline} inputs"))
    return parser


def load_image(source: str | None, flag: str) -> Any:
    """An input image from a path or URL (diffusers' loader); a clear error when the flag is missing."""
    if not source:
        raise UsageError(f"{flag} is required (a path or URL) unless --tiny")
    from diffusers.utils import load_image as _load_image

    try:
        return _load_image(source)
    except (OSError, ValueError) as error:
        raise UsageError(f"{flag} {source!r}: {error}") from None


def from_pretrained(cls: Any, path: str, dtype: Any, **kwargs: Any) -> Any:
    """`cls.from_pretrained(path, torch_dtype=dtype, **kwargs)`: a local folder or a hub id (the Hugging Face
    cache, `HF_HUB_OFFLINE` honoured), every failure as one line."""
    return load_pretrained(cls, path, torch_dtype=dtype, **kwargs)


def call_with(args: argparse.Namespace, *keys: str, **extra: Any) -> dict[str, Any]:
    """The pipeline call's keywords: the flags `keys` that are set (prompt, height, ...) and `extra`."""
    return {**{key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}, **extra}


def run_example(example: Example, argv: list[str] | None = None) -> int:
    """Parse the flags and run the example as `cache-dit-generate` runs a pipeline; return the exit status."""
    prog = Path(sys.argv[0]).name if argv is None else f"run_{example.name}.py"
    args = build_example_parser(example, prog).parse_args(argv)
    real_only = tuple(f"--{dest.replace('_', '-')}" for dest in example.real_only)
    defaults = {"prompt": DEFAULT_PROMPT, **example.defaults}

    def start() -> int:
        if args.tiny is not None:
            if args.tiny not in example.tiny_cases:
                raise UsageError(
                    f"--tiny {args.tiny!r}: this example's tiny cases are {', '.join(example.tiny_cases)}"
                )

            def make_tiny(device: Any, dtype: Any) -> Any:
                return tiny_case_source(args.tiny, args, device, dtype, name=example.name)

            return run(
                args, make_tiny, name=example.name, tiny=True, real_model_flags=REAL_MODEL_FLAGS + real_only
            )

        def make_real(device: Any, dtype: Any) -> Any:
            kwargs = example.call(args)  # input images are read (and checked) before the weights
            pipe = example.load(args, dtype).to(device)
            return build_source_for_pipeline(
                pipe, example.name, args.model_path, lambda: dict(kwargs), device
            )

        return run(args, make_real, name=example.name, tiny=False, defaults=defaults, prog=prog)

    return guarded(prog, start)


def main(example: Example) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(run_example(example))
