"""`cache-dit-generate`: run a diffusers pipeline with a cache from the command line.

Examples:
    cache-dit-generate --model-path black-forest-labs/FLUX.1-dev --prompt "a red fox" --steps 28 \\
        --cache DBCache --Fn 8 --Bn 0 --rdt 0.12 --taylorseer --order 1 --compare --out fox.png
    cache-dit-generate --tiny flux --steps 8 --compare --out tiny.png     # tiny random pipeline, no weights
    cache-dit-generate --tiny list                                        # the tiny families
    cache-dit-generate --tiny flux --steps 12 --calibrate 2 --calibration-file cal.json --compare
                                              # budget mode: calibrate (or reuse) a schedule for 2x, then run it

Loads with `DiffusionPipeline.from_pretrained` (a local folder or a hub id), applies the cache, shows the
pipeline's progress bar, prints the cache summary and the time, and writes the image (PNG, JPEG, ...) or the
video (MP4 or GIF). `--compare` also runs the pipeline uncached (same seed) and prints the speedup, PSNR and
SSIM. Bad flags and unsupported pipelines exit with 2 and one line on stderr. Torch is imported only after the
flags are parsed, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

PROG = "cache-dit-generate"
CACHE_CHOICES = ("DBCache", "FBCache", "DBPrune", "NONE")
DTYPES = ("float32", "float16", "bfloat16")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".mp4", ".gif")


class UsageError(Exception):
    """Bad flags or an unsupported pipeline: exit 2 with one line."""


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _speedup(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a speedup > 1, got {text!r}") from None
    if not 1 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite speedup > 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (exposed for documentation and tests)."""
    parser = _OneLineParser(
        prog=PROG,
        description="Run a diffusers pipeline with a cache-dit cache; print the cache summary and the time; "
        "write the image or video. --compare also runs it uncached and prints speedup, PSNR and SSIM.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model-path", help="local pipeline folder or hub id for DiffusionPipeline.from_pretrained"
    )
    source.add_argument(
        "--tiny",
        metavar="FAMILY",
        help="a tiny random pipeline from cache_dit.testing.cases (e.g. flux, wan; 'list' prints them): "
        "no weights, for trying the flags and for CI",
    )
    gen = parser.add_argument_group("generation")
    gen.add_argument("--prompt", default=None, help="text prompt (required with --model-path)")
    gen.add_argument("--negative-prompt", default=None, help="negative prompt (real models)")
    gen.add_argument("--steps", type=_positive_int, default=28, help="denoising steps")
    gen.add_argument("--height", type=_positive_int, default=None, help="height (default: the pipeline's)")
    gen.add_argument("--width", type=_positive_int, default=None, help="width (default: the pipeline's)")
    gen.add_argument("--num-frames", type=_positive_int, default=None, help="frames (video pipelines)")
    gen.add_argument("--guidance-scale", type=_non_negative_float, default=None, help="guidance scale")
    gen.add_argument("--seed", type=int, default=0, help="generator seed")
    gen.add_argument("--device", default=None, help="cuda, cpu, mps, ... (default: cuda if available)")
    gen.add_argument("--dtype", choices=DTYPES, default=None, help="default: bfloat16 on GPU, float32 on CPU")
    gen.add_argument("--out", default=None, help="output file: .png/.jpg for images, .mp4/.gif for videos")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    cache = parser.add_argument_group("cache (options left out take the cache type's defaults)")
    cache.add_argument(
        "--cache", default=None, help=f"one of {', '.join(CACHE_CHOICES)} (or an alias); default DBCache"
    )
    cache.add_argument("--Fn", type=int, default=None, help="Fn_compute_blocks")
    cache.add_argument("--Bn", type=int, default=None, help="Bn_compute_blocks")
    cache.add_argument("--rdt", type=float, default=None, help="residual_diff_threshold")
    cache.add_argument("--warmup-steps", type=int, default=None, help="warmup_steps")
    cache.add_argument("--max-cached-steps", type=int, default=None, help="max_cached_steps (-1: no cap)")
    cache.add_argument("--taylorseer", action="store_true", help="enable_taylorseer (DBCache/FBCache)")
    cache.add_argument("--order", type=int, default=None, help="TaylorSeer n_derivatives (with --taylorseer)")
    budget = parser.add_argument_group("budget mode (instead of the cache flags)")
    budget.add_argument(
        "--calibrate",
        type=_speedup,
        default=None,
        metavar="SPEEDUP",
        help="cache_dit.calibrate on this run's inputs for this block-count speedup (about 9 pipeline runs), "
        "then run with the options it returns",
    )
    budget.add_argument(
        "--calibration-file",
        default=None,
        metavar="JSON",
        help="options stored per model and step count: with --calibrate, reused when the file holds them for "
        "this model and --steps (else calibrated and stored there); alone, read from it",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--compile", action="store_true", help="torch.compile the transformer (after the cache)")
    run.add_argument("--compare", action="store_true", help="also run uncached: speedup, PSNR, SSIM")
    run.add_argument(
        "--repeats",
        type=_positive_int,
        default=1,
        help="timed runs per configuration (interleaved with --compare); the median is reported",
    )
    return parser


def cache_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `apply_cache_on_pipe` keywords the flags ask for (flags left out are left out)."""
    options: dict[str, Any] = {"cache_type": args.cache or "DBCache"}
    for flag, key in (
        ("Fn", "Fn_compute_blocks"),
        ("Bn", "Bn_compute_blocks"),
        ("rdt", "residual_diff_threshold"),
        ("warmup_steps", "warmup_steps"),
        ("max_cached_steps", "max_cached_steps"),
    ):
        if getattr(args, flag) is not None:
            options[key] = getattr(args, flag)
    if args.taylorseer:
        options["enable_taylorseer"] = True
        options["enable_encoder_taylorseer"] = True
    if args.order is not None:
        if not args.taylorseer:
            raise UsageError("--order needs --taylorseer")
        options["taylorseer_kwargs"] = {"n_derivatives": args.order}
    return options


# ----------------------------------------------------------------------------------------------------------
# Loading and running
# ----------------------------------------------------------------------------------------------------------


def _device_and_dtype(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise UsageError(f"--device {args.device!r}: {error}") from None
    name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    return device, getattr(torch, name)


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(pipeline, run(pipe, seed) -> output array, call_kwargs(seed) -> the pipeline call's keyword arguments).
    Images: (B, H, W, 3); videos: (B, F, H, W, 3), in [0, 1]."""
    import numpy as np
    import torch

    if args.tiny is not None:
        from cache_dit.testing.cases import CASES

        if args.tiny not in CASES:
            raise UsageError(f"--tiny {args.tiny!r} is not a tiny family; available: {', '.join(CASES)}")
        case = CASES[args.tiny]
        device, dtype = _device_and_dtype(args)
        pipe = case.build()  # built as float32 on the CPU
        if device.type != "cpu" or dtype != torch.float32:
            pipe = pipe.to(device=device, dtype=dtype)
        size = {"size": args.height} if args.height else {}

        def run_tiny(pipe: Any, seed: int) -> np.ndarray:
            out = case.run(pipe, steps=args.steps, seed=seed, **size).float().cpu()
            # images (B, 3, H, W); videos (B, F, 3, H, W) -> channels last
            return out.movedim(-3, -1).clamp(0, 1).numpy()

        def tiny_kwargs(seed: int) -> dict[str, Any]:
            return case.call_kwargs(steps=args.steps, seed=seed, **size)

        return pipe, run_tiny, tiny_kwargs

    from diffusers import DiffusionPipeline

    device, dtype = _device_and_dtype(args)
    if os.path.sep in args.model_path and not Path(args.model_path).exists():
        raise UsageError(f"--model-path {args.model_path}: no such folder")
    try:
        with warnings.catch_warnings():  # newer diffusers call it `dtype`; `torch_dtype` works in all
            warnings.simplefilter("ignore", FutureWarning)
            pipe = DiffusionPipeline.from_pretrained(args.model_path, torch_dtype=dtype)
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split())[:400]
        raise UsageError(f"cannot load --model-path {args.model_path}: {message}") from None
    pipe = pipe.to(device)

    def real_kwargs(seed: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt": args.prompt,
            "num_inference_steps": args.steps,
            "output_type": "np",
        }
        for key in ("negative_prompt", "height", "width", "num_frames", "guidance_scale"):
            if getattr(args, key) is not None:
                kwargs[key] = getattr(args, key)
        kwargs["generator"] = torch.Generator(device="cpu" if device.type == "mps" else device).manual_seed(
            seed
        )
        return kwargs

    def run_real(pipe: Any, seed: int) -> np.ndarray:
        result = pipe(**real_kwargs(seed))
        out = result.frames if hasattr(result, "frames") else result.images
        return np.asarray(out, dtype=np.float32)

    return pipe, run_real, real_kwargs


