"""`cache-dit-metrics-cli`: PSNR, SSIM, MSE and FID between two images, directories or videos.

Examples:
    cache-dit-metrics-cli psnr -i1 uncached.png -i2 cached.png
    cache-dit-metrics-cli all -i1 uncached_dir/ -i2 cached_dir/ --json
    cache-dit-metrics-cli ssim psnr -v1 uncached.mp4 -v2 cached.mp4 --resize

Prints a table (or one JSON object with `--json`) on stdout. On bad input it exits with 1 (2 for bad
command-line usage) and one line on stderr, never a traceback. Warnings are one line each on stderr.
In JSON an infinite PSNR is the string "inf" (strict JSON has no infinity).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from cache_dit.cli_common import OneLineParser, positive_int  # no torch import

PROG = "cache-dit-metrics-cli"
METRIC_CHOICES = ("psnr", "ssim", "mse", "fid", "all")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (exposed for documentation and tests)."""
    parser = OneLineParser(
        prog=PROG,
        description="Compare generated images or videos (e.g. cached against uncached) with PSNR, SSIM, MSE "
        "and FID. Directories are paired by relative path; files on one side only are skipped and reported.",
    )
    parser.add_argument(
        "metrics",
        nargs="+",
        choices=METRIC_CHOICES,
        metavar="METRIC",
        help=f"one or more of {METRIC_CHOICES}",
    )
    parser.add_argument("-i1", "--img-true", help="reference image file or directory")
    parser.add_argument("-i2", "--img-test", help="image file or directory to score")
    parser.add_argument("-v1", "--video-true", help="reference video file or directory of videos")
    parser.add_argument("-v2", "--video-test", help="video file or directory of videos to score")
    parser.add_argument(
        "--resize",
        action="store_true",
        help="resize test images/frames to the reference size for PSNR/SSIM/MSE instead of failing",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--device", default=None, help="FID device, e.g. cpu or cuda (default: cuda if available)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=50, help="FID batch size (default 50)")
    parser.add_argument(
        "--dims",
        type=int,
        choices=(64, 192, 768, 2048),
        default=2048,
        help="FID feature size (default 2048, the standard FID)",
    )
    parser.add_argument(
        "--inception-weights",
        metavar="PATH",
        default=None,
        help="pytorch-fid Inception weights file pt_inception-2015-12-05-6726825d.pth (default: "
        "$CACHE_DIT_INCEPTION_WEIGHTS, then torch's hub cache, then a download); 'random' for tests only",
    )
    return parser


def _inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, str, bool]:
    """(true, test, is_video) from the -i1/-i2 or -v1/-v2 pair; anything else is a usage error."""
    images = (args.img_true, args.img_test)
    videos = (args.video_true, args.video_test)
    given_images = any(v is not None for v in images)
    given_videos = any(v is not None for v in videos)
    if given_images and given_videos:
        parser.error("give either images (-i1/-i2) or videos (-v1/-v2), not both")
    if given_videos:
        if None in videos:
            parser.error("videos need both -v1/--video-true and -v2/--video-test")
        from .sources import IMAGE_EXTENSIONS

        for flag, value in (("-v1", args.video_true), ("-v2", args.video_test)):
            if os.path.splitext(value)[1].lower() in IMAGE_EXTENSIONS:
                parser.error(
                    f"{flag} {value} is an image; compare images with -i1/--img-true and -i2/--img-test"
                )
        return args.video_true, args.video_test, True
    if None in images:
        parser.error("give -i1/--img-true and -i2/--img-test, or -v1/--video-true and -v2/--video-test")
    from .sources import VIDEO_EXTENSIONS

    for flag, value in (("-i1", args.img_true), ("-i2", args.img_test)):
        if os.path.splitext(value)[1].lower() in VIDEO_EXTENSIONS:
            parser.error(
                f"{flag} {value} is a video; compare videos with -v1/--video-true and -v2/--video-test"
            )
    return args.img_true, args.img_test, False


def _format_value(value: float) -> str:
    if value == float("inf"):
        return "inf"
    return f"{value:.6g}"


def _json_value(value: float | None) -> float | str | None:
    return "inf" if value == float("inf") else value


