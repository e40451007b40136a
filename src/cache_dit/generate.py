"""`cache-dit-generate`: run a diffusers pipeline with a cache from the command line.

Examples:
    cache-dit-generate --model-path black-forest-labs/FLUX.1-dev --prompt "a red fox" --steps 28 \\
        --cache DBCache --Fn 8 --Bn 0 --rdt 0.12 --taylorseer --order 1 --compare   # hub id: GPU + weights
    cache-dit-generate --model-path ./my-flux --prompt "a red fox" --compare     # a local pipeline folder
    cache-dit-generate --tiny flux --compare                                      # tiny random pipeline, CPU
    cache-dit-generate --tiny list                                                # every tiny name
    cache-dit-generate --tiny flux --steps 12 --calibrate 2 --calibration-file cal.json --compare

`--model-path` is an existing local folder, or else a hub id loaded by `DiffusionPipeline.from_pretrained` (which
uses the Hugging Face cache and honours `HF_HUB_OFFLINE`). The cache is applied, the run is timed after a short
warm-up, the cache summary and the time are printed and the image (PNG, JPEG, WebP) or video (MP4, GIF) is written
(default: `outputs/NAME.png` / `.mp4`). `--compare` also runs the pipeline uncached with the same seed,
interleaved with the cached runs, and prints the wall-clock and the block-count speedups, PSNR and SSIM (on the
8-bit frames before the file is encoded). Bad flags, paths, devices and unsupported pipelines exit with 2 and one
line on stderr. The flags are shared with the examples (`cache_dit.cli_common`); torch is imported only after
they are parsed, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import os
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cli_common import (
    OUTPUT_DIR,
    TINY_DEFAULTS,
    UsageError,
    build_parser,
    cache_options,
    check_cache_flags,
    given,
)

PROG = "cache-dit-generate"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".mp4", ".gif")
ARRAY_SUFFIXES = (".npy",)  # a bare transformer's output (--tiny with a transformer family)
WARMUP_STEPS = 2  # steps of the untimed warm-up run (kernels, allocator) before any timing
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# flags of a real pipeline call, meaningless for --tiny (it runs its case's fixed call on random embeddings)
REAL_MODEL_FLAGS = ("--prompt", "--negative-prompt", "--width", "--num-frames", "--guidance-scale")

__all__ = [
    "REAL_MODEL_FLAGS",
    "Source",
    "build_source_for_pipeline",
    "guarded",
    "load_pretrained",
    "main",
    "run",
    "tiny_case_source",
]


@dataclass
class Source:
    """What one command line runs.

    Attributes:
        name: the output file's stem (outputs/NAME.png).
        label: how the report names it.
        pipe: the pipeline (or, for a transformer family, the bare transformer) the cache is applied to.
        call: call(seed, steps) -> the output as a float array in [0, 1], channels last: images (B, H, W, 3),
            videos (B, F, H, W, 3); a bare transformer's output as it is.
        call_kwargs: call_kwargs(seed, steps) -> the pipeline call's keyword arguments (for --calibrate); None
            when there is no pipeline.
        kind: "image", "video" or "array".
    """

    name: str
    label: str
    pipe: Any
    call: Callable[[int, int], Any]
    call_kwargs: Callable[[int, int], dict[str, Any]] | None
    kind: str

    @property
    def is_pipeline(self) -> bool:
        return self.kind != "array"


# ----------------------------------------------------------------------------------------------------------
# Device, paths, loading
# ----------------------------------------------------------------------------------------------------------


def device_and_dtype(args: argparse.Namespace) -> tuple[Any, Any]:
    """--device / --dtype, checked before anything is loaded: an unknown or absent device, or float16 on the
    CPU, is a usage error."""
    import torch

    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here (no GPU or driver); use --device cpu")
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as error:  # no driver, or a torch built without that backend
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(
            f"--device {name}: not available on this machine ({first}); use --device cpu"
        ) from None
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if device.type == "cpu" and dtype == "float16":
        raise UsageError(
            "--dtype float16 on the CPU: many CPU kernels lack float16 or run it slowly; use --dtype float32 "
            "(or bfloat16) on the CPU, float16 on a GPU"
        )
    return device, getattr(torch, dtype)


def local_folder(path: str) -> Path | None:
    """The local folder `path` names, None when it is a hub id; a usage error for a path that does not exist.

    An existing folder is a path; anything else shaped like "org/name" is a hub id; other strings (absolute,
    ./ or ~ paths, more than one slash) must exist."""
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        return candidate
    if candidate.exists():
        raise UsageError(f"--model-path {path}: a file, not a pipeline folder")
    if HUB_ID.fullmatch(path):
        return None
    raise UsageError(f"--model-path {path}: no such folder (and not a hub id of the form org/name)")


def load_pretrained(cls: Any, path: str, *, progress: bool | None = None, **kwargs: Any) -> Any:
    """`cls.from_pretrained(path, **kwargs)` for a local folder or a hub id, with every failure as one line.

    A hub id goes to diffusers as it is: it resolves it in the Hugging Face cache and downloads only when
    allowed (`HF_HUB_OFFLINE=1` never does). The libraries' log lines and warnings are held back; their loading
    bar shows on a terminal only (`progress`: None = when stderr is a terminal)."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import logging as hub_logging

    folder = local_folder(path)
    levels = diffusers_logging.get_verbosity(), hub_logging.get_verbosity()
    bars_were_on = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    if not (sys.stderr.isatty() if progress is None else progress):
        diffusers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():  # deprecations and init notes the user cannot act on
            warnings.simplefilter("ignore")
            return cls.from_pretrained(str(folder) if folder is not None else path, **kwargs)
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split())
        if folder is None and not _in_hub_cache(path):
            if _hub_offline():
                raise UsageError(
                    f"--model-path {path}: not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids "
                    f"downloading it (unset HF_HUB_OFFLINE, or fetch it first: hf download {path})"
                ) from None
            raise UsageError(
                f"--model-path {path}: not in the local Hugging Face cache and not downloadable from the Hub "
                f"({message[:200]}); fetch it first (hf download {path}) or pass a local folder"
            ) from None
        raise UsageError(f"cannot load --model-path {path}: {message[:300]}") from None
    finally:
        diffusers_logging.set_verbosity(levels[0])
        hub_logging.set_verbosity(levels[1])
        if bars_were_on:
            diffusers_logging.enable_progress_bar()


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of `repo_id` (looked up locally, nothing downloaded)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, local_files_only=True)
    except (OSError, ValueError):  # huggingface_hub's LocalEntryNotFoundError is an OSError
        return False
    return True


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency of diffusers
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _is_video_pipeline(pipe: Any) -> bool:
    return "num_frames" in inspect.signature(pipe.__call__).parameters