def _save(array: Any, path: Path) -> None:
    """Write images (B, H, W, 3) (the first one) or videos (B, F, H, W, 3) (the first one) in [0, 1]."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.clip(array[0], 0, 1) * 255).round().astype(np.uint8)
    if data.ndim == 3:
        Image.fromarray(data).save(path)
        return
    if path.suffix.lower() == ".gif":
        frames = [Image.fromarray(f) for f in data]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=125, loop=0)
        return
    try:
        import imageio_ffmpeg  # noqa: F401
        from diffusers.utils import export_to_video

        export_to_video(list(data.astype(np.float32) / 255), str(path), fps=8)
    except ImportError:  # no ffmpeg backend for imageio: OpenCV's writer (a dependency of the metrics)
        import cv2

        height, width = data.shape[1:3]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (width, height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {path}") from None
        for frame in data:
            writer.write(frame[..., ::-1])  # RGB -> BGR
        writer.release()


def _quality(reference: Any, output: Any) -> tuple[float, float]:
    """PSNR and SSIM (cache_dit.metrics) of the output against the uncached reference, frame by frame."""
    import numpy as np

    from cache_dit.metrics import measure_images

    def frames(a: Any) -> Any:
        u8 = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
        return u8.reshape(-1, *u8.shape[-3:])  # (N, H, W, 3)

    results = measure_images(frames(reference), frames(output), ["psnr", "ssim"])
    return tuple(r.value for r in results.values())  # type: ignore[return-value]


def _timed(run: Any, pipe: Any, seed: int) -> tuple[Any, float]:
    import torch

    start = time.perf_counter()
    out = run(pipe, seed)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def _given(args: argparse.Namespace, *flags: str) -> list[str]:
    """The flags among `flags` the command line set (a flag's value is left None when it is not given)."""
    return [flag for flag in flags if getattr(args, flag.lstrip("-").replace("-", "_")) is not None]


def check_flags(args: argparse.Namespace) -> None:
    """Flags that do not apply are an error, never silently ignored."""
    if args.tiny is not None:
        given = _given(args, "--prompt", "--negative-prompt", "--width", "--num-frames", "--guidance-scale")
        if given:
            raise UsageError(
                f"{', '.join(given)} apply to --model-path only: --tiny runs its case's fixed call on "
                "random embeddings (--height sets its size)"
            )
    elif args.prompt is None:
        raise UsageError("--model-path needs --prompt")
    if args.calibrate is not None or args.calibration_file is not None:
        given = _given(
            args, "--cache", "--Fn", "--Bn", "--rdt", "--warmup-steps", "--max-cached-steps", "--order"
        )
        given += ["--taylorseer"] if args.taylorseer else []
        if given:
            raise UsageError(
                f"{', '.join(given)}: with --calibrate / --calibration-file the cache options come from the "
                "calibration; leave the cache flags out"
            )
    if args.calibrate is not None and args.calibrate > args.steps:  # one computed step of --steps at best
        raise UsageError(
            f"--calibrate {args.calibrate}: out of reach, --steps {args.steps} give at most {args.steps}x"
        )
    if args.out is not None:
        suffix = Path(args.out).suffix.lower()
        if suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
            raise UsageError(
                f"--out {args.out}: unknown file type; use one of {', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)}"
            )


def _calibrated_options(args: argparse.Namespace, pipe: Any, call_kwargs: Any) -> dict[str, Any]:
    """--calibrate / --calibration-file: the stored options for this model and --steps, or a new calibration."""
    import cache_dit

    path = Path(args.calibration_file) if args.calibration_file is not None else None
    if path is not None and path.exists():
        try:
            options = cache_dit.load_calibration(path, pipe, args.steps)
        except ValueError as error:
            if args.calibrate is None:
                raise UsageError(f"--calibration-file: {error}") from None
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"--calibration-file {path}: cannot read it: {error}") from None
        else:
            print(f"{PROG}: calibrated options for {args.steps} steps read from {path}")
            return options
    elif args.calibrate is None:
        raise UsageError(f"--calibration-file {path}: no such file (add --calibrate SPEEDUP to make it)")
    try:
        return dict(
            cache_dit.calibrate(
                pipe,
                call_kwargs(args.seed),
                target_speedup=args.calibrate,
                save_to=path,
                verbose=not args.quiet,
            )
        )
    except (TypeError, ValueError) as error:
        raise UsageError(f"--calibrate {args.calibrate}: {error}") from None