def _evaluate(args: argparse.Namespace, true: str, test: str, video: bool) -> dict[str, Any]:
    from .fid import FrechetInceptionDistance, MissingInceptionWeightsError
    from .pairwise import PairwiseMetric, measure_images, measure_videos

    requested = set(args.metrics)
    fid_optional = "all" in requested and "fid" not in requested  # `all` without weights: FID unavailable
    if "all" in requested:
        requested = {"psnr", "ssim", "mse", "fid"}
    pairwise = [m for m in PairwiseMetric if m.value in requested]

    # Build the FID network first: missing weights should fail before minutes of PSNR/SSIM.
    fid = None
    fid_unavailable = None
    if "fid" in requested:
        try:
            fid = FrechetInceptionDistance(
                device=args.device,
                dims=args.dims,
                batch_size=args.batch_size,
                weights_path=args.inception_weights,
            )
        except MissingInceptionWeightsError as error:
            if not fid_optional:
                raise
            fid_unavailable = f"unavailable (no Inception weights: {' '.join(str(error).split())})"

    report: dict[str, Any] = {
        "kind": "video" if video else "image",
        "true": true,
        "test": test,
        "metrics": {},
    }
    if pairwise:
        measure = measure_videos if video else measure_images
        results = measure(true, test, pairwise, resize=args.resize)
        for metric, result in results.items():
            entry: dict[str, Any] = {"value": result.value, "n": result.n_pairs}
            if metric is PairwiseMetric.PSNR:
                entry["n_identical"] = result.n_identical
            report["metrics"][metric.value] = entry
        any_result = next(iter(results.values()))
        report["only_in_true"] = list(any_result.only_in_true)
        report["only_in_test"] = list(any_result.only_in_test)
    if fid is not None:
        result = fid.measure(true, test, video=video)
        report["metrics"]["fid"] = {
            "value": result.value,
            "n": min(result.n_true, result.n_test),
            "n_true": result.n_true,
            "n_test": result.n_test,
            "dims": args.dims,
        }
    if fid_unavailable is not None:
        report["metrics"]["fid"] = {"value": None, "n": 0, "unavailable": fid_unavailable}
    return report


def _print_table(report: dict[str, Any]) -> None:
    unit = "frames" if report["kind"] == "video" else "pairs"
    rows = [("metric", "value", "n", "note")]
    for name, entry in report["metrics"].items():
        note = ""
        if entry.get("n_identical"):
            note = f"{entry['n_identical']} identical {unit} (PSNR inf) left out of the mean"
        if entry.get("unavailable"):
            rows.append((name, "-", "-", entry["unavailable"]))
            continue
        if name == "fid":
            unit_fid = "frames" if report["kind"] == "video" else "images"
            note = f"{entry['n_true']} vs {entry['n_test']} {unit_fid}, dims={entry['dims']}"
        rows.append((name, _format_value(entry["value"]), str(entry["n"]), note))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"true: {report['true']}\ntest: {report['test']}")
    for row in rows:
        print(("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3]).rstrip())
    skipped_true, skipped_test = report.get("only_in_true", []), report.get("only_in_test", [])
    if skipped_true or skipped_test:
        print(f"skipped: {len(skipped_true)} only in true, {len(skipped_test)} only in test")


def _print_json(report: dict[str, Any]) -> None:
    for entry in report["metrics"].values():
        entry["value"] = _json_value(entry["value"])
    print(json.dumps(report, indent=2, allow_nan=False))


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: Any = None,
) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` (default `sys.argv[1:]`); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        true, test, video = _inputs(parser, args)
    except SystemExit as exit_:  # --help, or a usage error already printed on one line
        return exit_.code if isinstance(exit_.code, int) else 2

    # This process is ours: keep OpenCV's and FFmpeg's own logging off stderr (our errors say it in one line).
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg is first used
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _one_line_warning
        try:
            report = _evaluate(args, true, test, video)
        except (OSError, ValueError) as error:
            message = " ".join(str(error).split()) or type(error).__name__
            print(f"{PROG}: error: {message}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
    if args.json:
        _print_json(report)
    else:
        _print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
