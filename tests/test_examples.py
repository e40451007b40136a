"""Every example runs end to end with --tiny; bad flags and missing weights end with one line and exit code 2.

All runs share one subprocess (importing torch and diffusers once): each example is executed as `__main__`
with its own argv, and its exit code, stdout and stderr are collected.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

from cache_dit.metrics import compute_psnr

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("run_*.py"))
FORCED = ["--tiny", "--compare", "--rdt", "100", "--quiet"]  # tiny defaults F1B1, warmup 2: steps 2-7 cached

DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
sys.path.insert(0, sys.argv[1])
results = []
for script, argv in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [script, *argv]
    code, tb = 0, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit:
            code = exit.code
        except BaseException:
            code, tb = 1, traceback.format_exc()
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "traceback": tb})
print(json.dumps(results))
"""


def _runs(out_dir: Path) -> dict[str, list[str]]:
    # half of the scripts use --out, the other half the older --out-dir (a hidden alias)
    runs = {
        script: [*FORCED, "--out", str(out_dir / script / "out")]
        if i % 2
        else [*FORCED, "--out-dir", str(out_dir / script)]
        for i, script in enumerate(SCRIPTS)
    }
    runs["run_wan_i2v.py flf2v"] = [
        *FORCED,
        "--tiny",
        "wan_flf2v",
        "--out",
        str(out_dir / "flf2v" / "wan.mp4"),
    ]
    # the older --tiny-case spelling still picks the case
    runs["run_cogvideox.py 1.5"] = [*FORCED, "--tiny-case", "cogvideox1.5", "--out-dir", str(out_dir / "1.5")]
    runs["run_mochi.py taylorseer"] = [
        "--tiny", "--cache", "DBCache", "--Fn", "1", "--Bn", "1", "--rdt", "100", "--taylorseer", "--order", "1",
        "--max-continuous-cached-steps", "1", "--quiet", "--out-dir", str(out_dir / "ts"),
    ]  # fmt: skip
    runs["run_hunyuan_video.py dbprune"] = [
        "--tiny",
        "--cache",
        "DBPrune",
        "--rdt",
        "100",
        "--quiet",
        "--out-dir",
        str(out_dir),
    ]
    runs["run_flux.py calibrate"] = [
        "--tiny",
        "--calibrate",
        "2",
        "--quiet",
        "--out",
        str(out_dir / "cal" / "flux.png"),
    ]
    runs["run_flux.py default output folder"] = ["--tiny", "--steps", "2", "--quiet"]  # cwd: out_dir
    runs["run_flux.py missing weights"] = ["--model-path", str(out_dir / "no-such-model"), "--device", "cpu"]
    runs["run_wan.py weights not on this machine"] = [
        "--model-path",
        "no-such-org/no-such-model",
        "--device",
        "cpu",
    ]
    runs["run_mochi.py option of another cache"] = [
        "--model-path", str(out_dir / "nothing"), "--cache", "DBPrune", "--max-cached-steps", "2",
    ]  # fmt: skip
    runs["run_flux.py Fn+Bn too large"] = ["--tiny", "--Fn", "8", "--Bn", "8"]
    runs["run_wan.py unknown cache"] = ["--tiny", "--cache", "teacache"]
    runs["run_flux_fill.py no image"] = ["--model-path", str(ROOT), "--device", "cpu"]  # loads nothing first
    runs["run_flux.py tiny on a missing GPU"] = ["--tiny", "--device", "cuda"]
    runs["run_flux.py another example's case"] = ["--tiny", "wan"]
    runs["run_wan.py --image is not a Wan T2V flag"] = ["--tiny", "--image", "x.png"]
    runs["run_flux_fill.py --image with --tiny"] = ["--tiny", "--image", "x.png"]
    runs["parallel_cache.py without torchrun"] = ["--tiny"]
    return runs


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out_dir = tmp_path_factory.mktemp("examples")
    runs = _runs(out_dir)
    plan = [[str(EXAMPLES / key.split()[0]), argv] for key, argv in runs.items()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(EXAMPLES), json.dumps(plan)],
        capture_output=True,
        text=True,
        env=env,
        cwd=out_dir,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    collected = dict(zip(runs, json.loads(done.stdout.splitlines()[-1]), strict=True))
    for value in collected.values():
        value["out_dir"] = out_dir
    return collected


def test_there_is_an_example_per_seed_model():
    assert SCRIPTS == [
        "run_cogvideox.py",
        "run_cogvideox_i2v.py",
        "run_flux.py",
        "run_flux_fill.py",
        "run_hunyuan_video.py",
        "run_mochi.py",
        "run_wan.py",
        "run_wan_i2v.py",
    ]


def _report(stdout: str) -> tuple[float, float, Path, Path]:
    """(block-count speedup, PSNR, cached file, uncached file) from a --compare report."""
    match = re.search(
        r"speedup [0-9.]+x wall-clock, ([0-9.]+)x blocks \(\d+ -> \d+ block calls\); PSNR ([0-9.inf]+) dB; "
        r"SSIM [0-9.]+ \(8-bit frames, before encoding\); cached vs uncached, same seed -> (\S+)$",
        stdout,
        flags=re.MULTILINE,
    )
    assert match, stdout
    cached = re.search(r"^wrote (\S+)$", stdout, flags=re.MULTILINE)
    return float(match.group(1)), float(match.group(2)), Path(cached.group(1)), Path(match.group(3))


