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
import numpy as np
import pytest
import torch

from cache_dit.metrics import compute_psnr

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("run_*.py"))
FORCED = ["--tiny", "--compare", "--rdt", "100"]  # tiny defaults F1B1, warmup 2: steps 2-7 cached

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
    runs = {script: [*FORCED, "--out-dir", str(out_dir / script)] for script in SCRIPTS}
    runs["run_wan_i2v.py flf2v"] = [*FORCED, "--tiny-case", "wan_flf2v", "--out-dir", str(out_dir / "flf2v")]
    runs["run_cogvideox.py 1.5"] = [*FORCED, "--tiny-case", "cogvideox1.5", "--out-dir", str(out_dir / "1.5")]
    runs["run_mochi.py taylorseer"] = [
        "--tiny", "--cache", "DBCache", "--Fn", "1", "--Bn", "1", "--rdt", "100", "--taylorseer", "--order", "1",
        "--max-continuous-cached-steps", "1", "--out-dir", str(out_dir / "ts"),
    ]  # fmt: skip
    runs["run_hunyuan_video.py dbprune"] = [
        "--tiny",
        "--cache",
        "DBPrune",
        "--rdt",
        "100",
        "--out-dir",
        str(out_dir),
    ]
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
    return runs


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out_dir = tmp_path_factory.mktemp("examples")
    runs = _runs(out_dir)
    plan = [[str(EXAMPLES / key.split()[0]), argv] for key, argv in runs.items()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
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


def _psnr(stdout: str) -> float:
    match = re.search(r"speedup: ([0-9.]+)x .*PSNR vs uncached: ([0-9.inf]+) dB", stdout)
    assert match, stdout
    return float(match.group(2))


@pytest.mark.parametrize("key", [*SCRIPTS, "run_wan_i2v.py flf2v", "run_cogvideox.py 1.5"])
def test_tiny_compare_caches_and_writes_the_outputs(results, key):
    run = results[key]
    assert run["traceback"] is None and run["code"] == 0, run
    stdout = run["stdout"]
    assert "cache_type: DBCache" in stdout
    assert "steps: 8, cached: 6 [2, 3, 4, 5, 6, 7]" in stdout
    psnr = _psnr(stdout)
    assert math.isfinite(psnr) and psnr > 10  # the forced cache changes the output, within reason
    files = re.findall(r"^\w+: [0-9.]+s -> (\S+)$", stdout, flags=re.MULTILINE)
    assert len(files) == 2 and all(Path(f).stat().st_size > 0 for f in files)
    uncached, cached = sorted(files, key=lambda f: "uncached" in f, reverse=True)
    if uncached.endswith(".png"):  # lossless: the PSNR of the files is the one printed
        a, b = cv2.imread(uncached), cv2.imread(cached)
        assert a.shape[2] == 3 and a.shape == b.shape
        assert compute_psnr(a, b)[0] == pytest.approx(psnr, abs=0.01)
    else:
        capture = cv2.VideoCapture(cached)
        frames = 0
        while capture.read()[0]:
            frames += 1
        assert frames > 1


def test_taylorseer_and_dbprune_flags(results):
    taylor = results["run_mochi.py taylorseer"]
    assert taylor["code"] == 0 and "[cond_uncond] steps: 8, cached: 3 [2, 4, 6]" in taylor["stdout"]
    prune = results["run_hunyuan_video.py dbprune"]
    assert prune["code"] == 0, prune
    # tiny defaults F1B1, warmup 2: 4 of 6 blocks pruned in steps 2-7
    assert "cache_type: DBPrune" in prune["stdout"] and "pruned ratio: 50.00%" in prune["stdout"]


@pytest.mark.parametrize(
    "key,message",
    [
        ("run_flux.py missing weights", "is neither a local directory nor a hub id"),
        ("run_wan.py weights not on this machine", "cannot load WanPipeline weights from"),
        ("run_mochi.py option of another cache", "max_cached_steps"),
        ("run_flux.py Fn+Bn too large", "Fn_compute_blocks"),
        ("run_wan.py unknown cache", "--cache"),
        ("run_flux_fill.py no image", None),
    ],
)
def test_user_errors_are_one_line_and_exit_2(results, key, message):
    run = results[key]
    assert run["traceback"] is None, run["traceback"]
    assert run["code"] == 2, run
    lines = run["stderr"].strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], run["stderr"]
    if message is not None:
        assert message in lines[0]


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import common
        from run_flux import EXAMPLE
    finally:
        sys.path.remove(str(EXAMPLES))
    args = common.build_parser(EXAMPLE).parse_args(["--device", "cuda"])
    with pytest.raises(common.ExampleError, match="CUDA is not available"):
        common._load(EXAMPLE, args)
    assert np.array_equal(common.to_uint8(np.array([0.0, 0.5, 1.0, 2.0])), np.array([0, 128, 255, 255]))
