"""Fréchet Inception Distance (FID) between two sets of images or video frames.

Features come from pytorch-fid's `InceptionV3` (inputs bilinearly resized to 299x299 inside the network, so
images of any size can be compared) and the distance from its `calculate_frechet_distance`, so scores match
pytorch-fid's for the same images and weights. Two things are done here instead of in pytorch-fid:

- The network is built without a download. pytorch-fid's `fid_inception_v3()` always calls
  `load_state_dict_from_url`; we build the same architecture and load the weights file found by
  `find_inception_weights` (explicit path, `$CACHE_DIT_INCEPTION_WEIGHTS`, torch's hub cache, then a
  download attempt), or keep seeded random weights (`weights_path="random"`, for tests only).
- Images are streamed in batches and only the running mean and scatter matrix of the activations are kept
  (Chan et al.'s pairwise update), so memory is O(dims**2) whatever the number of images.

Sets of at most `dims` images give a rank-deficient covariance and a biased, unstable score (a warning says
so): the standard 2048-dim FID wants thousands of images. Torch and pytorch-fid are imported lazily.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm.auto import tqdm

from .._warnings import warn_at_caller
from .sources import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ImageInput,
    PathLike,
    as_image_batch,
    iter_video_frames,
    list_files,
    read_image,
)

if TYPE_CHECKING:
    import torch

INCEPTION_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_ENV = "CACHE_DIT_INCEPTION_WEIGHTS"
RANDOM_WEIGHTS = "random"  # `weights_path` value for a seeded, untrained network: tests and plumbing only
FID_DIMS = (64, 192, 768, 2048)  # feature sizes of InceptionV3's blocks; 2048 is the standard FID


class MissingInceptionWeightsError(FileNotFoundError):
    """The pytorch-fid Inception weights are neither where we looked nor downloadable."""


# ----------------------------------------------------------------------------------------------------------
# Weights and network
# ----------------------------------------------------------------------------------------------------------


def _hub_checkpoint() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


def _where_to_put() -> str:
    return (
        f"put {INCEPTION_WEIGHTS_FILENAME} in {_hub_checkpoint().parent}/, or pass its path as weights_path "
        f"(CLI: --inception-weights PATH), or set {INCEPTION_WEIGHTS_ENV}=PATH"
    )


def find_inception_weights(weights_path: PathLike | None = None, download: bool = True) -> Path:
    """Locate the pytorch-fid Inception weights file.

    Looks at `weights_path`, else `$CACHE_DIT_INCEPTION_WEIGHTS`, else torch's hub cache
    (`torch.hub.get_dir()/checkpoints/pt_inception-2015-12-05-6726825d.pth`, where pytorch-fid caches it);
    if none holds it and `download` is true, downloads it there as pytorch-fid would. An explicit path that
    does not exist raises at once rather than falling back to another place.

    Raises:
        MissingInceptionWeightsError: with one line saying where to put the file.
    """
    source = "weights_path"
    if weights_path is None and os.environ.get(INCEPTION_WEIGHTS_ENV):
        weights_path, source = os.environ[INCEPTION_WEIGHTS_ENV], f"${INCEPTION_WEIGHTS_ENV}"
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise MissingInceptionWeightsError(
                f"FID Inception weights not found at {path} (from {source}); {_where_to_put()}"
            )
        return path

    cached = _hub_checkpoint()
    if cached.is_file():
        return cached
    reason = "downloads disabled"
    if download:
        import torch
        from pytorch_fid.inception import FID_WEIGHTS_URL

        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(FID_WEIGHTS_URL, os.fspath(cached))
            return cached
        except Exception as error:  # no network, proxy, disk full, ...: all mean "not available here"
            reason = f"download failed: {type(error).__name__}: {error}"
    raise MissingInceptionWeightsError(
        f"FID Inception weights {INCEPTION_WEIGHTS_FILENAME} not found in {cached.parent} ({reason}); "
        f"{_where_to_put()}"
    )


def _fid_network(weights: Path | None) -> torch.nn.Module:
    """The network of pytorch-fid's `fid_inception_v3()`, loaded from `weights` (None: left random)."""
    import torch
    import torchvision
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

    # torchvision's Inception with the TF graph's 1008 classes, its blocks swapped for the FID variants.
    network = torchvision.models.inception_v3(
        weights=None, aux_logits=False, num_classes=1008, init_weights=False
    )
    network.Mixed_5b = FIDInceptionA(192, pool_features=32)
    network.Mixed_5c = FIDInceptionA(256, pool_features=64)
    network.Mixed_5d = FIDInceptionA(288, pool_features=64)
    network.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    network.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    network.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    network.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    network.Mixed_7b = FIDInceptionE_1(1280)
    network.Mixed_7c = FIDInceptionE_2(2048)
    if weights is not None:
        try:
            network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as error:  # unpickling or key/shape mismatch: the file is not these weights
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f"cannot load FID Inception weights from {weights}: {message}") from error
    return network


