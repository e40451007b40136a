"""`cache-dit-generate` end to end on the tiny pipelines (no weights), its errors, and its start-up time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from cache_dit.generate import main
from cache_dit.metrics import compute_psnr, compute_ssim
from cache_dit.testing.cases import CASES

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_help_is_fast_and_does_not_import_torch():
    code = (
        "import sys\nfrom cache_dit.generate import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert "--model-path" in out.stdout and "--tiny" in out.stdout and "--compare" in out.stdout
    assert out.stdout.strip().endswith("NO TORCH")
    assert elapsed < 1.0, f"--help took {elapsed:.2f} s"


def test_tiny_flux_end_to_end_with_compare(tmp_path):
    out = tmp_path / "flux.png"
    argv = ["--tiny", "flux", "--steps", "6", "--Fn", "1", "--Bn", "1", "--rdt", "0.5", "--warmup-steps", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "cache_dit.generate", *argv, "--compare", "--quiet", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    stdout = result.stdout
    assert "[cond] steps: 6, cached: 4 [2, 3, 4, 5]" in stdout
    assert re.search(r"time: \d+\.\d\d s cached \(one run\)", stdout)
    line = next(line for line in stdout.splitlines() if line.startswith("uncached:"))
    speedup, psnr, ssim = re.search(
        r"speedup (\d+\.\d\d)x; PSNR (\d+\.\d\d) dB; SSIM (\d\.\d{4})", line
    ).groups()
    reference = tmp_path / "flux_uncached.png"
    assert np.asarray(Image.open(out)).shape == (32, 32, 3)
    # the printed quality is cache_dit.metrics on exactly the images written
    assert float(psnr) == pytest.approx(compute_psnr(str(reference), str(out))[0], abs=0.006)
    assert float(ssim) == pytest.approx(compute_ssim(str(reference), str(out))[0], abs=6e-5)
    assert float(psnr) < 60  # 4 of 6 steps cached on a random model: the images really differ
    assert float(speedup) > 0


def test_tiny_wan_writes_a_video(tmp_path, capsys):
    out = tmp_path / "wan.mp4"
    argv = ["--tiny", "wan", "--steps", "4", "--Fn", "1", "--Bn", "1", "--rdt", "0.5", "--warmup-steps", "2"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "[cond] steps: 4, cached: 2 [2, 3]" in stdout and "[uncond] steps: 4, cached: 2 [2, 3]" in stdout
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 5  # the tiny Wan case makes 5 frames


def test_tiny_list_shows_every_case(capsys):
    assert main(["--tiny", "list"]) == 0
    assert capsys.readouterr().out.split() == list(CASES)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tiny", "flux", "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
        (["--steps", "4"], "one of the arguments --model-path --tiny is required"),
        (["--tiny", "flux", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--tiny", "nope"], "--tiny 'nope' is not a tiny family; available: flux, flux_fill, wan"),
        (["--tiny", "flux", "--cache", "turbo"], "cache_type='turbo' is not a known cache type"),
        (["--tiny", "flux", "--order", "1"], "--order needs --taylorseer"),
        (["--tiny", "flux", "--rdt", "-1"], "residual_diff_threshold must be >= 0"),
        (["--tiny", "flux", "--Fn", "5", "--Bn", "5"], "5 + 5 = 10 exceeds the 6 transformer blocks"),
        (
            ["--model-path", "/nonexistent/pipe", "--prompt", "x"],
            "--model-path /nonexistent/pipe: no such folder",
        ),
        (["--model-path", "/nonexistent/pipe"], "--model-path needs --prompt"),
        (["--tiny", "flux", "--prompt", "a cat"], "--prompt apply to --model-path only"),
        (["--tiny", "flux", "--out", "x.bmp"], "--out x.bmp: unknown file type"),
        (["--tiny", "flux", "--calibrate", "1"], "--calibrate: expected a finite speedup > 1, got 1"),
        (["--tiny", "flux", "--calibrate", "2", "--Fn", "1"], "--Fn: with --calibrate / --calibration-file"),
        (["--tiny", "flux", "--calibrate", "2", "--taylorseer"], "--taylorseer: with --calibrate"),
        (["--tiny", "flux", "--calibration-file", "/nonexistent/c.json"], "no such file (add --calibrate"),
        (
            ["--tiny", "flux", "--steps", "4", "--calibrate", "9"],
            "--calibrate 9.0: out of reach, --steps 4 give at most 4x",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # pragma: no cover - main catches argparse's exits
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("cache-dit-generate: error: ") and message in err[0], err


def test_unsupported_pipeline_exits_2(tmp_path, capsys):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        norm_num_groups=1,
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    assert main(["--model-path", str(tmp_path / "ddpm"), "--prompt", "x", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # diffusers may log its own loading notes first
    ours = [line for line in err if line.startswith("cache-dit-generate:")]
    assert ours == [
        "cache-dit-generate: error: unsupported pipeline DDPMPipeline: it has no `transformer` (a DiT) to cache"
    ]
    assert err[-1] == ours[0]


def test_calibrate_then_reuse_the_stored_options(tmp_path, capsys):
    """--calibrate runs budget mode on this run's inputs and stores the options; the file alone reuses them (no
    new calibration) and gives the same image."""
    import json

    store, first, second = tmp_path / "cal.json", tmp_path / "a.png", tmp_path / "b.png"
    argv = ["--tiny", "flux", "--steps", "8", "--quiet", "--calibration-file", str(store)]
    assert main([*argv, "--calibrate", "2", "--out", str(first)]) == 0
    out = capsys.readouterr().out
    (entry,) = json.loads(store.read_text()).values()
    steps = entry["options"]["compute_steps"]
    assert entry["speedup"] == 2.0 and len(steps) == 4
    assert f"compute_steps={steps}" in out and "residual_diff_threshold" not in out
    assert f"cached: 4 {sorted(set(range(8)) - set(steps))}" in out
    assert main([*argv, "--out", str(second)]) == 0
    out = capsys.readouterr().out
    assert f"calibrated options for 8 steps read from {store}" in out
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    assert main([*argv[:4], "--calibration-file", str(store), "--steps", "6", "--out", str(second)]) == 2
    assert "holds no calibration for" in capsys.readouterr().err
