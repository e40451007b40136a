"""The "scenes" testbed's data: multi-object scenes on photographic and textured backgrounds.

The default testbed (:mod:`cache_dit.testing.testbed`) draws one shape on a flat grey: given its class, an
image is nearly unimodal, so its sampling flows are nearly straight and every cache looks good on it. The
scenes testbed is built to be hard the way real models are:

* 128x128 RGB images (a 32x32x4 latent, 256 packed image tokens);
* a background cropped at a random place and scale from one of the sample images scikit-image ships
  (photographs and textures, muted so the objects stay visible), flipped at random;
* 1, 2 or 3 objects of one kind (circle, square, triangle) and one colour (red, green, blue, yellow) at
  random non-overlapping positions, sizes and rotations, with a random brightness and a dark outline;
* 36 compositional classes ``kind x colour x count``: class ``(kind * 4 + colour) * 3 + (count - 1)``.
  The prompt embedding is built from one learned token per attribute (kind, colour, count) plus a shared
  token (see :mod:`cache_dit.testing.testbed_train`), so the class table is compositional.

Everything is a pure function of ``(class_id, seed)``.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import torch

from cache_dit.testing import testbed as _testbed

IMAGE_SIZE = 128
KINDS: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 185, 60),
    "blue": (40, 90, 235),
    "yellow": (240, 210, 30),
}
COUNTS: tuple[int, ...] = (1, 2, 3)
CLASS_NAMES: list[str] = [
    f"{count} {color} {kind}{'s' if count > 1 else ''}"
    for kind in KINDS
    for color in COLORS
    for count in COUNTS
]
NUM_CLASSES = len(CLASS_NAMES)  # 36
NULL_CLASS_ID = NUM_CLASSES
TEXT_SEQ_LEN = 4  # kind, colour, count, shared
BACKGROUND_NAMES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "brick",
    "grass",
    "gravel",
    "camera",
    "moon",
    "coins",
)

# the default testbed's architectures; only the VAE's sample size differs (128x128 images -> 32x32x4 latents)
VAE_CONFIG: dict[str, Any] = {**_testbed.VAE_CONFIG, "sample_size": IMAGE_SIZE}
TRANSFORMER_CONFIG: dict[str, Any] = dict(_testbed.TRANSFORMER_CONFIG)


def class_attributes(class_id: int) -> tuple[str, str, int]:
    """``(kind, colour, count)`` of a class id in ``[0, NUM_CLASSES)``."""
    if not 0 <= class_id < NUM_CLASSES:
        raise ValueError(f"class_id must be in [0, {NUM_CLASSES}), got {class_id}")
    kind_color, count_index = divmod(class_id, len(COUNTS))
    kind_index, color_index = divmod(kind_color, len(COLORS))
    return KINDS[kind_index], list(COLORS)[color_index], COUNTS[count_index]


def class_attribute_indices(class_id: int) -> tuple[int, int, int]:
    """``(kind_index, colour_index, count_index)`` of a class id."""
    kind, color, count = class_attributes(class_id)
    return KINDS.index(kind), list(COLORS).index(color), COUNTS.index(count)


@cache
def _background_source(name: str) -> np.ndarray:
    """A scikit-image sample image as float RGB in [0, 255], ``(H, W, 3)``."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted random crop of a sample image, resized to ``(size, size, 3)`` float in [0, 255]."""
    source = _background_source(BACKGROUND_NAMES[rng.integers(len(BACKGROUND_NAMES))])
    h, w = source.shape[:2]
    crop = int(rng.uniform(0.35, 1.0) * min(h, w))
    top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    # nearest-neighbour-free resize by area sampling on a regular grid (bilinear via index arithmetic)
    coords = (np.arange(size) + 0.5) * crop / size - 0.5
    y0 = np.clip(np.floor(coords).astype(int), 0, crop - 1)
    y1 = np.clip(y0 + 1, 0, crop - 1)
    fy = np.clip(coords - y0, 0.0, 1.0)
    patch = source[top : top + crop, left : left + crop]  # (crop, crop, 3)
    rows = patch[y0] * (1 - fy)[:, None, None] + patch[y1] * fy[:, None, None]  # (size, crop, 3)
    image = rows[:, y0] * (1 - fy)[None, :, None] + rows[:, y1] * fy[None, :, None]  # (size, size, 3)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    tint = rng.uniform(0.8, 1.2, size=3)
    mean = image.mean()
    contrast = rng.uniform(0.45, 0.75)
    return np.clip((image - mean) * contrast * tint + rng.uniform(90, 160), 0, 255)


def _signed_distance(kind: str, x: np.ndarray, y: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) to a shape centred at the origin."""
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    xr, yr = cos_a * x + sin_a * y, -sin_a * x + cos_a * y
    if kind == "circle":
        return np.sqrt(x * x + y * y) - radius
    if kind == "square":
        return np.maximum(np.abs(xr), np.abs(yr)) - radius * 0.85
    r_in = radius * 0.6
    normals = [(0.0, 1.0), (-math.sqrt(3) / 2, -0.5), (math.sqrt(3) / 2, -0.5)]
    return np.max([nx * xr + ny * yr - r_in for nx, ny in normals], axis=0)


def make_scene_image(class_id: int, seed: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """One scene of class ``class_id``: ``uint8`` ``(size, size, 3)``, a pure function of its arguments."""
    kind, color, count = class_attributes(class_id)
    rng = np.random.default_rng(seed)
    scale = size / IMAGE_SIZE
    image = _background(rng, size)  # (H, W, 3)
    coords = np.arange(size, dtype=np.float64) + 0.5
    placed: list[tuple[float, float, float]] = []
    radius_range = {1: (20.0, 30.0), 2: (15.0, 23.0), 3: (12.0, 19.0)}[count]
    for _ in range(count):
        for _attempt in range(100):
            radius = rng.uniform(*radius_range) * scale
            cx, cy = rng.uniform(radius + 2 * scale, size - radius - 2 * scale, size=2)
            if all(math.hypot(cx - px, cy - py) > radius + pr + 3 * scale for px, py, pr in placed):
                break
        placed.append((cx, cy, radius))
        angle = rng.uniform(0, 2 * math.pi)
        x, y = np.meshgrid(coords - cx, coords - cy, indexing="xy")  # (H, W)
        dist = _signed_distance(kind, x, y, radius, angle)
        outline = np.clip(1.5 * scale - dist, 0.0, 1.0)[..., None]  # includes a 1.5 px rim
        fill = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
        shade = rng.uniform(0.8, 1.1)
        rgb = np.clip(np.asarray(COLORS[color], dtype=np.float64) * shade, 0, 255)[None, None, :]
        image = outline * 25.0 + (1 - outline) * image  # dark rim
        image = fill * rgb + (1 - fill) * image
    return np.round(np.clip(image, 0, 255)).astype(np.uint8)


def make_scene_dataset(
    num_images: int, seed: int, size: int = IMAGE_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced batch: images float32 in [-1, 1] ``(N, 3, size, size)`` and labels ``(N,)``.

    Image ``i`` has class ``i % NUM_CLASSES`` and seed ``seed * 1_000_003 + i``.
    """
    labels = torch.arange(num_images) % NUM_CLASSES
    images = np.stack([make_scene_image(int(c), seed * 1_000_003 + i, size) for i, c in enumerate(labels)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0, labels
