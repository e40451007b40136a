"""PSNR/SSIM/MSE on arrays, image files and directories: closed forms, pairing, sizes, errors."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cache_dit.metrics import (
    PairwiseMetric,
    compute_mse,
    compute_psnr,
    compute_ssim,
    measure_images,
)


def _image(seed: int, height: int = 24, width: int = 32) -> np.ndarray:
    # values in [20, 200]: an offset of up to +-20 never clips
    return np.random.default_rng(seed).integers(20, 201, (height, width, 3), dtype=np.uint8)


def _psnr(offset: float, peak: float = 255.0) -> float:
    return 10 * math.log10(peak**2 / offset**2)


def _write(directory: Path, images: dict[str, np.ndarray]) -> Path:
    for name, image in images.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(directory / name), image)
    return directory


# ----------------------------------------------------------------------------------------------------------
# Closed forms on arrays
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [1, 7, 20])
def test_constant_offset_closed_form_uint8(offset):
    true = _image(0)
    test = true + np.uint8(offset)
    assert compute_psnr(true, test) == (pytest.approx(_psnr(offset)), 1)
    assert compute_mse(true, test) == (pytest.approx(offset**2), 1)
    # a uniform shift moves only the luminance term of SSIM: high, but below 1
    ssim, n = compute_ssim(true, test)
    assert n == 1 and 0.5 < ssim < 1.0


def test_constant_offset_closed_form_float_in_unit_range():
    true = _image(1).astype(np.float64) / 255.0
    test = true + 7 / 255.0
    assert compute_psnr(true, test)[0] == pytest.approx(_psnr(7))  # value range 1.0 for floats
    assert compute_mse(true, test)[0] == pytest.approx((7 / 255.0) ** 2)


def test_identical_images():
    image = _image(2)
    assert compute_psnr(image, image) == (math.inf, 1)
    assert compute_ssim(image, image) == (pytest.approx(1.0), 1)
    assert compute_mse(image, image) == (0.0, 1)


def test_batch_means_over_pairs_and_psnr_leaves_identical_pairs_out():
    true = np.stack([_image(seed) for seed in range(4)])  # (4, H, W, 3)
    offsets = [3, 6, 9, 0]  # the last pair is identical
    test = true + np.array(offsets, dtype=np.uint8)[:, None, None, None]
    results = measure_images(true, test)
    assert results[PairwiseMetric.MSE].value == pytest.approx(np.mean([o**2 for o in offsets]))
    psnr = results[PairwiseMetric.PSNR]
    assert psnr.value == pytest.approx(np.mean([_psnr(o) for o in offsets[:3]]))
    assert (psnr.n_pairs, psnr.n_identical) == (4, 1)
    assert compute_psnr(true, test) == (pytest.approx(psnr.value), 4)


def test_psnr_is_inf_only_when_every_pair_is_identical():
    batch = np.stack([_image(seed) for seed in range(3)])
    result = measure_images(batch, batch.copy(), ["psnr"])[PairwiseMetric.PSNR]
    assert (result.value, result.n_pairs, result.n_identical) == (math.inf, 3, 3)


def test_grayscale_arrays():
    true = _image(3)[:, :, 0]  # (H, W)
    assert compute_psnr(true, true + np.uint8(5))[0] == pytest.approx(_psnr(5))
    assert compute_ssim(true, true)[0] == pytest.approx(1.0)


def test_array_errors():
    image = _image(4)
    with pytest.raises(ValueError, match="dtypes differ"):
        compute_mse(image, image.astype(np.float32))
    with pytest.raises(ValueError, match="batch sizes differ"):
        compute_mse(np.stack([image, image]), image)
    with pytest.raises(TypeError, match="array with an array"):
        compute_mse(image, "some/dir")
    with pytest.raises(ValueError, match="channel counts differ"):
        compute_mse(image, image[:, :, :1])
    with pytest.raises(ValueError, match="unknown metric 'psnrr'"):
        measure_images(image, image, ["psnrr"])
    with pytest.raises(ValueError, match="nothing to compare"):
        compute_mse(np.zeros((0, 8, 8, 3), np.uint8), np.zeros((0, 8, 8, 3), np.uint8))


# ----------------------------------------------------------------------------------------------------------
# Sizes
# ----------------------------------------------------------------------------------------------------------


def test_mismatched_sizes_raise_unless_resize():
    true = _image(5)
    test = cv2.resize(true, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)  # (48, 64, 3)
    with pytest.raises(ValueError, match=r"image 0: sizes differ, true is 32x24 and test is 64x48.*resize"):
        compute_psnr(true, test)
    # area-averaging 2x2 blocks of equal pixels gives the original back exactly
    assert compute_psnr(true, test, resize=True) == (math.inf, 1)
    assert compute_mse(true, test, resize=True) == (0.0, 1)
    smaller = true[::2, ::2]
    assert compute_ssim(true, smaller, resize=True)[1] == 1  # enlarging works too


def test_mismatched_sizes_in_directories_name_the_pair(tmp_path):
    _write(tmp_path / "a", {"x.png": _image(6)})
    _write(tmp_path / "b", {"x.png": _image(6, height=20)})
    with pytest.raises(ValueError, match="x.png: sizes differ"):
        compute_mse(tmp_path / "a", tmp_path / "b")
    assert compute_mse(tmp_path / "a", tmp_path / "b", resize=True)[1] == 1


# ----------------------------------------------------------------------------------------------------------
# Files and directories
# ----------------------------------------------------------------------------------------------------------


def test_single_files(tmp_path):
    true = _image(7)
    _write(tmp_path, {"true.png": true, "test.png": true + np.uint8(4)})
    assert compute_psnr(tmp_path / "true.png", str(tmp_path / "test.png")) == (pytest.approx(_psnr(4)), 1)


def test_directories_pair_by_relative_path_not_position(tmp_path):
    offsets = {"x.png": 2, "y.png": 5, "sub/z.png": 11}
    true_images = {name: _image(seed) for seed, name in enumerate(offsets)}
    _write(tmp_path / "true", true_images)
    # written in reverse order, plus an extra file that sorts first: positional pairing would be wrong
    test_images = {name: true_images[name] + np.uint8(offsets[name]) for name in reversed(list(offsets))}
    test_images["a_extra.png"] = _image(99)
    _write(tmp_path / "test", test_images)

    with pytest.warns(UserWarning, match=r"skipping 0 image\(s\) only in .* and 1 only in .*a_extra.png"):
        results = measure_images(tmp_path / "true", tmp_path / "test")
    mse = results[PairwiseMetric.MSE]
    assert mse.value == pytest.approx(np.mean([o**2 for o in offsets.values()]))
    assert mse.n_pairs == 3
    assert (mse.only_in_true, mse.only_in_test) == ((), ("a_extra.png",))
    assert results[PairwiseMetric.PSNR].value == pytest.approx(np.mean([_psnr(o) for o in offsets.values()]))


def test_identical_directories(tmp_path):
    images = {f"{i}.png": _image(i) for i in range(3)}
    _write(tmp_path / "a", images)
    _write(tmp_path / "b", images)
    results = measure_images(tmp_path / "a", tmp_path / "b")
    assert results[PairwiseMetric.PSNR].value == math.inf
    assert results[PairwiseMetric.SSIM].value == pytest.approx(1.0)
    assert results[PairwiseMetric.MSE].value == 0.0


def test_directory_errors(tmp_path):
    _write(tmp_path / "a", {"x.png": _image(0)})
    _write(tmp_path / "b", {"y.png": _image(0)})
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")

    with pytest.raises(ValueError, match="no image in .* has a counterpart"):
        compute_psnr(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ValueError, match="no image files .* found in"):
        compute_psnr(tmp_path / "a", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        compute_psnr(tmp_path / "a", tmp_path / "missing")
    with pytest.raises(ValueError, match="a directory with a directory"):
        compute_psnr(tmp_path / "a", tmp_path / "a" / "x.png")
    with pytest.raises(ValueError, match="cannot read image .*x.png"):
        compute_psnr(tmp_path / "a", tmp_path / "bad")