def _frames(result: Any) -> Any:
    """A pipeline result (`output_type="pt"` or `"np"`) -> float array in [0, 1], channels last."""
    import numpy as np
    import torch

    out = result.frames if hasattr(result, "frames") else result.images
    if isinstance(out, torch.Tensor):  # (B, 3, H, W) or (B, F, 3, H, W)
        return out.float().cpu().movedim(-3, -1).clamp(0, 1).numpy()
    return np.clip(np.asarray(out, dtype=np.float32), 0, 1)


def _to(value: Any, device: Any, dtype: Any) -> Any:
    """Floating tensors (in lists too) onto the pipeline's device and dtype; everything else as it is."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
    if isinstance(value, list):
        return [_to(v, device, dtype) for v in value]
    return value


def build_source_for_pipeline(
    pipe: Any, name: str, label: str, kwargs: Callable[[], dict[str, Any]], device: Any
) -> Source:
    """A Source for a loaded pipeline called with `kwargs()` plus steps, seed and output type."""
    import torch

    def call_kwargs(seed: int, steps: int) -> dict[str, Any]:
        generator_device = "cpu" if device.type in ("mps", "cpu") else device
        return {
            **kwargs(),
            "num_inference_steps": steps,
            "generator": torch.Generator(device=generator_device).manual_seed(seed),
            "output_type": "np",
        }

    def call(seed: int, steps: int) -> Any:
        return _frames(pipe(**call_kwargs(seed, steps)))

    kind = "video" if _is_video_pipeline(pipe) else "image"
    return Source(name, label, pipe, call, call_kwargs, kind)


def _model_source(args: argparse.Namespace, device: Any, dtype: Any) -> Source:
    from diffusers import DiffusionPipeline

    pipe = load_pretrained(DiffusionPipeline, args.model_path, torch_dtype=dtype).to(device)
    check_supported(pipe)
    accepted = inspect.signature(pipe.__call__).parameters
    values = {
        key: getattr(args, key)
        for key in ("prompt", "negative_prompt", "height", "width", "num_frames", "guidance_scale")
    }
    for key, value in values.items():
        if value is not None and key not in accepted:
            raise UsageError(f"--{key.replace('_', '-')}: {type(pipe).__name__} takes no {key}")
    name = Path(args.model_path.rstrip("/")).name or "model"
    return build_source_for_pipeline(
        pipe, name, args.model_path, lambda: {k: v for k, v in values.items() if v is not None}, device
    )


def tiny_names() -> tuple[list[str], list[str]]:
    """(tiny pipeline cases, transformer families of the contract suite) that --tiny accepts."""
    from cache_dit.testing.cases import CASES
    from cache_dit.testing.support_matrix import registered_classes

    families = [name for name, reason in registered_classes().items() if reason is None]
    return list(CASES), families


def _resolve_tiny(name: str) -> tuple[str, str]:
    """("case" | "family", canonical name) for --tiny NAME (families case-insensitively)."""
    cases, families = tiny_names()
    if name in cases:
        return "case", name
    by_lower = {f.lower(): f for f in families}
    if name.lower() in by_lower:
        return "family", by_lower[name.lower()]
    from cache_dit.testing.support_matrix import registered_classes

    rejected = {n.lower(): (n, reason) for n, reason in registered_classes().items() if reason is not None}
    if name.lower() in rejected:
        family, reason = rejected[name.lower()]
        raise UsageError(f"--tiny {family}: cache-dit does not cache it: {reason}")
    close = difflib.get_close_matches(name, cases + families, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(
        f"--tiny {name!r} is not a tiny pipeline or transformer family{hint} (--tiny list prints them)"
    )


def tiny_case_source(
    case_name: str, args: argparse.Namespace, device: Any, dtype: Any, *, name: str | None = None
) -> Source:
    """A tiny pipeline of `cache_dit.testing.cases` on `device` / `dtype`, its inputs moved along; `name` is the
    output stem (default: the case's name)."""
    import torch

    from cache_dit.testing.cases import CASES

    case = CASES[case_name]
    pipe = case.build()  # float32 on the CPU
    if device.type != "cpu" or dtype != torch.float32:
        pipe = pipe.to(device=device, dtype=dtype)
    size = {"size": args.height} if args.height else {}

    def call_kwargs(seed: int, steps: int) -> dict[str, Any]:
        kwargs = case.call_kwargs(steps=steps, seed=seed, **size)
        return {key: _to(value, device, dtype) for key, value in kwargs.items()}

    def call(seed: int, steps: int) -> Any:
        # the case's own run (and its warning filters), its inputs moved to the pipeline's device and dtype
        out = case.run(
            lambda **kw: pipe(**{k: _to(v, device, dtype) for k, v in kw.items()}),
            steps=steps,
            seed=seed,
            **size,
        )
        return out.float().cpu().movedim(-3, -1).clamp(0, 1).numpy()

    kind = "video" if _is_video_pipeline(pipe) else "image"
    label = f"tiny {case_name} (random weights)"
    return Source(name or case_name, label, pipe, call, call_kwargs, kind)


def _tiny_family_source(name: str, device: Any, dtype: Any) -> Source:
    """A transformer family of the contract suite: the bare transformer over the steps of its own inputs (each
    step's latents and timestep from the suite's trajectory), one call per step, the last output kept."""
    import torch

    import cache_dit
    from cache_dit.cache_factory.policies.output import first_tensor  # the transformer's main output
    from cache_dit.testing.families import FAMILIES

    family = FAMILIES[name]
    model = family.build(seed=0)
    if device.type != "cpu" or dtype != torch.float32:
        model = model.to(device=device, dtype=dtype)

    @torch.no_grad()
    def call(seed: int, steps: int) -> Any:
        with cache_dit.denoising_run(model):
            prepared = family.prepare(model, seed=seed)  # e.g. a kv "extract" pass: not a denoising step
            for step in range(steps):
                inputs = {**family.inputs(seed=seed, step=step), **prepared}
                out = first_tensor(model(**{k: _to(v, device, dtype) for k, v in inputs.items()}))
        return out.float().cpu().numpy()

    return Source(name, f"tiny {name} (bare transformer, random weights)", model, call, None, "array")


# ----------------------------------------------------------------------------------------------------------
# Output files and quality
# ----------------------------------------------------------------------------------------------------------


def out_path(args: argparse.Namespace, name: str) -> Path | None:
    """--out, or --out-dir/NAME (the examples' older flag); None when both are left out (decided by the kind)."""
    if args.out is not None and args.out_dir is not None:
        raise UsageError("--out and --out-dir: give one (--out FILE)")
    if args.out is not None:
        return Path(args.out).expanduser()
    if args.out_dir is not None:
        return Path(args.out_dir).expanduser() / name  # the suffix follows the kind
    return None


def check_writable(path: Path, flag: str = "--out") -> None:
    """Before any run: the file can be written. Its folder is made (it would be at the end anyway) and a probe
    file is written and removed there, so a read-only place fails now, not after minutes of generating."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: a folder; give a file name (e.g. {path / 'image.png'})")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with open(path, "ab"):  # opened for appending, left as it is
                pass
        else:
            probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
            probe.touch()
            probe.unlink()
    except OSError as error:
        raise UsageError(f"{flag} {path}: not writable ({error.strerror or error})") from None


def _check_suffix(path: Path, kind: str) -> None:
    suffix = path.suffix.lower()
    allowed = {"image": IMAGE_SUFFIXES, "video": VIDEO_SUFFIXES, "array": ARRAY_SUFFIXES}[kind]
    if suffix not in allowed:
        what = {"image": "an image", "video": "a video", "array": "a bare transformer's output"}[kind]
        raise UsageError(f"--out {path}: this run makes {what}; use {' or '.join(allowed)}")


def _save(array: Any, path: Path, kind: str) -> None:
    """Images (B, H, W, 3) and videos (B, F, H, W, 3) in [0, 1]: the first of the batch; arrays as they are."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "array":
        np.save(path, array)
        return
    data = (np.clip(array[0], 0, 1) * 255).round().astype(np.uint8)
    if kind == "image":
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
            raise UsageError(f"--out {path}: OpenCV cannot write an MP4 here; use .gif") from None
        for frame in data:
            writer.write(frame[..., ::-1])  # RGB -> BGR
        writer.release()


def _quality(reference: Any, output: Any, kind: str) -> str:
    """Cached vs uncached: PSNR and SSIM (cache_dit.metrics) of the 8-bit frames, before any file encoding;
    for a bare transformer's output the relative L1 difference."""
    import numpy as np

    if kind == "array":
        rel = float(np.abs(output - reference).mean() / max(float(np.abs(reference).mean()), 1e-12))
        return f"relative L1 {rel:.4g} (last step's output)"
    from cache_dit.metrics import measure_images

    def frames(a: Any) -> Any:
        u8 = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
        return u8.reshape(-1, *u8.shape[-3:])  # (N, H, W, 3)

    results = measure_images(frames(reference), frames(output), ["psnr", "ssim"])
    psnr, ssim = (r.value for r in results.values())
    return f"PSNR {psnr:.2f} dB; SSIM {ssim:.4f} (8-bit frames, before encoding)"


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------


def _denoisers(pipe: Any) -> list[Any]:
    import torch

    if isinstance(pipe, torch.nn.Module):
        return [pipe]
    return [
        m
        for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None))
        if isinstance(m, torch.nn.Module)
    ]