def build_inception(dims: int = 2048, weights_path: PathLike | None = None) -> torch.nn.Module:
    """pytorch-fid's `InceptionV3` returning the `dims`-feature block, in eval mode, without a download.

    `weights_path` is found by `find_inception_weights`; `"random"` gives seeded random weights instead
    (the same in every process, the global torch RNG untouched), for tests of the plumbing only.
    """
    import torch

    if dims not in FID_DIMS:
        raise ValueError(f"dims must be one of {FID_DIMS}, got {dims!r}")
    if isinstance(weights_path, str) and weights_path == RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            network = _fid_network(None)
    else:
        network = _fid_network(find_inception_weights(weights_path))  # looked up before any heavy import

    from pytorch_fid import inception as pytorch_fid_inception

    # InceptionV3.__init__ gets its network from the module-level `fid_inception_v3()`, which downloads.
    # Hand it ours for the duration of the constructor so its block split and preprocessing are reused as is.
    original = pytorch_fid_inception.fid_inception_v3
    pytorch_fid_inception.fid_inception_v3 = lambda: network
    try:
        model = pytorch_fid_inception.InceptionV3(
            [pytorch_fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[dims]]
        )
    finally:
        pytorch_fid_inception.fid_inception_v3 = original
    return model.eval()


# ----------------------------------------------------------------------------------------------------------
# Statistics and distance
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationStatistics:
    """Mean (D,) and unbiased covariance (D, D) of the activations of `n` images."""

    mean: np.ndarray
    covariance: np.ndarray
    n: int


class RunningMoments:
    """Streaming mean and covariance of rows, batch by batch (Chan, Golub & LeVeque's pairwise update).

    Equal to `np.mean(x, 0)` and `np.cov(x, rowvar=False)` of all rows stacked, in O(D**2) memory.
    """

    def __init__(self, dims: int) -> None:
        self.n = 0
        self.mean = np.zeros(dims)  # (D,)
        self.scatter = np.zeros((dims, dims))  # (D, D): sum of outer products of deviations from the mean

    def update(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64)  # (B, D)
        count = len(rows)
        if count == 0:
            return
        rows_mean = rows.mean(axis=0)
        centered = rows - rows_mean
        delta = rows_mean - self.mean
        total = self.n + count
        self.scatter += centered.T @ centered + np.outer(delta, delta) * (self.n * count / total)
        self.mean += delta * (count / total)
        self.n = total

    def statistics(self) -> ActivationStatistics:
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 images per side to estimate a covariance, got {self.n}")
        return ActivationStatistics(self.mean.copy(), self.scatter / (self.n - 1), self.n)


def frechet_distance(a: ActivationStatistics, b: ActivationStatistics) -> float:
    """Fréchet distance between the Gaussians fitted to two activation sets (pytorch-fid's formula).

    pytorch-fid prints to stdout when it has to regularise a singular product; that note is re-issued as a
    `UserWarning` so stdout stays clean for machine-readable output (scipy's own singular-matrix warning
    is silenced). Round-off can make the distance of
    identical statistics a tiny negative number; it is clamped to 0.
    """
    from pytorch_fid.fid_score import calculate_frechet_distance
    from scipy.linalg import LinAlgWarning

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy's `sqrtm(disp=...)` inside pytorch-fid
        # "Matrix is singular": the usual cause, too few images, is already warned about by `statistics`.
        warnings.simplefilter("ignore", LinAlgWarning)
        distance = float(calculate_frechet_distance(a.mean, a.covariance, b.mean, b.covariance))
    if printed.getvalue().strip():
        warn_at_caller(f"pytorch-fid: {printed.getvalue().strip()}", UserWarning)
    return max(distance, 0.0)


@dataclass(frozen=True)
class FidResult:
    """FID and the number of images (or frames) on each side."""

    value: float
    n_true: int
    n_test: int


