"""Metric warnings point at the caller's line, not at the library's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cache_dit.metrics import compute_psnr


def test_skipped_files_warning_points_at_the_caller(tmp_path):
    image = np.full((8, 8, 3), 100, np.uint8)
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        cv2.imwrite(str(tmp_path / side / "0.png"), image)
    cv2.imwrite(str(tmp_path / "b" / "extra.png"), image)
    with pytest.warns(UserWarning, match="skipping 0 image") as record:
        assert compute_psnr(str(tmp_path / "a"), str(tmp_path / "b")) == (float("inf"), 1)
    assert len(record) == 1 and record[0].filename == __file__
