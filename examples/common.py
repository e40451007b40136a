"""What every example shares: the flags, loading, the uncached/cached runs, the report and the output file.

An example (`run_<model>.py`) only says how to load its pipeline and how to call it; this module does the rest:

    python examples/run_flux.py --model-path black-forest-labs/FLUX.1-dev --cache DBCache --Fn 8 --Bn 8 \
        --rdt 0.12 --taylorseer --order 1 --compare
    python examples/run_flux.py --tiny --compare     # the same script on tiny random components, on the CPU

`--tiny` builds the model from `cache_dit.testing.cases` (no download, seconds on a CPU); its cache defaults
are Fn=1, Bn=1, warmup 2 since the tiny models have 6 blocks and 8 steps. Exit codes: 0 done, 2 bad flags,
missing weights or an unavailable device (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cache_dit
from cache_dit.cache_factory import CacheType, apply_cache_on_pipe
from cache_dit.cache_factory.config import build_config
from cache_dit.metrics import compute_psnr
from cache_dit.testing.cases import CASES

TINY_DEFAULTS = {"Fn": 1, "Bn": 1, "warmup_steps": 2, "steps": 8}


@dataclass
class Example:
    """One example: how to load its pipeline and how to call it.

    Attributes:
        name: file stem of the outputs ("flux" -> flux_DBCache.png).
        pipeline: the diffusers pipeline class name (for messages).
        default_model: hub id used when --model-path is left out.
        kind: "image" (PNG) or "video" (MP4).
        load: load(args) -> pipeline on args.device.
        generate: generate(pipe, args, steps) -> np.ndarray (N, H, W, 3) floats in [0, 1], N images or frames.
        tiny_cases: names in `cache_dit.testing.cases.CASES` --tiny can run (the first is the default).
        add_arguments: extra flags (input images, frame count).
        defaults: the real model's defaults of flags left unset (steps, height, width, frames, ...); --tiny
            runs 8 steps at the tiny case's size.
    """

    name: str
    pipeline: str
    default_model: str
    kind: str
    load: Callable[[argparse.Namespace], Any]
    generate: Callable[[Any, argparse.Namespace, int], np.ndarray]
    tiny_cases: tuple[str, ...]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


class ExampleError(Exception):
    """A problem the user can fix (flags, weights, device): printed as one line, exit code 2."""


def build_parser(example: Example) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=f"{example.pipeline} with cache-dit")
    parser.add_argument("--model-path", default=example.default_model, help="local directory or hub id")
    parser.add_argument("--prompt", default="A cat walks on the grass, realistic")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: per model)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    parser.add_argument("--out-dir", default=".", help="where the PNG/MP4 files go")
    cache = parser.add_argument_group("cache")
    cache.add_argument(
        "--cache", default="DBCache", help="DBCache, FBCache, DBPrune or NONE (aliases as in CacheType.type)"
    )
    cache.add_argument("--Fn", type=int, default=None, help="Fn_compute_blocks (default: the cache type's)")
    cache.add_argument("--Bn", type=int, default=None, help="Bn_compute_blocks (default: the cache type's)")
    cache.add_argument("--rdt", type=float, default=None, help="residual_diff_threshold")
    cache.add_argument("--warmup-steps", type=int, default=None)
    cache.add_argument("--max-cached-steps", type=int, default=None)
    cache.add_argument("--max-continuous-cached-steps", type=int, default=None)
    cache.add_argument("--taylorseer", action="store_true", help="forecast the cached residual (TaylorSeer)")
    cache.add_argument("--order", type=int, default=None, help="TaylorSeer order (n_derivatives)")
    parser.add_argument("--compare", action="store_true", help="also run uncached: print speedup and PSNR")
    parser.add_argument("--tiny", action="store_true", help="tiny random components on the CPU (no weights)")
    if len(example.tiny_cases) > 1:
        parser.add_argument("--tiny-case", choices=example.tiny_cases, default=example.tiny_cases[0])
    if example.add_arguments is not None:
        example.add_arguments(parser)
    return parser


def cache_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The flags as `apply_cache_on_pipe` options; None for --cache NONE."""
    try:
        cache_type = CacheType.type(args.cache)
    except ValueError as error:
        raise ExampleError(f"--cache: {error}") from None
    if cache_type is CacheType.NONE:
        return None
    options: dict[str, Any] = {"cache_type": cache_type}
    tiny = TINY_DEFAULTS if args.tiny else {}
    fixed_blocks = cache_type is CacheType.FBCache  # FBCache is F1B0 by definition
    for flag, option in (("Fn", "Fn_compute_blocks"), ("Bn", "Bn_compute_blocks")):
        value = getattr(args, flag)
        if value is not None or (flag in tiny and not fixed_blocks):
            options[option] = value if value is not None else tiny[flag]
    for flag, option in (
        ("rdt", "residual_diff_threshold"),
        ("warmup_steps", "warmup_steps"),
        ("max_cached_steps", "max_cached_steps"),
        ("max_continuous_cached_steps", "max_continuous_cached_steps"),
    ):
        value = getattr(args, flag)
        if value is None and args.tiny and flag == "warmup_steps":
            value = tiny["warmup_steps"]
        if value is not None:  # options the cache type does not take are rejected by apply_cache_on_pipe
            options[option] = value
    if args.taylorseer:
        options.update(enable_taylorseer=True, enable_encoder_taylorseer=True)
        if args.order is not None:
            options["taylorseer_kwargs"] = {"n_derivatives": args.order}
    elif args.order is not None:
        raise ExampleError("--order needs --taylorseer")
    return options