def check_supported(pipe: Any) -> list[Any]:
    """The denoisers of `pipe` (or `pipe` itself, a bare transformer); a usage error when there is none the
    library can cache."""
    from cache_dit.cache_factory.adapters import find_adapter

    denoisers = _denoisers(pipe)
    if not denoisers:
        raise UsageError(
            f"unsupported pipeline {type(pipe).__name__}: it has no `transformer` (a DiT) to cache"
        )
    for module in denoisers:
        try:
            find_adapter(module)
        except ValueError as error:
            raise UsageError(f"unsupported pipeline {type(pipe).__name__}: {error}") from None
    return denoisers


def _count_blocks(source: Source) -> list[dict[int, int]]:
    """Count real block computations of every denoiser (installed before the cache: a skipped block is not
    counted), as the demo does."""
    from cache_dit.testing.cases import count_block_calls

    return [count_block_calls(module)[0] for module in _denoisers(source.pipe)]


def _calibrated_options(args: argparse.Namespace, source: Source, steps: int) -> dict[str, Any]:
    """--calibrate / --calibration-file: the stored options for this model and --steps, or a new calibration."""
    import cache_dit

    if source.call_kwargs is None:
        raise UsageError(
            f"--calibrate / --calibration-file need a pipeline; {source.label} is a bare transformer"
        )
    path = Path(args.calibration_file) if args.calibration_file is not None else None
    if path is not None and path.exists():
        try:
            options = cache_dit.load_calibration(path, source.pipe, steps)
        except ValueError as error:
            if args.calibrate is None:
                raise UsageError(f"--calibration-file: {error}") from None
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"--calibration-file {path}: cannot read it: {error}") from None
        else:
            print(f"calibrated options for {steps} steps read from {path}")
            return options
    elif args.calibrate is None:
        raise UsageError(f"--calibration-file {path}: no such file (add --calibrate SPEEDUP to make it)")
    if path is not None:
        check_writable(path, "--calibration-file")
    try:
        return dict(
            cache_dit.calibrate(
                source.pipe,
                source.call_kwargs(args.seed, steps),
                target_speedup=args.calibrate,
                save_to=path,
                verbose=not args.quiet,
            )
        )
    except (TypeError, ValueError) as error:
        raise UsageError(f"--calibrate {args.calibrate}: {error}") from None


