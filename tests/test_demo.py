"""`python -m cache_dit.demo` end to end (subprocess)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image


def test_demo_prints_the_table_and_writes_the_grid(tmp_path):
    out = tmp_path / "grid.png"
    result = subprocess.run(
        [sys.executable, "-m", "cache_dit.demo", "--steps", "10", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "trained testbed" in lines[0]
    rows = [line.split("  ")[0] for line in lines[2:6]]
    assert rows == [
        "uncached",
        "FBCache t=0.08",
        "DBCache F1B0 t=0.12 + TaylorSeer(1)",
        "DBPrune F1B1 t=0.08",
    ]
    grid = np.asarray(Image.open(out))
    assert grid.shape == (4 * 64 * 2, 4 * 64 * 2, 3)  # 4 configs x 4 samples of 64x64, 2x upscaled


def test_demo_rejects_bad_steps():
    result = subprocess.run(
        [sys.executable, "-m", "cache_dit.demo", "--steps", "1"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "--steps must be >= 2" in result.stderr
