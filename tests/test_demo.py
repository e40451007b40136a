"""`python -m cache_dit.demo` end to end (subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cache_dit.demo import DIFF_GAIN, LABEL_HEIGHT, SCALE

BLOCKS = 12  # the testbed: 4 dual + 8 single blocks


def test_demo_prints_the_table_and_writes_the_grid(tmp_path):
    out = tmp_path / "grid.png"
    result = subprocess.run(
        [sys.executable, "-m", "cache_dit.demo", "--steps", "16", "--repeats", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "trained testbed" in lines[0] and "2 timing round(s)" in lines[0]
    assert lines[1].split() == ["config", "time", "(s)", "wall-clock", "blocks", "cached", "PSNR", "(dB)"]
    rows = {line.split("  ")[0]: [c.strip() for c in line.split("  ") if c.strip()] for line in lines[2:6]}
    assert list(rows) == [
        "uncached",
        "FBCache t=0.08",
        "DBCache F1B0 t=0.12 + TaylorSeer(1)",
        "DBPrune F1B1 t=0.08",
    ]
    assert rows["uncached"][2:] == ["1.00x", "1.00x", "-", "inf"]
    # block speedup of F1B0: a cached step runs 1 of the 12 blocks
    for name in ("FBCache t=0.08", "DBCache F1B0 t=0.12 + TaylorSeer(1)"):
        k, steps = map(int, re.match(r"(\d+)/(\d+) steps", rows[name][4]).groups())
        assert steps == 16 and k > 0
        assert rows[name][3] == f"{BLOCKS * steps / (BLOCKS * steps - (BLOCKS - 1) * k):.2f}x"
    pruned = float(rows["DBPrune F1B1 t=0.08"][4].split("%")[0])
    assert float(rows["DBPrune F1B1 t=0.08"][3][:-1]) == pytest.approx(1 / (1 - pruned / 100), abs=0.02)
    assert "median of 2 interleaved round(s)" in lines[6] and "blocks: transformer block calls" in lines[6]

    grid = np.asarray(Image.open(out).convert("RGB")).astype(np.int16)
    cell = 64 * SCALE
    assert grid.shape == (
        LABEL_HEIGHT + 7 * (LABEL_HEIGHT + cell),
        4 * cell,
        3,
    )  # uncached + 3 x (method, diff)

    def row(i: int) -> np.ndarray:
        top = LABEL_HEIGHT + i * (LABEL_HEIGHT + cell) + LABEL_HEIGHT
        return grid[top : top + cell]

    reference = row(0)
    for method in range(3):  # the difference rows are |method - uncached| x gain of the rows above them
        cached, diff = row(1 + 2 * method), row(2 + 2 * method)
        assert np.array_equal(diff, np.clip(np.abs(cached - reference) * DIFF_GAIN, 0, 255))
        assert diff.max() > 0
    label_band = grid[LABEL_HEIGHT : 2 * LABEL_HEIGHT]
    assert (label_band < 128).any()  # the labels are drawn


def test_demo_rejects_bad_steps():
    result = subprocess.run(
        [sys.executable, "-m", "cache_dit.demo", "--steps", "1"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "--steps must be >= 2" in result.stderr
