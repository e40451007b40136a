"""Video PSNR/SSIM/MSE, frame by frame, on tiny videos written by OpenCV.

Closed forms use FFV1 in .avi (lossless: frames read back bit-exact); the lossy 'mp4v' MP4 is only compared
with itself, where the decoded frames are equal whatever the codec lost.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cache_dit.metrics import (
    PairwiseMetric,
    compute_video_mse,
    compute_video_psnr,
    compute_video_ssim,
    measure_videos,
)

HEIGHT, WIDTH = 32, 48


def _frames(seed: int, count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(20, 201, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)]


def _write_video(path: Path, frames: list[np.ndarray], fourcc: str = "FFV1") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 5.0, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_lossless_video_constant_offset_closed_form(tmp_path):
    frames = _frames(0)
    true = _write_video(tmp_path / "true.avi", frames)
    test = _write_video(tmp_path / "test.avi", [f + np.uint8(6) for f in frames])
    assert compute_video_psnr(true, test) == (pytest.approx(10 * math.log10(255**2 / 36)), 3)
    assert compute_video_mse(true, test) == (pytest.approx(36.0), 3)


def test_lossy_mp4_compared_with_itself(tmp_path):
    video = _write_video(tmp_path / "v.mp4", _frames(1, count=4), fourcc="mp4v")
    results = measure_videos(video, video)
    assert results[PairwiseMetric.PSNR].value == math.inf
    assert results[PairwiseMetric.PSNR].n_identical == 4
    assert results[PairwiseMetric.SSIM].value == pytest.approx(1.0)
    assert compute_video_mse(video, video) == (0.0, 4)
    assert compute_video_ssim(video, video)[1] == 4


def test_directories_of_videos_pair_by_name_and_count_frames(tmp_path):
    a, b = _frames(2, count=2), _frames(3, count=3)
    _write_video(tmp_path / "true" / "a.avi", a)
    _write_video(tmp_path / "true" / "b.avi", b)
    _write_video(tmp_path / "test" / "b.avi", [f + np.uint8(2) for f in b])
    _write_video(tmp_path / "test" / "a.avi", [f + np.uint8(4) for f in a])
    _write_video(tmp_path / "test" / "extra.avi", a)
    with pytest.warns(UserWarning, match=r"1 only in .*extra.avi"):
        mse, n = compute_video_mse(tmp_path / "true", tmp_path / "test")
    assert n == 5  # frames over both pairs
    assert mse == pytest.approx((2 * 16 + 3 * 4) / 5)


def test_frame_size_mismatch_and_resize(tmp_path):
    frames = _frames(4)
    true = _write_video(tmp_path / "true.avi", frames)
    big = [cv2.resize(f, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST) for f in frames]
    test = _write_video(tmp_path / "test.avi", big)
    with pytest.raises(ValueError, match=r"true.avi vs .*test.avi\[frame 0\]: sizes differ"):
        compute_video_psnr(true, test)
    assert compute_video_psnr(true, test, resize=True) == (math.inf, 3)


def test_video_errors(tmp_path):
    true = _write_video(tmp_path / "true.avi", _frames(5, count=3))
    short = _write_video(tmp_path / "short.avi", _frames(5, count=2))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="different frame counts.*short.avi ends after 2 frames"):
        compute_video_mse(true, short)
    with pytest.raises(ValueError, match="cannot open video .*bad.mp4"):
        compute_video_mse(true, bad)
    with pytest.raises(ValueError, match="no video files"):
        compute_video_mse(tmp_path / "empty", tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        compute_video_mse(true, tmp_path / "missing.avi")