def _shown(resolved: dict[str, Any], key: str) -> bool:
    """Options that apply: a fixed schedule has no threshold or warmup; the forecast type needs TaylorSeer."""
    if key in ("residual_diff_threshold", "warmup_steps"):
        return resolved.get("compute_steps") is None
    if key == "taylorseer_cache_type":
        return bool(resolved.get("enable_taylorseer"))
    return True


def generate(args: argparse.Namespace) -> int:
    check_flags(args)
    options = cache_options(args)
    import torch

    import cache_dit
    from cache_dit.cache_factory import apply_cache_on_pipe, build_config
    from cache_dit.cache_factory.adapters import find_adapter

    try:  # the flags alone, before minutes of loading
        build_config(**options)
    except (TypeError, ValueError) as error:
        raise UsageError(f"cache flags: {error}") from None
    pipe, run, call_kwargs = _load(args)
    pipe.set_progress_bar_config(disable=args.quiet)
    source = f"tiny {args.tiny} (random weights)" if args.tiny else args.model_path
    transformer = getattr(pipe, "transformer", None)
    if not isinstance(transformer, torch.nn.Module):
        raise UsageError(
            f"unsupported pipeline {type(pipe).__name__}: it has no `transformer` (a DiT) to cache"
        )
    try:
        find_adapter(transformer)
    except ValueError as error:
        raise UsageError(f"unsupported pipeline {type(pipe).__name__}: {error}") from None
    if args.calibrate is not None or args.calibration_file is not None:
        options = _calibrated_options(args, pipe, call_kwargs)
    try:  # the checks that need the model (block counts); a failed apply leaves the pipeline as it was
        apply_cache_on_pipe(pipe, **options)
    except (TypeError, ValueError) as error:
        raise UsageError(f"cache flags: {error}") from None
    cache_dit.disable_cache(pipe)
    if args.compile:
        pipe.transformer.compile()

    cached_times: list[float] = []
    uncached_times: list[float] = []
    reference = output = None
    for _ in range(args.repeats):
        if args.compare:
            cache_dit.disable_cache(pipe)
            reference, elapsed = _timed(run, pipe, args.seed)
            uncached_times.append(elapsed)
        apply_cache_on_pipe(pipe, **options)
        output, elapsed = _timed(run, pipe, args.seed)
        cached_times.append(elapsed)
    stats = cache_dit.summary(pipe)
    cached_time = statistics.median(cached_times)

    video = output.ndim == 5
    out = Path(args.out or f"cache-dit-generate.{'mp4' if video else 'png'}")
    if video and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"--out {out}: the pipeline made a video; use .mp4 or .gif")
    if not video and out.suffix.lower() in VIDEO_SUFFIXES:
        raise UsageError(f"--out {out}: the pipeline made an image; use .png or .jpg")
    _save(output, out)

    from cache_dit.cache_factory.runner import get_runner

    runner = get_runner(pipe.transformer)
    resolved = dict(runner.config.options) if runner is not None else {"cache_type": "NONE"}
    shown = ", ".join(
        f"{key}={resolved[key]}"
        for key in (
            "cache_type",
            "Fn_compute_blocks",
            "Bn_compute_blocks",
            "residual_diff_threshold",
            "warmup_steps",
            "compute_steps",
            "taylorseer_cache_type",
        )
        if resolved.get(key) is not None and _shown(resolved, key)
    )
    print(f"{PROG}: {source}, {type(pipe).__name__}, {args.steps} steps; {shown}")
    print(stats)
    runs = f"median of {args.repeats}" if args.repeats > 1 else "one run"
    print(f"time: {cached_time:.2f} s {'cached' if runner is not None else 'without a cache'} ({runs})")
    if args.compare:
        uncached_time = statistics.median(uncached_times)
        ref_path = out.with_name(f"{out.stem}_uncached{out.suffix}")
        _save(reference, ref_path)
        psnr, ssim = _quality(reference, output)
        print(
            f"uncached: {uncached_time:.2f} s; speedup {uncached_time / cached_time:.2f}x; "
            f"PSNR {psnr:.2f} dB; SSIM {ssim:.4f} (cached vs uncached, same seed) -> {ref_path}"
        )
        if args.repeats == 1:
            print("note: one timed run each, the uncached one first; use --repeats 3 for steadier timings")
    print(f"wrote {out}")
    return 0


def _one_line_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
):
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` (default `sys.argv[1:]`); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed on one line
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.tiny == "list":
        from cache_dit.testing.cases import CASES

        print("\n".join(CASES))
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("once")  # the same warning from every repeat is printed once
        warnings.showwarning = _one_line_warning
        try:
            return generate(args)
        except UsageError as error:
            print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