def _sync(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(run: Callable[[], np.ndarray], device: str) -> tuple[np.ndarray, float]:
    _sync(device)
    start = time.perf_counter()
    out = run()
    _sync(device)
    return out, time.perf_counter() - start


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) floats in [0, 1] -> uint8."""
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def tensor_frames(output: torch.Tensor) -> np.ndarray:
    """A pipeline's `output_type="pt"` result of one prompt -> (N, H, W, 3) floats in [0, 1].

    Images come as (B, 3, H, W), videos as (B, F, 3, H, W); the first video of the batch is kept.
    """
    if output.ndim == 5:
        output = output[0]
    return output.permute(0, 2, 3, 1).float().cpu().numpy()


def save(frames: np.ndarray, path: Path, kind: str, fps: int = 8) -> Path:
    """Write a PNG (first image) or an MP4 (all frames) with OpenCV."""
    import cv2

    pixels = to_uint8(frames)[..., ::-1]  # RGB -> BGR
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "image":
        if not cv2.imwrite(str(path), np.ascontiguousarray(pixels[0])):
            raise ExampleError(f"could not write {path}")
        return path
    height, width = pixels.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise ExampleError(f"could not open {path} for writing (OpenCV has no mp4v encoder here)")
    for frame in pixels:
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return path


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean PSNR (dB) over the images/frames, on 8-bit pixels (inf: identical)."""
    value, _ = compute_psnr(to_uint8(reference), to_uint8(test))
    return value


def load_image(source: str | None, flag: str) -> Any:
    """An input image from a path or URL (diffusers' loader); a clear error when the flag is missing."""
    if not source:
        raise ExampleError(f"{flag} is required (a path or URL) unless --tiny")
    from diffusers.utils import load_image as _load_image

    try:
        return _load_image(source)
    except (OSError, ValueError) as error:
        raise ExampleError(f"{flag} {source!r}: {error}") from None


def torch_dtype(args: argparse.Namespace) -> torch.dtype:
    return getattr(torch, args.dtype)


def from_pretrained(cls: Any, path: str, dtype: torch.dtype, **kwargs: Any) -> Any:
    """`cls.from_pretrained(path, torch_dtype=dtype, **kwargs)`, quiet about the libraries' own deprecations
    (the `torch_dtype` -> `dtype` rename of newer releases, which older ones do not know; hub download
    arguments diffusers still passes): nothing the user of an example can act on."""
    with warnings.catch_warnings():
        for category in (FutureWarning, UserWarning):
            warnings.filterwarnings("ignore", message=".*deprecated.*", category=category)
        return cls.from_pretrained(path, torch_dtype=dtype, **kwargs)


