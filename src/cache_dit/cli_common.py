"""The command line shared by `cache-dit-generate` and the examples (`examples/run_*.py`): one parser, one name
per concept, the same help text everywhere.

    source      --model-path PATH_OR_HUB_ID | --tiny [NAME]
    generation  --prompt --negative-prompt --steps --height --width --num-frames --guidance-scale --seed
                --device --dtype --out --quiet
    cache       --cache --Fn --Bn --rdt (= --residual-diff-threshold) --warmup-steps --max-cached-steps
                --max-continuous-cached-steps --taylorseer --order
    budget      --calibrate SPEEDUP --calibration-file JSON
    run         --compare --repeats --compile --version

Older spellings keep working, hidden from `--help`: `--out-dir DIR` (the examples' output folder), `--frames`,
`--tiny-case NAME`, `--model`, `--threshold`. Nothing here imports torch, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Collection
from typing import Any, NoReturn

CACHE_CHOICES = ("DBCache", "FBCache", "DBPrune", "NONE")
DTYPES = ("float32", "float16", "bfloat16")
OUTPUT_DIR = "outputs"  # where outputs go when --out is left out (never the current folder itself)
# --tiny runs on models of a few blocks and steps: these replace the defaults sized for FLUX.1-dev (Fn=8, Bn=8,
# warmup 8 of 28 steps), under which a tiny model would cache nothing. A flag given on the command line wins.
TINY_DEFAULTS: dict[str, int] = {"steps": 8, "Fn": 1, "Bn": 1, "warmup_steps": 2}


class UsageError(Exception):
    """Something the user can fix (flags, paths, weights, device): one line on stderr, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ----------------------------------------------------------------------------------------------------------
# Value types: a bad value is a one-line usage error naming the flag
# ----------------------------------------------------------------------------------------------------------


