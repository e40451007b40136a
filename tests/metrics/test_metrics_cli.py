"""`cache-dit-metrics-cli` end to end, in subprocesses, plus a few in-process checks of `main`.

The subprocesses run once, one per core at a time (each spends ~2 s importing torch), in a module fixture;
the tests read their results.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from cache_dit.metrics.cli import main

OFFSET = 5


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def _make_data(root: Path) -> None:
    rng = np.random.default_rng(0)
    images = {f"{i}.png": rng.integers(20, 201, (24, 32, 3), dtype=np.uint8) for i in range(3)}
    for name, image in images.items():
        for directory, content in [
            ("a", image),
            ("offset", image + np.uint8(OFFSET)),
            ("big", cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)),
        ]:
            (root / directory).mkdir(exist_ok=True)
            cv2.imwrite(str(root / directory / name), content)
        (root / "bad").mkdir(exist_ok=True)
        (root / "bad" / name).write_bytes(b"not an image")
    shutil.copytree(root / "big", root / "big_extra")
    cv2.imwrite(str(root / "big_extra" / "extra.png"), images["0.png"])
    (root / "empty").mkdir()
    (root / "bad.mp4").write_bytes(b"not a video")
    for name, offset in [("v.avi", 0), ("v_offset.avi", OFFSET)]:
        writer = cv2.VideoWriter(str(root / name), cv2.VideoWriter_fourcc(*"FFV1"), 5.0, (32, 24))
        for image in images.values():
            writer.write(image + np.uint8(offset))
        writer.release()


MODULE = [sys.executable, "-m", "cache_dit.metrics.cli"]
ENTRY_POINT = (
    shutil.which("cache-dit-metrics-cli", path=os.path.dirname(sys.executable)) or "cache-dit-metrics-cli"
)

CASES: dict[str, list[str]] = {
    # bad input: exit 1 (2 for usage), one line on stderr
    "missing_path": [*MODULE, *"psnr -i1 a -i2 nowhere".split()],
    "no_images": [*MODULE, *"psnr -i1 a -i2 empty".split()],
    "unreadable_image": [*MODULE, *"ssim -i1 a -i2 bad".split()],
    "unreadable_video": [*MODULE, *"psnr -v1 v.avi -v2 bad.mp4".split()],
    "mixed_flags": [*MODULE, *"psnr -i1 a -v2 v.avi".split()],
    "sizes": [*MODULE, *"mse -i1 a -i2 big".split()],
    "missing_weights": [*MODULE, *"fid -i1 a -i2 a --inception-weights nowhere.pth".split()],
    "missing_weights_all_and_fid": [*MODULE, *"all fid -i1 a -i2 a --inception-weights nowhere.pth".split()],
    "video_as_image": [*MODULE, *"psnr -i1 v.avi -i2 v_offset.avi".split()],
    "image_as_video": [*MODULE, *"psnr -v1 a/0.png -v2 offset/0.png".split()],
    "all_no_weights": [*MODULE, *"all -i1 a -i2 offset --inception-weights nowhere.pth".split()],
    "all_no_weights_json": [*MODULE, *"all -i1 a -i2 offset --inception-weights nowhere.pth --json".split()],
    # good input
    "resize_json": [*MODULE, *"psnr ssim mse --img-true a --img-test big_extra --resize --json".split()],
    "video_json": [*MODULE, *"psnr mse --video-true v.avi --video-test v_offset.avi --json".split()],
    "all_table_entry_point": [
        ENTRY_POINT,
        *"all -i1 a -i2 offset --inception-weights random --dims 64 --batch-size 2 --device cpu".split(),
    ],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("cli")
    _make_data(root)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("CACHE_DIT_INCEPTION_WEIGHTS", None)

    def run(args: list[str]) -> Run:
        done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        return Run(done.returncode, done.stdout, done.stderr)

    # As many at a time as there are cores: more only fight over CPU and memory.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {name: pool.submit(run, args) for name, args in CASES.items()}
        return {name: future.result() for name, future in futures.items()}


def _assert_one_line_error(run: Run, code: int, *fragments: str) -> str:
    assert run.returncode == code, run
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("cache-dit-metrics-cli: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert run.stdout == ""
    return lines[0]


@pytest.mark.parametrize(
    "case,code,fragments",
    [
        ("missing_path", 1, ["no such file or directory: nowhere"]),
        ("no_images", 1, ["no image files", "empty"]),
        ("unreadable_image", 1, ["cannot read image", "0.png"]),
        ("unreadable_video", 1, ["cannot open video bad.mp4"]),
        ("mixed_flags", 2, ["either images (-i1/-i2) or videos (-v1/-v2)"]),
        ("sizes", 1, ["0.png: sizes differ", "--resize"]),
        ("missing_weights", 1, ["not found at nowhere.pth", "pt_inception-2015-12-05-6726825d.pth in "]),
        ("missing_weights_all_and_fid", 1, ["not found at nowhere.pth"]),
        ("video_as_image", 2, ["-i1 v.avi is a video; compare videos with -v1/--video-true"]),
        ("image_as_video", 2, ["-v1 a/0.png is an image; compare images with -i1/--img-true"]),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(runs, case, code, fragments):
    _assert_one_line_error(runs[case], code, *fragments)


def test_resize_and_json(runs):
    run = runs["resize_json"]
    assert run.returncode == 0, run
    report = json.loads(run.stdout)
    assert report["kind"] == "image"
    assert report["metrics"]["psnr"] == {"value": "inf", "n": 3, "n_identical": 3}  # strict JSON: "inf"
    assert report["metrics"]["ssim"]["value"] == pytest.approx(1.0)
    assert report["metrics"]["mse"] == {"value": 0.0, "n": 3}
    assert report["only_in_test"] == ["extra.png"]
    # the skipped file is reported as a one-line warning, the only thing on stderr
    assert run.stderr.strip().splitlines() == [
        "cache-dit-metrics-cli: warning: skipping 0 image(s) only in a and 1 only in big_extra (extra.png); "
        "comparing 3 pairs"
    ]


def test_video_json_closed_form(runs):
    run = runs["video_json"]
    assert run.returncode == 0, run
    report = json.loads(run.stdout)
    assert report["kind"] == "video"
    assert report["metrics"]["psnr"]["value"] == pytest.approx(10 * math.log10(255**2 / OFFSET**2))
    assert report["metrics"]["mse"] == {"value": pytest.approx(OFFSET**2), "n": 3}


def test_installed_entry_point_prints_a_table_with_every_metric(runs):
    run = runs["all_table_entry_point"]
    assert run.returncode == 0, run
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines()}
    assert float(rows["psnr"][1]) == pytest.approx(10 * math.log10(255**2 / OFFSET**2), rel=1e-5)
    assert float(rows["mse"][1]) == pytest.approx(OFFSET**2)
    assert 0.0 < float(rows["ssim"][1]) < 1.0
    assert float(rows["fid"][1]) > 0.0
    assert rows["fid"][2] == "3"
    # the rank-deficiency warning, one line, once (not once per side)
    warnings = run.stderr.strip().splitlines()
    assert len(warnings) == 1 and "warning: FID from 3 images with dims=64" in warnings[0]


def test_all_without_fid_weights_prints_the_other_metrics_and_marks_fid_unavailable(runs):
    for name in ("all_no_weights", "all_no_weights_json"):
        assert runs[name].returncode == 0, runs[name]
        assert runs[name].stderr == ""
    rows = {line.split()[0]: line for line in runs["all_no_weights"].stdout.splitlines()}
    assert float(rows["mse"].split()[1]) == pytest.approx(OFFSET**2)
    assert float(rows["psnr"].split()[1]) == pytest.approx(10 * math.log10(255**2 / OFFSET**2), rel=1e-5)
    assert "ssim" in rows
    assert rows["fid"].split()[1:3] == ["-", "-"]
    assert "unavailable (no Inception weights: FID Inception weights not found at nowhere.pth" in rows["fid"]
    report = json.loads(runs["all_no_weights_json"].stdout)
    assert report["metrics"]["fid"]["value"] is None
    assert report["metrics"]["fid"]["unavailable"].startswith("unavailable (no Inception weights: ")
    assert report["metrics"]["mse"]["value"] == pytest.approx(OFFSET**2)


# ----------------------------------------------------------------------------------------------------------
# In process: usage errors and --help return instead of exiting
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["psnr", "-i1", "a"], "give -i1/--img-true and -i2/--img-test"),
        (["psnr", "-v1", "a.mp4"], "videos need both"),
        (["psnr", "-i1", "a", "-i2", "b", "-v1", "c", "-v2", "d"], "not both"),
        (["nope", "-i1", "a", "-i2", "b"], "invalid choice: 'nope'"),
        (["fid", "-i1", "a", "-i2", "b", "--batch-size", "0"], "expected an integer >= 1"),
    ],
)
def test_usage_errors_return_2_with_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and fragment in captured.err


def test_help_returns_0(capsys):
    assert main(["--help"]) == 0
    assert "--inception-weights" in capsys.readouterr().out


def test_table_in_process(tmp_path, capsys):
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    assert main(["psnr", "ssim", "-i1", str(tmp_path / "x.png"), "-i2", str(tmp_path / "x.png")]) == 0
    out = capsys.readouterr().out
    assert "psnr    inf" in out and "1 identical pairs (PSNR inf) left out of the mean" in out