@pytest.mark.parametrize("key", [*SCRIPTS, "run_wan_i2v.py flf2v", "run_cogvideox.py 1.5"])
def test_tiny_compare_caches_and_writes_the_outputs(results, key):
    run = results[key]
    assert run["traceback"] is None and run["code"] == 0, run
    stdout = run["stdout"]
    assert "cache_type: DBCache" in stdout
    assert "steps: 8, cached: 6 [2, 3, 4, 5, 6, 7]" in stdout
    blocks, psnr, cached, uncached = _report(stdout)
    # 6 blocks x 8 steps uncached; F1B1 runs 2 of 6 on the 6 cached steps: 48 -> 24 per branch
    assert blocks == 2.0
    assert math.isfinite(psnr) and psnr > 10  # the forced cache changes the output, within reason
    assert cached.stat().st_size > 0 and uncached.stat().st_size > 0
    assert uncached.name == f"{cached.stem}_uncached{cached.suffix}"
    if cached.suffix == ".png":  # lossless: the PSNR of the files is the one printed
        a, b = cv2.imread(str(uncached)), cv2.imread(str(cached))
        assert a.shape[2] == 3 and a.shape == b.shape
        assert compute_psnr(a, b)[0] == pytest.approx(psnr, abs=0.01)
    else:
        capture = cv2.VideoCapture(str(cached))
        frames = 0
        while capture.read()[0]:
            frames += 1
        assert frames > 1


def test_outputs_land_where_the_flags_say(results):
    out_dir = results["run_flux.py"]["out_dir"]
    name = {
        "run_flux.py": "flux.png",
        "run_wan.py": "wan.mp4",
        "run_flux_fill.py": "flux_fill.png",
        "run_mochi.py": "mochi.mp4",
    }
    for script, expected in name.items():
        argv = _runs(out_dir)[script]
        folder = Path(argv[argv.index("--out-dir") + 1]) if "--out-dir" in argv else None
        written = re.search(r"^wrote (\S+)$", results[script]["stdout"], flags=re.MULTILINE).group(1)
        if folder is not None:
            assert written == str(folder / expected)
        else:
            assert (
                written == argv[argv.index("--out") + 1] + Path(expected).suffix
            )  # the kind's suffix is added
    default = results["run_flux.py default output folder"]
    assert default["code"] == 0 and default["stdout"].strip().endswith("wrote outputs/flux.png")
    assert (out_dir / "outputs" / "flux.png").is_file()  # under outputs/ of the current folder, never in it


def test_taylorseer_dbprune_and_calibrate_flags(results):
    taylor = results["run_mochi.py taylorseer"]
    assert taylor["code"] == 0 and "[cond_uncond] steps: 8, cached: 3 [2, 4, 6]" in taylor["stdout"]
    prune = results["run_hunyuan_video.py dbprune"]
    assert prune["code"] == 0, prune
    # tiny defaults F1B1, warmup 2: 4 of 6 blocks pruned in steps 2-7
    assert "cache_type: DBPrune" in prune["stdout"] and "pruned ratio: 50.00%" in prune["stdout"]
    calibrated = results["run_flux.py calibrate"]
    assert calibrated["code"] == 0, calibrated
    steps = json.loads(re.search(r"compute_steps=(\[[\d, ]+\])", calibrated["stdout"]).group(1))
    assert len(steps) == 4 and f"cached: 4 {sorted(set(range(8)) - set(steps))}" in calibrated["stdout"]


@pytest.mark.parametrize(
    "key,message",
    [
        ("run_flux.py missing weights", "no-such-model: no such folder"),
        (
            "run_wan.py weights not on this machine",
            "not in the local Hugging Face cache, and HF_HUB_OFFLINE=1",
        ),
        (
            "run_mochi.py option of another cache",
            "option 'max_cached_steps' does not apply to cache_type=DBPrune",
        ),
        ("run_flux.py Fn+Bn too large", "8 + 8 = 16 exceeds the 6 transformer blocks"),
        ("run_wan.py unknown cache", "cache_type='teacache' is not a known cache type"),
        ("run_flux_fill.py no image", "--image is required (a path or URL) unless --tiny"),
        ("run_flux.py another example's case", "--tiny 'wan': this example's tiny cases are flux"),
        ("run_wan.py --image is not a Wan T2V flag", "unrecognized arguments: --image x.png"),
        ("run_flux_fill.py --image with --tiny", "--image apply to --model-path only"),
        ("parallel_cache.py without torchrun", "run it under torchrun"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(results, key, message):
    run = results[key]
    assert run["traceback"] is None, run["traceback"]
    assert run["code"] == 2, run
    lines = run["stderr"].strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and message in lines[0], run["stderr"]
    assert run["stdout"] == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_tiny_on_a_missing_gpu_says_so(results):
    run = results["run_flux.py tiny on a missing GPU"]
    assert run["code"] == 2
    assert run["stderr"].strip() == (
        "run_flux.py: error: --device cuda: CUDA is not available here (no GPU or driver); use --device cpu"
    )


def test_examples_and_the_cli_share_one_parser():
    """Every flag of cache-dit-generate means the same in every example (plus the example's input flags)."""
    from cache_dit.generate import build_cli_parser

    sys.path.insert(0, str(EXAMPLES))
    try:
        import common
        from run_flux_fill import EXAMPLE
    finally:
        sys.path.remove(str(EXAMPLES))
    cli = build_cli_parser()._option_string_actions
    example = common.build_example_parser(EXAMPLE)._option_string_actions
    assert set(example) - set(cli) == {"--tiny-case", "--image", "--mask"}
    assert set(cli) == set(example) - {"--tiny-case", "--image", "--mask"}
    for flag in cli:
        if flag not in ("--tiny", "--model-path", "-h", "--help", "--version"):
            # the same flag, type and description; the defaults in parentheses are the model's
            assert cli[flag].help.split(" (")[0] == example[flag].help.split(" (")[0], flag
            assert cli[flag].type == example[flag].type and cli[flag].dest == example[flag].dest, flag