def _int_at_least(minimum: int, what: str) -> Any:
    """An argparse type: an integer >= `minimum`, or a one-line usage error saying `what` was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "an integer >= 1")
non_negative_int = _int_at_least(0, "an integer >= 0")
cap = _int_at_least(-1, "an integer >= 0 or -1 (no cap)")  # a step cap: -1 for no cap


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def speedup(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a speedup > 1, got {text!r}") from None
    if not 1 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite speedup > 1, got {text}")
    return value


# ----------------------------------------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------------------------------------


def _default(defaults: dict[str, Any], key: str, otherwise: str) -> str:
    return f"default: {defaults[key]}" if defaults.get(key) is not None else otherwise


def build_parser(
    prog: str,
    description: str,
    *,
    default_model: str | None = None,
    tiny_cases: tuple[str, ...] | None = None,
    defaults: dict[str, Any] | None = None,
    only: Collection[str] | None = None,
) -> OneLineParser:
    """The shared parser.

    `cache-dit-generate` passes no `default_model`: `--model-path` or `--tiny NAME` is then required (`--tiny list`
    prints the names). An example passes its hub id as `default_model` and its tiny cases: `--tiny` alone runs the
    first one. `defaults` are the real model's values of flags left out (shown in `--help`; `--tiny` runs
    `TINY_DEFAULTS` and the tiny case's own size instead). `only`: the destinations to offer (a script that
    uses some of the flags, such as examples/parallel_cache.py); None: all.
    """
    from . import __version__

    defaults = dict(defaults or {})
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s (cache-dit {__version__})")
    tiny_note = (
        f"--tiny: {TINY_DEFAULTS['steps']} steps, --Fn {TINY_DEFAULTS['Fn']} --Bn {TINY_DEFAULTS['Bn']} "
        f"--warmup-steps {TINY_DEFAULTS['warmup_steps']} unless given"
    )

    def group(title: str) -> Any:
        made = parser.add_argument_group(title)
        if only is not None:
            add = made.add_argument

            def filtered(*names: str, **kwargs: Any) -> Any:
                dest = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
                return add(*names, **kwargs) if dest in only else None

            made.add_argument = filtered  # type: ignore[method-assign]
        return made

    source = group("source")
    if default_model is None:
        choice = source.add_mutually_exclusive_group(required=True)
        choice.add_argument(
            "--model-path",
            metavar="PATH_OR_HUB_ID",
            help="an existing local pipeline folder, or a Hugging Face hub id (org/name) loaded with "
            "DiffusionPipeline.from_pretrained (uses the local cache; HF_HUB_OFFLINE=1 never downloads)",
        )
        choice.add_argument(
            "--tiny",
            metavar="NAME",
            help="a tiny random model instead of weights: a tiny pipeline (flux, wan, ...) or any transformer "
            f"family of the contract suite; 'list' prints them. {tiny_note}",
        )
    else:
        source.add_argument(
            "--model-path",
            metavar="PATH_OR_HUB_ID",
            default=default_model,
            help=f"an existing local pipeline folder or a hub id (default: {default_model})",
        )
        names = ", ".join(tiny_cases or ())
        source.add_argument(
            "--tiny",
            metavar="CASE",
            nargs="?",
            const=(tiny_cases or (None,))[0],
            default=None,
            help=f"the same script on tiny random components, no weights (cases: {names}; default: "
            f"{(tiny_cases or ('',))[0]}). {tiny_note}",
        )
        source.add_argument("--tiny-case", dest="tiny", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    source.add_argument("--model", dest="model_path", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    gen = group("generation")

    def described(what: str, key: str, otherwise: str) -> str:  # "what (default: the model's value)"
        return f"{what} ({_default(defaults, key, otherwise)})"

    gen.add_argument(
        "--prompt", default=None, help=described("text prompt", "prompt", "needed with --model-path")
    )
    gen.add_argument("--negative-prompt", default=None, help="negative prompt (pipelines with CFG)")
    gen.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help=f"denoising steps ({_default(defaults, 'steps', 'default: 28')}; --tiny: {TINY_DEFAULTS['steps']})",
    )
    for flag, key, what in (
        ("--height", "height", "image or video height"),
        ("--width", "width", "image or video width"),
        ("--num-frames", "num_frames", "frames of a video pipeline"),
    ):
        gen.add_argument(
            flag, type=positive_int, default=None, help=described(what, key, "default: the pipeline's")
        )
    gen.add_argument(
        "--frames", dest="num_frames", type=positive_int, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    gen.add_argument(
        "--guidance-scale",
        type=non_negative_float,
        default=None,
        help=described("classifier-free guidance scale", "guidance_scale", "default: the pipeline's"),
    )
    gen.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    gen.add_argument(
        "--device", default=None, help="cuda, cpu, mps, ... (default: cuda when available, else cpu)"
    )
    gen.add_argument(
        "--dtype", choices=DTYPES, default=None, help="default: bfloat16 on a GPU, float32 on the CPU"
    )
    gen.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help=f"output file: .png/.jpg/.webp for images, .mp4/.gif for videos (default: {OUTPUT_DIR}/NAME.png "
        "or .mp4); --compare writes the uncached one beside it as FILE_uncached",
    )
    gen.add_argument("--out-dir", default=None, help=argparse.SUPPRESS)
    gen.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (they are off anyway when stderr is not a terminal)",
    )

    cache = group("cache (flags left out take the cache type's defaults)")
    cache.add_argument(
        "--cache", default=None, help=f"one of {', '.join(CACHE_CHOICES)} or an alias (default: DBCache)"
    )
    cache.add_argument("--Fn", type=non_negative_int, default=None, help="Fn_compute_blocks")
    cache.add_argument("--Bn", type=non_negative_int, default=None, help="Bn_compute_blocks")
    cache.add_argument(
        "--rdt",
        "--residual-diff-threshold",
        type=non_negative_float,
        default=None,
        help="residual_diff_threshold",
    )
    cache.add_argument(
        "--threshold", dest="rdt", type=non_negative_float, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    cache.add_argument("--warmup-steps", type=non_negative_int, default=None, help="warmup_steps")
    cache.add_argument("--max-cached-steps", type=cap, default=None, help="max_cached_steps (-1: no cap)")
    cache.add_argument(
        "--max-continuous-cached-steps",
        type=cap,
        default=None,
        help="max_continuous_cached_steps (-1: no cap)",
    )
    cache.add_argument(
        "--taylorseer", action="store_true", help="TaylorSeer forecasts on both streams (DBCache/FBCache)"
    )
    cache.add_argument(
        "--order", type=non_negative_int, default=None, help="TaylorSeer order (with --taylorseer)"
    )

    budget = group("budget mode (instead of the cache flags)")
    budget.add_argument(
        "--calibrate",
        type=speedup,
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

    run = group("run")
    run.add_argument(
        "--compare",
        action="store_true",
        help="also run uncached (same seed): wall-clock and block-count speedups, PSNR and SSIM",
    )
    run.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="timed runs per configuration, uncached and cached interleaved after one warm-up each; the "
        "median is reported (default: 1)",
    )
    run.add_argument("--compile", action="store_true", help="torch.compile the transformer (after the cache)")
    return parser


def given(args: argparse.Namespace, *flags: str) -> list[str]:
    """The flags among `flags` the command line set (their value is None when left out)."""
    return [flag for flag in flags if getattr(args, flag.lstrip("-").replace("-", "_"), None) is not None]


CACHE_FLAGS = (
    "--cache",
    "--Fn",
    "--Bn",
    "--rdt",
    "--warmup-steps",
    "--max-cached-steps",
    "--max-continuous-cached-steps",
    "--order",
)


def cache_options(args: argparse.Namespace, tiny: bool = False) -> dict[str, Any]:
    """The `apply_cache_on_pipe` keywords the flags ask for (flags left out are left out). With `tiny`, Fn, Bn
    and warmup_steps left out take `TINY_DEFAULTS` (FBCache keeps its fixed F1B0)."""
    from .cache_factory.cache_types import CacheType  # after parsing: it imports torch

    options: dict[str, Any] = {"cache_type": args.cache or "DBCache"}
    try:  # FBCache is F1B0 by definition: the tiny defaults leave its blocks alone
        fixed_blocks = CacheType.type(options["cache_type"]) is CacheType.FBCache
    except ValueError:  # an unknown name: the options' check says so, with the allowed ones
        fixed_blocks = False
    for flag, key in (
        ("Fn", "Fn_compute_blocks"),
        ("Bn", "Bn_compute_blocks"),
        ("rdt", "residual_diff_threshold"),
        ("warmup_steps", "warmup_steps"),
        ("max_cached_steps", "max_cached_steps"),
        ("max_continuous_cached_steps", "max_continuous_cached_steps"),
    ):
        value = getattr(args, flag)
        if value is None and tiny and flag in TINY_DEFAULTS and not (fixed_blocks and flag in ("Fn", "Bn")):
            value = TINY_DEFAULTS[flag]
        if value is not None:
            options[key] = value
    if args.taylorseer:
        options["enable_taylorseer"] = True
        options["enable_encoder_taylorseer"] = True
    if args.order is not None:
        if not args.taylorseer:
            raise UsageError("--order needs --taylorseer")
        options["taylorseer_kwargs"] = {"n_derivatives": args.order}
    return options


def check_cache_flags(args: argparse.Namespace) -> None:
    """Budget mode replaces the cache flags: giving both is an error, never silently ignored."""
    if args.calibrate is None and args.calibration_file is None:
        return
    flags = given(args, *CACHE_FLAGS) + (["--taylorseer"] if args.taylorseer else [])
    if flags:
        raise UsageError(
            f"{', '.join(flags)}: with --calibrate / --calibration-file the cache options come from the "
            "calibration; leave the cache flags out"
        )