def nothing_to_cache(resolved: dict[str, Any], steps: int) -> str | None:
    """Why these options can cache (or prune) no step of a `steps`-step run, or None."""
    cache_type = str(resolved.get("cache_type"))
    if cache_type == "NONE":
        return None
    if resolved.get("compute_steps") is not None:
        if set(range(steps)) <= set(resolved["compute_steps"]):
            return f"compute_steps lists all {steps} steps"
        return None
    if resolved.get("residual_diff_threshold") == 0:
        return "residual_diff_threshold=0 disables caching"
    if resolved.get("warmup_steps", 0) >= steps:
        return f"warmup_steps={resolved['warmup_steps']} >= the {steps} steps (lower --warmup-steps)"
    cap_key = "max_pruned_steps" if cache_type == "DBPrune" else "max_cached_steps"
    if resolved.get(cap_key) == 0:
        return f"{cap_key}=0"
    return None


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


@dataclass
class _Plan:
    """What the flags ask for, checked before anything is loaded."""

    steps: int
    budget: bool  # --calibrate / --calibration-file: the options come from the calibration
    options: dict[str, Any]
    out: Path | None  # None: outputs/NAME with the kind's suffix


def _plan(
    args: argparse.Namespace, tiny: bool, defaults: dict[str, Any], real_model_flags: Sequence[str], name: str
) -> _Plan:
    from cache_dit.cache_factory import build_config

    if tiny:
        flags = given(args, *real_model_flags)
        if flags:
            raise UsageError(
                f"{', '.join(flags)} apply to --model-path only: --tiny runs its own fixed call on random "
                "inputs (--height sets a tiny pipeline's size)"
            )
    else:
        for key, value in defaults.items():  # the real model's defaults of flags left out (an example's)
            if key != "steps" and getattr(args, key, None) is None:
                setattr(args, key, value)
        if getattr(args, "prompt", None) is None:
            raise UsageError("--model-path needs --prompt")
    check_cache_flags(args)
    steps = args.steps or (TINY_DEFAULTS["steps"] if tiny else int(defaults.get("steps", 28)))
    if args.calibrate is not None and args.calibrate > steps:  # one computed step of all at best
        raise UsageError(f"--calibrate {args.calibrate}: out of reach, --steps {steps} give at most {steps}x")
    budget = args.calibrate is not None or args.calibration_file is not None
    options = {} if budget else cache_options(args, tiny)
    if not budget:
        try:  # the flags alone, before minutes of loading
            build_config(**options)
        except (TypeError, ValueError) as error:
            raise UsageError(f"cache flags: {error}") from None
    out = out_path(args, name)
    if out is not None and (out.suffix or out.is_dir()):
        check_writable(out)
    return _Plan(steps, budget, options, out)