def _unit_rgb_chw(image: np.ndarray, bgr: bool) -> np.ndarray:
    """(H, W, C) image -> (3, H, W) float32 RGB in [0, 1], as pytorch-fid's ToTensor gives."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] != 3:
        raise ValueError(f"FID needs RGB or grayscale images, got {image.shape[2]} channels")
    if bgr:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    scale = 255.0 if image.dtype == np.uint8 else 1.0  # floats are expected in [0, 1]
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(scale)


class FrechetInceptionDistance:
    """FID between two image sets (directories, arrays) or two video sets (files, directories of videos).

    The sets need not be paired or of equal size: each side's statistics use all of its images.

    Args:
        device: where the network runs (default: "cuda" if available, else "cpu").
        dims: feature size, one of 64, 192, 768, 2048 (default 2048, the standard FID; the smaller, earlier
            blocks are cheaper but not comparable with published FIDs).
        batch_size: images per forward pass (default 50; larger is faster until memory runs out).
        weights_path: the pytorch-fid Inception weights file; None looks in `$CACHE_DIT_INCEPTION_WEIGHTS`
            and torch's hub cache, then tries to download (see `find_inception_weights`). `"random"`:
            seeded random weights, meaningful only for tests.
        progress: a progress bar over the images while their features are computed: None (default) on a
            terminal only (so logs and pipes stay clean), True always, False never.

    Raises:
        MissingInceptionWeightsError: weights not found and not downloadable (raised here, before any
            image is read).
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        dims: int = 2048,
        batch_size: int = 50,
        weights_path: PathLike | None = None,
        progress: bool | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be None, True or False, got {progress!r}")
        self.progress = progress
        self.device = _resolve_device(device)
        self.dims = dims
        self.batch_size = batch_size
        self.model = build_inception(dims, weights_path).to(self.device)

    # -- statistics ----------------------------------------------------------------------------------------

    def _features(self, batch: list[np.ndarray]) -> np.ndarray:
        import torch
        from torch.nn.functional import adaptive_avg_pool2d

        images = torch.from_numpy(np.stack(batch)).to(self.device)  # (B, 3, H, W) in [0, 1]
        with torch.inference_mode():
            features = self.model(images)[0]  # (B, D, h, w)
            if features.shape[2:] != (1, 1):
                features = adaptive_avg_pool2d(features, output_size=(1, 1))
        return features.flatten(1).double().cpu().numpy()  # (B, D)

    def statistics(
        self, images: Iterable[np.ndarray], total: int | None = None, *, warn: bool = True
    ) -> ActivationStatistics:
        """Activation statistics of (3, H, W) float32 RGB images in [0, 1], streamed in batches.

        Consecutive images of one size share a batch; a size change starts a new one. `warn`: warn when the
        images are too few for a full-rank covariance (`measure` warns once for both sides instead).
        """
        moments = RunningMoments(self.dims)
        batch: list[np.ndarray] = []
        disable = None if self.progress is None else not self.progress  # tqdm's None: on a terminal only
        for image in tqdm(
            images, total=total, unit="image", desc="FID features", disable=disable, leave=False
        ):
            if batch and (len(batch) == self.batch_size or image.shape != batch[0].shape):
                moments.update(self._features(batch))
                batch = []
            batch.append(image)
        if batch:
            moments.update(self._features(batch))
        statistics = moments.statistics()
        if warn:
            self._warn_few_samples(statistics.n)
        return statistics

    def _warn_few_samples(self, n: int) -> None:
        if n <= self.dims:
            warn_at_caller(
                f"FID from {n} images with dims={self.dims}: the covariance has rank at most "
                f"{n - 1} < {self.dims}, so the score is biased and unstable; use more than "
                f"{self.dims} images per side for a meaningful FID",
                UserWarning,
            )

    def image_statistics(self, source: ImageInput, *, warn: bool = True) -> ActivationStatistics:
        """Statistics of an image file, a directory of images (recursive), or an RGB array (N, H, W, C)."""
        if isinstance(source, np.ndarray):
            batch = as_image_batch(source, "images")
            return self.statistics(
                (_unit_rgb_chw(image, bgr=False) for image in batch), len(batch), warn=warn
            )
        paths = _source_files(source, IMAGE_EXTENSIONS, "image")
        return self.statistics((_unit_rgb_chw(read_image(p), bgr=True) for p in paths), len(paths), warn=warn)

    def video_statistics(self, source: PathLike, *, warn: bool = True) -> ActivationStatistics:
        """Statistics of all frames of a video file or of every video in a directory (recursive)."""
        paths = _source_files(source, VIDEO_EXTENSIONS, "video")

        def frames() -> Iterator[np.ndarray]:
            for path in paths:
                for frame in iter_video_frames(path):
                    yield _unit_rgb_chw(frame, bgr=True)

        return self.statistics(frames(), warn=warn)

    # -- distances -----------------------------------------------------------------------------------------

    def measure(self, true: ImageInput, test: ImageInput, *, video: bool = False) -> FidResult:
        """FID between two image sets (`video=False`) or two video sets, with each side's count."""
        side = self.video_statistics if video else self.image_statistics
        true_stats, test_stats = side(true, warn=False), side(test, warn=False)
        self._warn_few_samples(min(true_stats.n, test_stats.n))  # once, not once per side
        return FidResult(frechet_distance(true_stats, test_stats), true_stats.n, test_stats.n)

    def compute_fid(self, true: ImageInput, test: ImageInput) -> tuple[float, int]:
        """FID between two image directories (or arrays), and the smaller of the two image counts."""
        result = self.measure(true, test)
        return result.value, min(result.n_true, result.n_test)

    def compute_video_fid(self, true: PathLike, test: PathLike) -> tuple[float, int]:
        """FID between the frames of two videos (or directories of videos), and the smaller frame count."""
        result = self.measure(true, test, video=True)
        return result.value, min(result.n_true, result.n_test)


def _source_files(source: PathLike, extensions: frozenset[str], kind: str) -> list[Path]:
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if path.is_file():
        return [path]
    files = list(list_files(path, extensions).values())
    if not files:
        raise ValueError(f"no {kind} files ({', '.join(sorted(extensions))}) found in {path}")
    return files


def _resolve_device(device: str | torch.device | None) -> torch.device:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return resolved