def _check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError as error:
        raise ExampleError(f"--device {device!r}: {error}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExampleError(f"--device {device}: CUDA is not available here (use --device cpu, or --tiny)")


def _check_model_path(path: str) -> None:
    """A local directory, or something shaped like a hub id ("org/name"); else a clear error before loading."""
    if os.path.isdir(os.path.expanduser(path)):
        return
    if re.fullmatch(r"[\w.-]+/[\w.-]+", path) is None:
        raise ExampleError(
            f"--model-path {path!r} is neither a local directory nor a hub id (org/name); download the "
            "weights there first, or run with --tiny"
        )


def _load(example: Example, args: argparse.Namespace) -> Any:
    _check_device(args.device)
    _check_model_path(args.model_path)
    try:
        return example.load(args)
    except (OSError, ValueError) as error:  # what from_pretrained raises for a missing or incomplete model
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExampleError(
            f"cannot load {example.pipeline} weights from {args.model_path!r} ({first_line}); pass "
            "--model-path with a local directory or a hub id you can download, or run with --tiny"
        ) from None


def _tiny(example: Example, args: argparse.Namespace) -> tuple[Any, Callable[[int], np.ndarray]]:
    case = CASES[getattr(args, "tiny_case", example.tiny_cases[0])]
    torch.set_num_threads(1)  # tiny models are dominated by per-op overhead: one thread is fastest
    pipe = case.build()
    size = args.height or args.width or case.size

    def generate(steps: int) -> np.ndarray:
        return tensor_frames(case.run(pipe, steps=steps, size=size, seed=args.seed))

    args.device = "cpu"
    return pipe, generate


def run(example: Example, argv: list[str] | None = None) -> int:
    """Parse the flags, run uncached (--compare) and cached, print the report, write the outputs."""
    args = build_parser(example).parse_args(argv)
    try:
        return _run(example, args)
    except ExampleError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        return 2


def _run(example: Example, args: argparse.Namespace) -> int:
    options = cache_options(args)
    if options is not None:
        try:  # unknown or ill-typed options fail here, before any weights are loaded
            build_config(**options)
        except (ValueError, TypeError) as error:
            raise ExampleError(str(error)) from None
    if args.tiny:
        args.steps = args.steps or TINY_DEFAULTS["steps"]
        pipe, generate = _tiny(example, args)
    else:
        for key, value in example.defaults.items():  # per-model defaults of the real model
            if getattr(args, key, None) is None:
                setattr(args, key, value)
        pipe = _load(example, args)

        def generate(steps: int) -> np.ndarray:
            return example.generate(pipe, args, steps)

    out_dir = Path(args.out_dir)
    suffix = ".png" if example.kind == "image" else ".mp4"
    source = "tiny random weights" if args.tiny else args.model_path
    print(f"{example.pipeline} ({source}), {args.steps} steps, device {args.device}")

    reference = None
    if args.compare:
        generate(2)  # warm-up (kernels, allocator) so that the first timed run is not penalized
        reference, base_time = _timed(lambda: generate(args.steps), args.device)
        path = save(reference, out_dir / f"{example.name}_uncached{suffix}", example.kind)
        print(f"uncached: {base_time:.2f}s -> {path}")
    name = "uncached"
    if options is not None:
        try:
            apply_cache_on_pipe(pipe, **options)
        except (ValueError, TypeError) as error:
            raise ExampleError(str(error)) from None
        name = options["cache_type"].value
    output, cached_time = _timed(lambda: generate(args.steps), args.device)
    path = save(output, out_dir / f"{example.name}_{name}{suffix}", example.kind)
    print(cache_dit.summary(pipe))
    print(f"{name}: {cached_time:.2f}s -> {path}")
    if reference is not None:
        print(
            f"speedup: {base_time / cached_time:.2f}x ({base_time:.2f}s -> {cached_time:.2f}s), "
            f"PSNR vs uncached: {psnr(reference, output):.2f} dB"
        )
    return 0


def main(example: Example) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(run(example))
