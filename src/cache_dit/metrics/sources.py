"""Reading and pairing the inputs of the metrics: image files, video files, directories and arrays.

Files are read with OpenCV (`cv2.imread(..., IMREAD_COLOR)`: always 3-channel BGR uint8, alpha dropped,
grayscale expanded) and streamed one at a time, so memory does not grow with the size of a directory.

Directories are paired by relative path (``sub/0001.png`` in the true directory with ``sub/0001.png`` in the
test directory, extension included), never by sorted position: a missing or extra file cannot shift every
later pair. Files present on one side only are skipped with a warning and reported; no pair at all is an
error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import cv2
import numpy as np

from .._warnings import warn_at_caller

PathLike = str | os.PathLike
ImageInput = str | os.PathLike | np.ndarray  # an image file, a directory of them, or an array

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})

_MAX_NAMES_IN_MESSAGE = 3


# ----------------------------------------------------------------------------------------------------------
# Reading one file
# ----------------------------------------------------------------------------------------------------------


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as a (H, W, 3) uint8 BGR array; raise `ValueError` if it cannot be decoded."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such image file: {os.fspath(path)}")
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {os.fspath(path)} (not an image OpenCV can decode)")
    return image


def iter_video_frames(path: PathLike) -> Iterator[np.ndarray]:
    """Yield the frames of a video file as (H, W, 3) uint8 BGR arrays, one at a time.

    Raises `ValueError` if the file cannot be opened or holds no decodable frame.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such video file: {os.fspath(path)}")
    capture = cv2.VideoCapture(os.fspath(path))
    try:
        if not capture.isOpened():
            raise ValueError(f"cannot open video {os.fspath(path)} (not a video OpenCV can decode)")
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield frame
        if count == 0:
            raise ValueError(f"cannot read any frame from video {os.fspath(path)}")
    finally:
        capture.release()


# ----------------------------------------------------------------------------------------------------------
# Finding and pairing files
# ----------------------------------------------------------------------------------------------------------


def list_files(directory: Path, extensions: frozenset[str]) -> dict[str, Path]:
    """Files under `directory` (recursively) with one of `extensions`, keyed by relative POSIX path."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.suffix.lower() in extensions and path.is_file():
            found[path.relative_to(directory).as_posix()] = path
    return found


def _examples(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_IN_MESSAGE])
    return shown + (", ..." if len(names) > _MAX_NAMES_IN_MESSAGE else "")


@dataclass(frozen=True)
class Pairing:
    """Files matched by relative path: `pairs` holds (name, true file, test file), sorted by name."""

    pairs: tuple[tuple[str, Path, Path], ...]
    only_in_true: tuple[str, ...] = ()
    only_in_test: tuple[str, ...] = ()


def pair_paths(true: PathLike, test: PathLike, extensions: frozenset[str], kind: str) -> Pairing:
    """Pair two files, or the files of two directories by relative path.

    `kind` ("image" or "video") only words the messages. A file on one side only is skipped with a
    `UserWarning` and listed in the result; no pair at all raises `ValueError`.
    """
    true_path, test_path = Path(true), Path(test)
    for path in (true_path, test_path):
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {path}")
    if true_path.is_dir() != test_path.is_dir():
        raise ValueError(
            f"compare a directory with a directory or a file with a file, got {true_path} and {test_path}"
        )
    if not true_path.is_dir():
        return Pairing(pairs=((f"{true_path} vs {test_path}", true_path, test_path),))

    listed = {}
    for path in (true_path, test_path):
        listed[path] = list_files(path, extensions)
        if not listed[path]:
            raise ValueError(f"no {kind} files ({', '.join(sorted(extensions))}) found in {path}")
    true_files, test_files = listed[true_path], listed[test_path]
    common = sorted(true_files.keys() & test_files.keys())
    only_in_true = tuple(sorted(true_files.keys() - test_files.keys()))
    only_in_test = tuple(sorted(test_files.keys() - true_files.keys()))
    if not common:
        raise ValueError(
            f"no {kind} in {true_path} has a counterpart with the same relative path in {test_path} "
            f"({len(true_files)} vs {len(test_files)} files, e.g. {_examples(tuple(true_files))} vs "
            f"{_examples(tuple(test_files))})"
        )
    if only_in_true or only_in_test:
        warn_at_caller(
            f"skipping {len(only_in_true)} {kind}(s) only in {true_path}"
            + (f" ({_examples(only_in_true)})" if only_in_true else "")
            + f" and {len(only_in_test)} only in {test_path}"
            + (f" ({_examples(only_in_test)})" if only_in_test else "")
            + f"; comparing {len(common)} pairs",
            UserWarning,
        )
    pairs = tuple((name, true_files[name], test_files[name]) for name in common)
    return Pairing(pairs=pairs, only_in_true=only_in_true, only_in_test=only_in_test)


def iter_paired_frames(name: str, true: Path, test: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (frame name, true frame, test frame) of two videos; different frame counts raise `ValueError`."""
    missing = object()
    for index, (true_frame, test_frame) in enumerate(
        zip_longest(iter_video_frames(true), iter_video_frames(test), fillvalue=missing)
    ):
        if true_frame is missing or test_frame is missing:
            longer, shorter = (true, test) if test_frame is missing else (test, true)
            raise ValueError(
                f"{name}: videos have different frame counts, {shorter} ends after {index} frames "
                f"while {longer} goes on"
            )
        yield f"{name}[frame {index}]", true_frame, test_frame


# ----------------------------------------------------------------------------------------------------------
# Arrays
# ----------------------------------------------------------------------------------------------------------


def as_image_batch(images: np.ndarray, name: str) -> np.ndarray:
    """View an image array as a batch: (H, W) and (H, W, C) become (1, ...); (N, H, W, C) is kept.

    A 3-D array is always one (H, W, C) image: give a batch of grayscale images a channel axis (N, H, W, 1).
    """
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(images).__name__}")
    if images.dtype == np.bool_ or not (
        np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)
    ):
        raise TypeError(f"{name} must hold integers or floats, got dtype {images.dtype}")
    if images.ndim in (2, 3):
        return images[None]
    if images.ndim == 4:
        return images
    raise ValueError(f"{name} must be (H, W), (H, W, C) or (N, H, W, C), got shape {images.shape}")


def data_range(dtype: np.dtype) -> float:
    """Value range of an image dtype: the integer maximum (255 for uint8), 1.0 for floats in [0, 1]."""
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def match_size(true: np.ndarray, test: np.ndarray, resize: bool, name: str) -> np.ndarray:
    """Return `test` at the size of `true`: resized if `resize`, else a size mismatch raises `ValueError`.

    Resizing uses area interpolation when shrinking and bilinear interpolation when enlarging.
    """
    if true.shape[2:] != test.shape[2:]:
        raise ValueError(f"{name}: channel counts differ, true has shape {true.shape}, test {test.shape}")
    if true.shape[:2] == test.shape[:2]:
        return test
    true_h, true_w = true.shape[:2]
    test_h, test_w = test.shape[:2]
    if not resize:
        raise ValueError(
            f"{name}: sizes differ, true is {true_w}x{true_h} and test is {test_w}x{test_h} (WxH); "
            "pass resize=True (CLI: --resize) to resize test to the true size"
        )
    shrinking = true_h <= test_h and true_w <= test_w
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(test, (true_w, true_h), interpolation=interpolation)
    return resized.reshape(true.shape)  # cv2 drops a trailing channel axis of size 1