@dataclass
class _Timings:
    """The outputs, wall-clock times and block calls of the timed runs."""

    output: Any = None
    reference: Any = None  # the uncached output (--compare)
    cached: list[float] = field(default_factory=list)
    uncached: list[float] = field(default_factory=list)
    blocks_cached: int = 0
    blocks_uncached: int = 0


def _time_runs(
    args: argparse.Namespace, source: Source, steps: int, apply: Callable[[], None], device: Any, prog: str
) -> _Timings:
    """One short uncached warm-up (kernels, allocator, lazy inits), then per repeat an uncached run (--compare)
    and a cached run, interleaved so that a change of machine load hits both alike."""
    import torch
    from tqdm.auto import tqdm

    import cache_dit

    counts = None if args.compile else _count_blocks(source)
    bar = tqdm(
        total=1 + args.repeats * (2 if args.compare else 1),
        desc=prog,
        unit="run",
        disable=not _progress(args),
    )

    def timed(cached: bool) -> tuple[Any, float, int]:
        if cached:
            apply()
        else:
            cache_dit.disable_cache(source.pipe)
        for count in counts or ():
            count.clear()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = source.call(args.seed, steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        bar.update()
        return result, elapsed, sum(sum(count.values()) for count in counts or ())

    cache_dit.disable_cache(source.pipe)
    source.call(args.seed, min(WARMUP_STEPS, steps))
    bar.update()
    timings = _Timings()
    for _ in range(args.repeats):
        if args.compare:
            timings.reference, elapsed, timings.blocks_uncached = timed(cached=False)
            timings.uncached.append(elapsed)
        timings.output, elapsed, timings.blocks_cached = timed(cached=True)
        timings.cached.append(elapsed)
    bar.close()
    return timings


_SHOWN_OPTIONS = (
    "cache_type",
    "Fn_compute_blocks",
    "Bn_compute_blocks",
    "residual_diff_threshold",
    "warmup_steps",
    "max_continuous_cached_steps",
    "compute_steps",
    "taylorseer_cache_type",
)


def _shown(resolved: dict[str, Any], key: str) -> bool:
    """Options that apply: a fixed schedule has no threshold or warmup; the forecast type needs TaylorSeer."""
    if resolved.get(key) is None:
        return False
    if key in ("residual_diff_threshold", "warmup_steps"):
        return resolved.get("compute_steps") is None
    if key == "max_continuous_cached_steps":
        return resolved[key] != -1 and resolved.get("compute_steps") is None
    if key == "taylorseer_cache_type":
        return bool(resolved.get("enable_taylorseer"))
    return True


def _threshold_note(resolved: dict[str, Any], stats: Any) -> str | None:
    """When the threshold gate cached nothing because every diff after the warmup stayed above it."""
    if (
        str(resolved.get("cache_type")) not in ("DBCache", "FBCache")
        or resolved.get("compute_steps") is not None
    ):
        return None
    warmup, threshold = resolved.get("warmup_steps", 0), resolved.get("residual_diff_threshold", 0)
    diffs = [d for b in stats.branches.values() for step, d in b.residual_diffs.items() if step >= warmup]
    if not diffs or any(b.cached_steps for b in stats.branches.values()) or min(diffs) < threshold:
        return None
    return (
        f"note: no step was cached: every residual diff after the warmup (min {min(diffs):.4f}) stayed above "
        f"residual_diff_threshold={threshold}; raise --rdt to cache more"
    )


def run(
    args: argparse.Namespace,
    make_source: Callable[[Any, Any], Source],
    *,
    name: str,
    tiny: bool,
    defaults: dict[str, Any] | None = None,
    real_model_flags: Sequence[str] = REAL_MODEL_FLAGS,
    prog: str = PROG,
) -> int:
    """Check the flags, load, apply the cache, warm up, time (interleaved with --compare), report and write.

    `make_source(device, dtype)` loads what runs; `name` is the output stem known before loading; `defaults` are
    the real model's flag defaults (an example's), `real_model_flags` the flags --tiny rejects."""
    import torch

    import cache_dit
    from cache_dit.cache_factory import apply_cache_on_pipe, apply_cache_on_transformer
    from cache_dit.cache_factory.runner import get_runner

    plan = _plan(args, tiny, dict(defaults or {}), real_model_flags, name)
    device, dtype = device_and_dtype(args)
    if tiny and device.type == "cpu":
        torch.set_num_threads(1)  # tiny models are per-op overhead: one thread is fastest and steadiest

    source = make_source(device, dtype)
    out = plan.out if plan.out is not None else Path(OUTPUT_DIR) / name
    if not out.suffix:
        out = out.with_suffix({"image": ".png", "video": ".mp4", "array": ".npy"}[source.kind])
    _check_suffix(out, source.kind)
    check_writable(out)
    if source.is_pipeline:
        source.pipe.set_progress_bar_config(disable=not _progress(args), leave=False)
    denoisers = check_supported(source.pipe)
    options = _calibrated_options(args, source, plan.steps) if plan.budget else plan.options
    if not source.is_pipeline:
        options.setdefault("do_separate_classifier_free_guidance", False)  # one call per step

    def apply() -> None:
        if source.is_pipeline:
            apply_cache_on_pipe(source.pipe, **options)
        else:
            apply_cache_on_transformer(source.pipe, **options)

    try:  # the checks that need the model (block counts); a failed apply leaves the model as it was
        apply()
    except (TypeError, ValueError) as error:
        raise UsageError(f"cache flags: {error}") from None
    runner = get_runner(denoisers[0])
    resolved = dict(runner.config.options) if runner is not None else {"cache_type": "NONE"}
    why = nothing_to_cache(resolved, plan.steps)
    if why is not None:
        warnings.warn(f"these options cache no step of {plan.steps}: {why}", UserWarning, stacklevel=1)
        warnings.filterwarnings("ignore", message=".*no step can be cached.*")  # the library says it again
    cache_dit.disable_cache(source.pipe)
    if args.compile:
        for module in denoisers:
            module.compile()

    timings = _time_runs(args, source, plan.steps, apply, device, prog)
    stats = cache_dit.summary(source.pipe)
    _save(timings.output, out, source.kind)
    shown = ", ".join(f"{key}={resolved[key]}" for key in _SHOWN_OPTIONS if _shown(resolved, key))
    print(f"{prog}: {source.label}, {type(source.pipe).__name__}, {plan.steps} steps; {shown}")
    print(stats)
    note = _threshold_note(resolved, stats)
    if note is not None:
        print(note)
    cached_time = statistics.median(timings.cached)
    runs = f"median of {args.repeats}" if args.repeats > 1 else "one run"
    what = "cached" if runner is not None else "without a cache"
    print(f"time: {cached_time:.2f} s {what} ({runs}, after a warm-up)")
    if args.compare:
        uncached_time = statistics.median(timings.uncached)
        ref_path = out.with_name(f"{out.stem}_uncached{out.suffix}")
        _save(timings.reference, ref_path, source.kind)
        blocks = (
            f"{timings.blocks_uncached / timings.blocks_cached:.2f}x blocks "
            f"({timings.blocks_uncached} -> {timings.blocks_cached} block calls)"
            if timings.blocks_cached
            else "blocks not counted (--compile)"
        )
        quality = _quality(timings.reference, timings.output, source.kind)
        print(
            f"uncached: {uncached_time:.2f} s; speedup {uncached_time / cached_time:.2f}x wall-clock, {blocks}; "
            f"{quality}; cached vs uncached, same seed -> {ref_path}"
        )
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# cache-dit-generate
# ----------------------------------------------------------------------------------------------------------


def build_cli_parser() -> argparse.ArgumentParser:
    """The command-line parser (exposed for documentation and tests)."""
    return build_parser(
        PROG,
        "Run a diffusers pipeline with a cache-dit cache; print the cache summary and the time; write the image "
        "or video. --compare also runs it uncached and prints the wall-clock and block-count speedups, PSNR and "
        "SSIM.",
    )


def print_tiny_list() -> None:
    from cache_dit.testing.cases import CASES
    from cache_dit.testing.families import FAMILIES

    cases, families = tiny_names()
    print("tiny pipelines (--tiny NAME writes an image or a video; also the examples' --tiny cases):")
    for name in cases:
        case = CASES[name]
        variant = f", a variant of {case.variant_of}" if case.variant_of else ""
        print(f"  {name:<44} {case.num_blocks} blocks{variant}")
    print(
        "tiny transformer families (the contract suite's zoo: the bare transformer over --steps steps of its own "
        "inputs, one call per step; --out writes the last output as .npy):"
    )
    for name in families:
        print(f"  {name:<44} {FAMILIES[name].pattern}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` (default `sys.argv[1:]`); return the exit status."""
    parser = build_cli_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error already printed on one line
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.tiny == "list":
        print_tiny_list()
        return 0

    def start() -> int:
        if args.tiny is not None:
            kind, tiny_name = _resolve_tiny(args.tiny)

            def make_source(device: Any, dtype: Any) -> Source:
                if kind == "case":
                    return tiny_case_source(tiny_name, args, device, dtype)
                return _tiny_family_source(tiny_name, device, dtype)

            flags = REAL_MODEL_FLAGS + (("--height",) if kind == "family" else ())
            return run(args, make_source, name=tiny_name, tiny=True, real_model_flags=flags)
        name = Path(args.model_path.rstrip("/")).name or "model"
        return run(args, lambda device, dtype: _model_source(args, device, dtype), name=name, tiny=False)

    return guarded(PROG, start)


def guarded(prog: str, start: Callable[[], int]) -> int:
    """Run `start()` the way a command line should: usage errors as one line and exit code 2, warnings as one
    line each (the same warning of every repeat once), Ctrl-C as exit code 130."""

    def one_line(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None):
        print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("once")
        warnings.showwarning = one_line
        try:
            return start()
        except UsageError as error:
            print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, as command-line tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1


if __name__ == "__main__":
    sys.exit(main())
