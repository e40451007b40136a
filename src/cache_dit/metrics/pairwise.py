"""Full-reference image and video metrics: PSNR, SSIM and MSE, averaged over pairs.

The per-pair values come from scikit-image (`peak_signal_noise_ratio`, `structural_similarity` with its
defaults: 7x7 uniform window, channels averaged; `mean_squared_error`). Pairs are streamed and only running
sums are kept, so a directory of any size costs the memory of one pair.

Conventions:
- The value range is taken from the true image's dtype: 255 for uint8 (files are always read as uint8),
  the integer maximum for other integer dtypes, 1.0 for floats (expected in [0, 1]). Both sides must have
  the same dtype. MSE is in the units of that range (uint8: 0..255**2).
- Identical pairs: PSNR is infinite, SSIM 1, MSE 0. The mean PSNR is taken over the pairs that differ; the
  identical ones are counted in `n_identical` and left out of the mean. If every pair is identical the mean
  PSNR is `inf`. (Averaging an `inf` would hide every other pair; dropping it keeps the number useful.)
- Video files are compared frame by frame: n is the number of frame pairs, over all paired videos.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from tqdm.auto import tqdm

from .sources import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ImageInput,
    PathLike,
    as_image_batch,
    data_range,
    iter_paired_frames,
    match_size,
    pair_paths,
    read_image,
)


class PairwiseMetric(str, Enum):
    """A full-reference metric computed per pair of images."""

    PSNR = "psnr"  # dB, higher is closer; inf for identical images
    SSIM = "ssim"  # in [-1, 1], 1 for identical images
    MSE = "mse"  # mean squared error in the units of the value range, 0 for identical images


ALL_PAIRWISE = tuple(PairwiseMetric)


@dataclass(frozen=True)
class PairwiseResult:
    """Mean of one metric over the compared pairs.

    Attributes:
        metric: which metric.
        value: the mean over pairs (PSNR: over the pairs that differ, `inf` if none does).
        n_pairs: pairs compared (frames for videos), identical ones included.
        n_identical: pairs that are exactly equal (left out of the PSNR mean).
        only_in_true / only_in_test: relative paths present on one side only (directories), skipped.
    """

    metric: PairwiseMetric
    value: float
    n_pairs: int
    n_identical: int = 0
    only_in_true: tuple[str, ...] = ()
    only_in_test: tuple[str, ...] = ()


@dataclass
class _RunningMean:
    """Sum and count of the finite values of one metric."""

    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    def mean(self) -> float:
        return self.total / self.count if self.count else math.inf


def _pair_value(metric: PairwiseMetric, true: np.ndarray, test: np.ndarray, value_range: float) -> float:
    # Imported here: scikit-image pulls in scipy.stats (~1 s), which a CLI error or FID-only run never needs.
    from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

    if metric is PairwiseMetric.PSNR:
        return float(peak_signal_noise_ratio(true, test, data_range=value_range))
    if metric is PairwiseMetric.SSIM:
        channel_axis = -1 if true.ndim == 3 else None
        return float(structural_similarity(true, test, data_range=value_range, channel_axis=channel_axis))
    return float(mean_squared_error(true, test))


@dataclass
class _Accumulator:
    metrics: tuple[PairwiseMetric, ...]
    resize: bool
    means: dict[PairwiseMetric, _RunningMean] = field(default_factory=dict)
    n_pairs: int = 0
    n_identical: int = 0

    def add(self, name: str, true: np.ndarray, test: np.ndarray) -> None:
        if true.dtype != test.dtype:
            raise ValueError(f"{name}: dtypes differ, true is {true.dtype} and test is {test.dtype}")
        test = match_size(true, test, self.resize, name)
        self.n_pairs += 1
        identical = np.array_equal(true, test)
        self.n_identical += identical
        for metric in self.metrics:
            if metric is PairwiseMetric.PSNR and identical:
                continue  # infinite: counted in n_identical, kept out of the mean
            value = _pair_value(metric, true, test, data_range(true.dtype))
            self.means.setdefault(metric, _RunningMean()).add(value)

    def results(
        self, only_in_true: tuple[str, ...], only_in_test: tuple[str, ...]
    ) -> dict[PairwiseMetric, PairwiseResult]:
        return {
            metric: PairwiseResult(
                metric=metric,
                value=self.means.get(metric, _RunningMean()).mean(),
                n_pairs=self.n_pairs,
                n_identical=self.n_identical,
                only_in_true=only_in_true,
                only_in_test=only_in_test,
            )
            for metric in self.metrics
        }


def _parse_metrics(metrics: Sequence[PairwiseMetric | str]) -> tuple[PairwiseMetric, ...]:
    if isinstance(metrics, (str, PairwiseMetric)):
        metrics = (metrics,)
    parsed = []
    for metric in metrics:
        try:
            parsed.append(PairwiseMetric(metric))
        except ValueError:
            allowed = ", ".join(m.value for m in PairwiseMetric)
            raise ValueError(f"unknown metric {metric!r}; choose from {allowed}") from None
    if not parsed:
        raise ValueError("no metric requested")
    return tuple(dict.fromkeys(parsed))


def _run(
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
    metrics: Sequence[PairwiseMetric | str],
    resize: bool,
    total: int | None,
    unit: str,
    only_in_true: tuple[str, ...] = (),
    only_in_test: tuple[str, ...] = (),
) -> dict[PairwiseMetric, PairwiseResult]:
    accumulator = _Accumulator(metrics=_parse_metrics(metrics), resize=resize)
    # disable=None: a progress bar on a terminal only, so logs and pipes stay clean.
    for name, true, test in tqdm(pairs, total=total, unit=unit, desc="comparing", disable=None, leave=False):
        accumulator.add(name, true, test)
    if accumulator.n_pairs == 0:
        raise ValueError(f"nothing to compare: no {unit} pairs")
    return accumulator.results(only_in_true, only_in_test)


def measure_images(
    true: ImageInput,
    test: ImageInput,
    metrics: Sequence[PairwiseMetric | str] = ALL_PAIRWISE,
    *,
    resize: bool = False,
) -> dict[PairwiseMetric, PairwiseResult]:
    """Compute several metrics in one pass over two images, two directories or two arrays.

    Args:
        true: reference image file, directory of images (paired by relative path), or array
            ((H, W), (H, W, C) or a batch (N, H, W, C); uint8, other integers or floats in [0, 1]).
        test: the image(s) to score, of the same kind as `true`.
        metrics: any of "psnr", "ssim", "mse" (default all three).
        resize: resize each test image to its true image's size instead of raising `ValueError` on a
            size mismatch (default False: a mismatch usually means the wrong files are compared).

    Returns:
        One `PairwiseResult` per metric.
    """
    if isinstance(true, np.ndarray) or isinstance(test, np.ndarray):
        if not (isinstance(true, np.ndarray) and isinstance(test, np.ndarray)):
            raise TypeError(
                f"compare an array with an array, got {type(true).__name__} and {type(test).__name__}"
            )
        true_batch, test_batch = as_image_batch(true, "true"), as_image_batch(test, "test")
        if len(true_batch) != len(test_batch):
            raise ValueError(f"batch sizes differ: true has {len(true_batch)} images, test {len(test_batch)}")
        pairs = ((f"image {i}", true_batch[i], test_batch[i]) for i in range(len(true_batch)))
        return _run(pairs, metrics, resize, total=len(true_batch), unit="image")

    pairing = pair_paths(true, test, IMAGE_EXTENSIONS, kind="image")
    pairs = ((name, read_image(t), read_image(s)) for name, t, s in pairing.pairs)
    return _run(
        pairs, metrics, resize, len(pairing.pairs), "image", pairing.only_in_true, pairing.only_in_test
    )


def measure_videos(
    true: PathLike,
    test: PathLike,
    metrics: Sequence[PairwiseMetric | str] = ALL_PAIRWISE,
    *,
    resize: bool = False,
) -> dict[PairwiseMetric, PairwiseResult]:
    """Compute several metrics frame by frame over two video files or two directories of videos.

    Videos in directories are paired by relative path; paired videos must have the same number of frames.
    `n_pairs` counts frame pairs over all videos. `metrics` and `resize` are as in `measure_images`.
    """
    pairing = pair_paths(true, test, VIDEO_EXTENSIONS, kind="video")

    def frames() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for name, true_video, test_video in pairing.pairs:
            yield from iter_paired_frames(name, true_video, test_video)

    return _run(frames(), metrics, resize, None, "frame", pairing.only_in_true, pairing.only_in_test)


def _single(results: dict[PairwiseMetric, PairwiseResult], metric: PairwiseMetric) -> tuple[float, int]:
    result = results[metric]
    return result.value, result.n_pairs


def compute_psnr(true: ImageInput, test: ImageInput, *, resize: bool = False) -> tuple[float, int]:
    """Mean PSNR (dB) and number of pairs, over two image files, directories or arrays.

    Identical pairs have infinite PSNR and are left out of the mean; `inf` if every pair is identical.
    See `measure_images` for the inputs and `resize`.
    """
    return _single(measure_images(true, test, (PairwiseMetric.PSNR,), resize=resize), PairwiseMetric.PSNR)


def compute_ssim(true: ImageInput, test: ImageInput, *, resize: bool = False) -> tuple[float, int]:
    """Mean SSIM and number of pairs, over two image files, directories or arrays (see `measure_images`)."""
    return _single(measure_images(true, test, (PairwiseMetric.SSIM,), resize=resize), PairwiseMetric.SSIM)


def compute_mse(true: ImageInput, test: ImageInput, *, resize: bool = False) -> tuple[float, int]:
    """Mean MSE and number of pairs, over two image files, directories or arrays (see `measure_images`)."""
    return _single(measure_images(true, test, (PairwiseMetric.MSE,), resize=resize), PairwiseMetric.MSE)


def compute_video_psnr(true: PathLike, test: PathLike, *, resize: bool = False) -> tuple[float, int]:
    """Mean PSNR over frame pairs and number of frame pairs, over two videos or directories of videos.

    Identical frames are left out of the mean as in `compute_psnr`. See `measure_videos`.
    """
    return _single(measure_videos(true, test, (PairwiseMetric.PSNR,), resize=resize), PairwiseMetric.PSNR)


def compute_video_ssim(true: PathLike, test: PathLike, *, resize: bool = False) -> tuple[float, int]:
    """Mean SSIM over frame pairs and number of frame pairs (see `measure_videos`)."""
    return _single(measure_videos(true, test, (PairwiseMetric.SSIM,), resize=resize), PairwiseMetric.SSIM)


def compute_video_mse(true: PathLike, test: PathLike, *, resize: bool = False) -> tuple[float, int]:
    """Mean MSE over frame pairs and number of frame pairs (see `measure_videos`)."""
    return _single(measure_videos(true, test, (PairwiseMetric.MSE,), resize=resize), PairwiseMetric.MSE)
