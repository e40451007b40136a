"""A tiny *trained* FLUX-architecture testbed for cache tests, benchmarks and demos.

Caching decisions depend on how a trained model's features move between denoising steps: a randomly
initialised transformer's first-block residual changes by a roughly flat amount every step, while a trained
model changes a lot early, little in the middle and more again at the end. This module ships a model small
enough for CPU tests that still shows the trained behaviour:

* Data: procedural 64x64 RGB images of a coloured shape (circle / square / triangle in red, green, blue or
  yellow, 12 classes) on a neutral grey background, with position and size jitter, deterministic from a seed
  (:func:`make_shape_image`, :func:`make_shape_dataset`).
* A tiny ``AutoencoderKL`` (block_out_channels=(16, 32, 32), 4 latent channels: 64x64x3 -> 16x16x4).
* A ``FluxTransformer2DModel`` with 4 dual-stream + 8 single-stream blocks, 4 heads x 32 = 128 wide,
  ``in_channels=16`` (2x2 packed latents), ``guidance_embeds=False``, conditioned on a learned per-class
  table that stands in for the text encoders: ``prompt_embeds`` (S=4 tokens of ``joint_attention_dim``)
  and ``pooled_prompt_embeds``. Row :data:`NULL_CLASS_ID` is a learned "unconditional" embedding (trained
  with 10% label dropout), so true CFG (``true_cfg_scale`` > 1 with negative embeds) works.
* Rectified flow with the convention of diffusers' ``FluxPipeline`` + ``FlowMatchEulerDiscreteScheduler``
  (dynamic shifting, FLUX.1 scheduler config).

A real ``diffusers.FluxPipeline`` samples it; the text encoders and tokenizers are passed as ``None``
(``FluxPipeline`` in diffusers 0.42.1 accepts that as long as ``prompt_embeds`` and
``pooled_prompt_embeds`` are given), see :func:`load_testbed_pipeline`.

Retraining (weights are committed under ``cache_dit/testing/weights/``, ~9.5 MB, fp16, loaded as fp32)::

    OMP_WAIT_POLICY=PASSIVE python -m cache_dit.testing.testbed train --out src/cache_dit/testing/weights

trains the VAE (1200 steps of batch 16, capped at 10 minutes) and then the transformer (3000 steps of batch
32, lr 5e-4 cosine, EMA 0.998, capped at 38 minutes) with seed 0 and ``torch.set_num_threads(2)``. The
committed weights took 43.3 minutes on 2 shared CPU cores (VAE 10.0 min, stopped by its cap at step 1194;
latent encoding 0.3 min; transformer 33.0 min, all 3000 steps); ``weights/testbed.json`` records the steps,
final losses and latent statistics. ``OMP_WAIT_POLICY=PASSIVE`` matters on a machine whose cores are
shared with other processes: with the default spinning OpenMP threads a contended training step ran ~10x
slower. The VAE is narrower than the (32, 64, 64) first planned because that one needs ~4x the compute per step.

Other commands: ``python -m cache_dit.testing.testbed grid --out /tmp/testbed_grid.png`` samples every
class (and counts correct dominant colours); ``... profile`` prints the per-step first-block residual change
of the trained and of a random transformer; ``... wide-timing`` times :func:`build_wide_pipeline`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from safetensors.torch import load_file

WEIGHTS_DIR = Path(__file__).with_name("weights")

IMAGE_SIZE = 64
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
}
BACKGROUND_GREYS: tuple[int, ...] = (60, 120, 180)
# class_id = shape_index * len(COLORS) + color_index
CLASS_NAMES: list[str] = [f"{color} {shape}" for shape in SHAPES for color in COLORS]
NUM_CLASSES = len(CLASS_NAMES)
NULL_CLASS_ID = NUM_CLASSES  # learned unconditional embedding, for negative prompts / CFG
TEXT_SEQ_LEN = 4

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 32],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": IMAGE_SIZE,
    "scaling_factor": 1.0,  # replaced by 1/std of the training latents after VAE training
    "shift_factor": 0.0,  # replaced by the mean of the training latents after VAE training
    "force_upcast": False,
    "mid_block_add_attention": False,
}

TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 16,  # 4 latent channels x 2x2 packing
    "num_layers": 4,
    "num_single_layers": 8,
    "attention_head_dim": 32,
    "num_attention_heads": 4,
    "joint_attention_dim": 64,
    "pooled_projection_dim": 64,
    "guidance_embeds": False,
    "axes_dims_rope": [8, 12, 12],  # sums to attention_head_dim
}

# The FLUX.1 scheduler config (dynamic shifting by image sequence length).
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

WIDE_TRANSFORMER_CONFIG: dict[str, Any] = {
    **TRANSFORMER_CONFIG,
    "attention_head_dim": 64,
    "num_attention_heads": 8,  # 512 wide
    "joint_attention_dim": 256,
    "pooled_projection_dim": 256,
    "axes_dims_rope": [16, 24, 24],
}
WIDE_IMAGE_SIZE = 64


SCENES_WEIGHTS_DIR = Path(__file__).with_name("weights_scenes")
TESTBED_NAMES: tuple[str, ...] = ("shapes", "scenes")


@dataclass(frozen=True)
class TestbedSpec:
    """What differs between the trained testbeds: data, sizes, configs and where the weights live."""

    name: str
    image_size: int
    class_names: tuple[str, ...]
    text_seq_len: int
    weights_dir: Path
    vae_config: dict[str, Any]
    transformer_config: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def null_class_id(self) -> int:
        return len(self.class_names)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_config["block_out_channels"]) - 1)

    def make_dataset(self, num_images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-balanced images float32 in [-1, 1] ``(N, 3, S, S)`` and labels ``(N,)``."""
        if self.name == "scenes":
            from cache_dit.testing import scenes

            return scenes.make_scene_dataset(num_images, seed, self.image_size)
        return make_shape_dataset(num_images, seed, self.image_size)


def testbed_spec(name: str | None = None) -> TestbedSpec:
    """The :class:`TestbedSpec` of a testbed: ``None`` or ``"shapes"`` (the default), or ``"scenes"``."""
    if name is None or name == "shapes":
        return TestbedSpec(
            "shapes",
            IMAGE_SIZE,
            tuple(CLASS_NAMES),
            TEXT_SEQ_LEN,
            WEIGHTS_DIR,
            VAE_CONFIG,
            TRANSFORMER_CONFIG,
        )
    if name == "scenes":
        from cache_dit.testing import scenes

        return TestbedSpec(
            "scenes",
            scenes.IMAGE_SIZE,
            tuple(scenes.CLASS_NAMES),
            scenes.TEXT_SEQ_LEN,
            SCENES_WEIGHTS_DIR,
            scenes.VAE_CONFIG,
            scenes.TRANSFORMER_CONFIG,
        )
    raise ValueError(f"testbed name must be one of {TESTBED_NAMES} (or None for 'shapes'), got {name!r}")


def testbed_num_classes(name: str | None = None) -> int:
    """Number of prompt classes of a testbed (12 for the default, 36 for ``"scenes"``)."""
    return testbed_spec(name).num_classes


def testbed_image_size(name: str | None = None) -> int:
    """The square image size a testbed's pipeline expects (64 for the default, 128 for ``"scenes"``)."""
    return testbed_spec(name).image_size


# --------------------------------------------------------------------------------------------------------------
# Procedural data
# --------------------------------------------------------------------------------------------------------------


def class_shape_and_color(class_id: int) -> tuple[str, str]:
    """Return ``(shape, color)`` of a class id in ``[0, NUM_CLASSES)``."""
    if not 0 <= class_id < NUM_CLASSES:
        raise ValueError(f"class_id must be in [0, {NUM_CLASSES}), got {class_id}")
    color_names = list(COLORS)
    return SHAPES[class_id // len(COLORS)], color_names[class_id % len(COLORS)]


def make_shape_image(class_id: int, seed: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw one anti-aliased coloured shape on a plain grey background.

    Position, size and background grey are drawn from ``numpy.random.default_rng(seed)``, so the image is a
    pure function of ``(class_id, seed, size)``.

    Returns:
        ``uint8`` array of shape ``(size, size, 3)``.
    """
    shape, color = class_shape_and_color(class_id)
    rng = np.random.default_rng(seed)
    scale = size / IMAGE_SIZE
    radius = rng.uniform(11.0, 17.0) * scale
    cx, cy = (size / 2 + rng.uniform(-7.0, 7.0, size=2) * scale).tolist()
    background = float(BACKGROUND_GREYS[rng.integers(len(BACKGROUND_GREYS))])

    coords = np.arange(size, dtype=np.float64) + 0.5
    x, y = np.meshgrid(coords - cx, coords - cy, indexing="xy")  # (H, W) each
    if shape == "circle":
        signed_dist = np.sqrt(x * x + y * y) - radius
    elif shape == "square":
        half = radius * 0.85  # similar area to the circle
        signed_dist = np.maximum(np.abs(x), np.abs(y)) - half
    else:  # upward equilateral triangle with circumradius ~1.25 * radius, centred on (cx, cy)
        r_in = radius * 0.65  # inradius
        normals = [(0.0, 1.0), (-math.sqrt(3) / 2, -0.5), (math.sqrt(3) / 2, -0.5)]  # bottom, left, right
        signed_dist = np.max([nx * x + ny * y - r_in for nx, ny in normals], axis=0)
    coverage = np.clip(0.5 - signed_dist, 0.0, 1.0)[..., None]  # (H, W, 1)
    rgb = np.asarray(COLORS[color], dtype=np.float64)[None, None, :]  # (1, 1, 3)
    image = coverage * rgb + (1.0 - coverage) * background  # (H, W, 3)
    return np.round(image).astype(np.uint8)


def make_shape_dataset(
    num_images: int, seed: int, size: int = IMAGE_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced batch of procedural images.

    Returns:
        ``images`` float32 in ``[-1, 1]`` of shape ``(N, 3, size, size)`` and ``labels`` int64 ``(N,)``;
        image ``i`` has class ``i % NUM_CLASSES`` and is drawn with seed ``seed * 1_000_003 + i``.
    """
    labels = torch.arange(num_images) % NUM_CLASSES  # (N,)
    images = np.stack([make_shape_image(int(c), seed * 1_000_003 + i, size) for i, c in enumerate(labels)])
    images_t = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, H, W)
    return images_t, labels


def dominant_color(image: np.ndarray, center_fraction: float = 0.5) -> str:
    """Name of the :data:`COLORS` entry most present in the centre of an RGB ``uint8`` image ``(H, W, 3)``.

    Each pixel of the central crop votes for its nearest colour among the four shape colours and the
    background greys; the shape colour with most votes wins.
    """
    h, w = image.shape[:2]
    dh, dw = int(h * (1 - center_fraction) / 2), int(w * (1 - center_fraction) / 2)
    crop = image[dh : h - dh, dw : w - dw].reshape(-1, 3).astype(np.float64)  # (P, 3)
    palette_names = list(COLORS) + [f"grey{g}" for g in BACKGROUND_GREYS]
    palette = np.array(list(COLORS.values()) + [(g, g, g) for g in BACKGROUND_GREYS], dtype=np.float64)
    nearest = np.argmin(((crop[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)  # (P,)
    votes = np.bincount(nearest, minlength=len(palette))[: len(COLORS)]
    return palette_names[int(np.argmax(votes))]


# --------------------------------------------------------------------------------------------------------------
# Flow-matching helpers shared by training and sampling
# --------------------------------------------------------------------------------------------------------------


def latent_image_ids(image_size: int = IMAGE_SIZE, vae_scale_factor: int = 4) -> torch.Tensor:
    """``img_ids`` for a packed latent of an ``image_size`` square image, as FluxPipeline builds them."""
    side = image_size // vae_scale_factor // 2
    return FluxPipeline._prepare_latent_image_ids(1, side, side, torch.device("cpu"), torch.float32)  # (N, 3)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H/2 * W/2, 4C)``, exactly FluxPipeline's packing."""
    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def image_mu(image_seq_len: int, scheduler_config: dict[str, Any] = SCHEDULER_CONFIG) -> float:
    """The dynamic-shift ``mu`` FluxPipeline passes to the scheduler for ``image_seq_len`` tokens."""
    base_len, max_len = scheduler_config["base_image_seq_len"], scheduler_config["max_image_seq_len"]
    base_shift, max_shift = scheduler_config["base_shift"], scheduler_config["max_shift"]
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len


def sample_training_sigmas(
    batch: int, mu: float, generator: torch.Generator, uniform_fraction: float = 0.1
) -> torch.Tensor:
    """Shifted logit-normal sigmas in ``(0, 1)`` matching the pipeline's shifted sampling schedule.

    ``t ~ sigmoid(N(0, 1))`` (a ``uniform_fraction`` of the batch uniform instead, to cover the ends), then
    the scheduler's exponential time shift ``sigma = e^mu / (e^mu + 1/t - 1)``.
    """
    t = torch.sigmoid(torch.randn(batch, generator=generator))  # (B,)
    uniform = torch.rand(batch, generator=generator)
    use_uniform = torch.rand(batch, generator=generator) < uniform_fraction
    t = torch.where(use_uniform, uniform, t).clamp(1e-4, 1 - 1e-4)
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassTable:
    """The learned stand-in for the text encoders: one row per class plus the null class."""

    prompt: torch.Tensor  # (NUM_CLASSES + 1, TEXT_SEQ_LEN, joint_attention_dim)
    pooled: torch.Tensor  # (NUM_CLASSES + 1, pooled_projection_dim)


_CLASS_TABLE_CACHE: dict[str, ClassTable] = {}


def _read_json(name: str, weights_dir: Path) -> dict[str, Any]:
    return json.loads((weights_dir / name).read_text())


def _load_module_weights(module: torch.nn.Module, path: Path) -> None:
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    module.load_state_dict(state, strict=True)


def load_class_table(weights_dir: Path = WEIGHTS_DIR) -> ClassTable:
    """The trained per-class embedding table (float32, cached per folder)."""
    key = str(Path(weights_dir).resolve())
    if key not in _CLASS_TABLE_CACHE:
        tensors = load_file(str(Path(weights_dir) / "class_embeds.safetensors"))
        _CLASS_TABLE_CACHE[key] = ClassTable(tensors["prompt"].float(), tensors["pooled"].float())
    return _CLASS_TABLE_CACHE[key]


def testbed_prompt_embeds(
    class_ids: Sequence[int], weights_dir: Path | None = None, name: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditioning for the trained testbed, in place of text-encoder outputs.

    Args:
        class_ids: class ids in ``[0, testbed_num_classes(name))``, or that count itself (the null class,
            :data:`NULL_CLASS_ID` for the default) for the unconditional embedding (use it for
            ``negative_prompt_embeds`` with ``true_cfg_scale`` > 1).
        weights_dir: the folder of the class table; default: the named testbed's committed weights.
        name: ``None`` (the default 64x64 testbed) or ``"scenes"``.

    Returns:
        ``prompt_embeds`` ``(B, TEXT_SEQ_LEN, 64)`` and ``pooled_prompt_embeds`` ``(B, 64)``, float32.
    """
    spec = testbed_spec(name)
    ids = list(class_ids)
    for class_id in ids:
        if not 0 <= class_id <= spec.null_class_id:
            raise ValueError(f"class id must be in [0, {spec.null_class_id}], got {class_id}")
    table = load_class_table(spec.weights_dir if weights_dir is None else weights_dir)
    index = torch.tensor(ids, dtype=torch.long)
    return table.prompt[index].clone(), table.pooled[index].clone()


def _build_pipeline(
    transformer: FluxTransformer2DModel, vae: AutoencoderKL, scheduler: FlowMatchEulerDiscreteScheduler
) -> FluxPipeline:
    # FluxPipeline's text encoders and tokenizers are optional at construction in diffusers 0.42.1; every
    # call must then pass prompt_embeds and pooled_prompt_embeds (and negative ones for true CFG).
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_testbed_vae(config_overrides: dict[str, Any] | None = None) -> AutoencoderKL:
    """An untrained testbed VAE (the architecture in :data:`VAE_CONFIG`)."""
    return AutoencoderKL.from_config({**VAE_CONFIG, **(config_overrides or {})})


def build_testbed_transformer(seed: int | None = None) -> FluxTransformer2DModel:
    """An untrained testbed transformer (:data:`TRANSFORMER_CONFIG`), seeded when ``seed`` is given."""
    if seed is not None:
        torch.manual_seed(seed)
    return FluxTransformer2DModel.from_config(TRANSFORMER_CONFIG)


def load_testbed_pipeline(
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    weights_dir: str | Path | None = None,
    random_transformer_seed: int | None = None,
    name: str | None = None,
) -> FluxPipeline:
    """The trained testbed as a real ``diffusers.FluxPipeline`` (no text encoders).

    Call it as ``pipe(prompt_embeds=pe, pooled_prompt_embeds=pooled, height=64, width=64,
    num_inference_steps=28, generator=torch.Generator().manual_seed(0))`` with ``pe, pooled =
    testbed_prompt_embeds(class_ids)``. ``guidance_scale`` is ignored (``guidance_embeds=False``); true CFG
    via ``true_cfg_scale`` and ``negative_prompt_embeds`` from :data:`NULL_CLASS_ID` works.

    Args:
        dtype: dtype of the transformer and VAE (weights are stored in fp16 and upcast to fp32 first).
        device: device for the pipeline.
        weights_dir: folder with the committed weights.
        random_transformer_seed: if given, keep the trained VAE and class table but replace the transformer
            by a randomly initialised one of the same config (seeded), as a "not trained" reference.
        name: ``None`` for this 64x64 testbed, or ``"scenes"`` for the harder 128x128 multi-object testbed
            (see :mod:`cache_dit.testing.scenes`; sample it at ``testbed_image_size("scenes")``).
    """
    spec = testbed_spec(name)
    weights_dir = Path(spec.weights_dir if weights_dir is None else weights_dir)
    if not (weights_dir / "transformer.safetensors").exists():
        raise FileNotFoundError(
            f"no trained weights for testbed {spec.name!r} in {weights_dir}; train them with "
            f"`python -m cache_dit.testing.testbed train --name {spec.name}`"
        )
    vae = AutoencoderKL.from_config(_read_json("vae_config.json", weights_dir))
    _load_module_weights(vae, weights_dir / "vae.safetensors")
    transformer = FluxTransformer2DModel.from_config(_read_json("transformer_config.json", weights_dir))
    if random_transformer_seed is None:
        _load_module_weights(transformer, weights_dir / "transformer.safetensors")
    else:
        torch.manual_seed(random_transformer_seed)
        transformer = FluxTransformer2DModel.from_config(_read_json("transformer_config.json", weights_dir))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(_read_json("scheduler_config.json", weights_dir))
    pipe = _build_pipeline(transformer.eval(), vae.eval(), scheduler)
    if dtype != torch.float32 or torch.device(device) != torch.device("cpu"):
        pipe = pipe.to(device=device, dtype=dtype)  # the modules are built as float32 on the CPU
    return pipe


def build_wide_pipeline(seed: int = 0) -> FluxPipeline:
    """A wider, randomly initialised FLUX pipeline for timing only (outputs are noise).

    Same block structure as the testbed (4 dual + 8 single blocks) but 512 wide (8 heads x 64), so the
    transformer dominates pipeline time on CPU; sample at ``WIDE_IMAGE_SIZE`` (64x64, 64 image tokens + 4
    text tokens) with :func:`wide_prompt_embeds`. The VAE is the tiny testbed architecture, random.
    """
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel.from_config(WIDE_TRANSFORMER_CONFIG)
    vae = build_testbed_vae()
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    return _build_pipeline(transformer.eval(), vae.eval(), scheduler)


def wide_prompt_embeds(batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``prompt_embeds`` ``(batch, TEXT_SEQ_LEN, 256)`` and ``pooled_prompt_embeds`` ``(batch, 256)``."""
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randn(
        batch, TEXT_SEQ_LEN, WIDE_TRANSFORMER_CONFIG["joint_attention_dim"], generator=generator
    )
    pooled = torch.randn(batch, WIDE_TRANSFORMER_CONFIG["pooled_projection_dim"], generator=generator)
    return prompt, pooled


# --------------------------------------------------------------------------------------------------------------
# Sampling and measurement helpers
# --------------------------------------------------------------------------------------------------------------


def sample_classes(
    pipe: FluxPipeline,
    class_ids: Sequence[int],
    seed: int = 0,
    num_inference_steps: int = 28,
    true_cfg_scale: float = 1.0,
    weights_dir: str | Path | None = None,
    name: str | None = None,
    as_float: bool = False,
) -> np.ndarray:
    """Sample one image per class id of testbed ``name`` in a single batched call (seeded generator).

    ``true_cfg_scale`` > 1 adds the :data:`NULL_CLASS_ID` embedding as the negative branch (true CFG, two
    transformer calls per step). ``weights_dir`` must be the folder the pipeline was loaded from.

    Returns:
        ``uint8`` array ``(B, S, S, 3)`` (S = 64, or 128 for ``"scenes"``); with ``as_float`` the pipeline's
        float output in ``[0, 1]`` itself (no 8-bit rounding).
    """
    spec = testbed_spec(name)
    prompt, pooled = testbed_prompt_embeds(class_ids, weights_dir, name=name)
    kwargs: dict[str, Any] = {}
    if true_cfg_scale > 1.0:
        null_ids = [spec.null_class_id] * len(class_ids)
        neg, neg_pooled = testbed_prompt_embeds(null_ids, weights_dir, name=name)
        kwargs = {"negative_prompt_embeds": neg, "negative_pooled_prompt_embeds": neg_pooled}
    images = pipe(
        prompt_embeds=prompt,
        pooled_prompt_embeds=pooled,
        height=spec.image_size,
        width=spec.image_size,
        num_inference_steps=num_inference_steps,
        true_cfg_scale=true_cfg_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kwargs,
    ).images  # (B, H, W, 3) float in [0, 1]
    if as_float:
        return np.asarray(images)
    return np.round(np.asarray(images) * 255).astype(np.uint8)


def first_block_residual_profile(
    pipe: FluxPipeline,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    num_inference_steps: int = 28,
    seed: int = 0,
    image_size: int = IMAGE_SIZE,
) -> list[float]:
    """Per-step relative L1 change of the first dual block's hidden-stream residual.

    Runs one uncached pipeline call and, for every step ``t >= 1``, returns
    ``mean|r_t - r_{t-1}| / mean|r_{t-1}|`` with ``r = block_output - block_input`` of
    ``transformer.transformer_blocks[0]`` (image stream). The first entry (step 0) is ``nan``.
    """
    residuals: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: tuple) -> None:
        hidden_in = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, N, D)
        residuals.append((output[1] - hidden_in).detach().float())  # (B, N, D)

    handle = pipe.transformer.transformer_blocks[0].register_forward_hook(hook, with_kwargs=True)
    try:
        pipe(
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            height=image_size,
            width=image_size,
            num_inference_steps=num_inference_steps,
            generator=torch.Generator().manual_seed(seed),
            output_type="latent",
        )
    finally:
        handle.remove()
    profile = [float("nan")]
    for prev, cur in zip(residuals[:-1], residuals[1:]):
        profile.append(float((cur - prev).abs().mean() / prev.abs().mean()))
    return profile


def time_pipeline_call(
    pipe: FluxPipeline,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    image_size: int,
    num_inference_steps: int = 28,
    repeats: int = 3,
) -> tuple[float, float]:
    """Median wall time of a full pipeline call and the share of it spent inside ``pipe.transformer``.

    Returns:
        ``(seconds_per_call, transformer_fraction)``, both medians over ``repeats`` calls after one warm-up.
    """
    import time

    inside: list[float] = []
    started: list[float] = []

    def pre_hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        started.append(time.perf_counter())

    def post_hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        inside.append(time.perf_counter() - started.pop())

    handles = [
        pipe.transformer.register_forward_pre_hook(pre_hook, with_kwargs=True),
        pipe.transformer.register_forward_hook(post_hook, with_kwargs=True),
    ]
    totals, fractions = [], []
    try:
        for repeat in range(repeats + 1):
            inside.clear()
            start = time.perf_counter()
            pipe(
                prompt_embeds=prompt_embeds,
                pooled_prompt_embeds=pooled_prompt_embeds,
                height=image_size,
                width=image_size,
                num_inference_steps=num_inference_steps,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
            )
            total = time.perf_counter() - start
            if repeat:  # the first call is a warm-up
                totals.append(total)
                fractions.append(sum(inside) / total)
    finally:
        for handle in handles:
            handle.remove()
    return float(np.median(totals)), float(np.median(fractions))


def save_grid(images: np.ndarray, path: str | Path, columns: int = 4, scale: int = 2) -> Path:
    """Save ``(B, H, W, 3)`` uint8 images as one PNG grid (nearest-neighbour upscaled by ``scale``)."""
    import matplotlib.image

    b, h, w, _ = images.shape
    rows = math.ceil(b / columns)
    grid = np.full((rows * (h + 2), columns * (w + 2), 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = image
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    matplotlib.image.imsave(path, grid)
    return path


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m cache_dit.testing.testbed {train,grid,profile}``."""
    parser = argparse.ArgumentParser(
        prog="python -m cache_dit.testing.testbed", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the VAE and the transformer, write weights")
    train.add_argument("--name", choices=TESTBED_NAMES, default="shapes")
    train.add_argument("--out", type=Path, default=None, help="default: the named testbed's weights folder")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--stage", choices=["all", "vae", "transformer"], default="all")
    train.add_argument("--vae-steps", type=int, default=1200)
    train.add_argument("--transformer-steps", type=int, default=3000)
    train.add_argument(
        "--max-minutes",
        type=float,
        nargs=2,
        default=(10.0, 38.0),
        metavar=("VAE", "DIT"),
        help="wall-clock safety caps per stage (training stops early and records the step)",
    )
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--batch", type=int, default=32, help="transformer batch size")
    train.add_argument("--lr", type=float, default=5e-4, help="transformer peak learning rate")
    train.add_argument("--latent-images", type=int, default=None, help="default: 400 per class")
    train.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start the transformer and class table from this weights folder (a fine-tune, fresh schedule)",
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run saved in the weights folder's checkpoint.pt"
    )
    grid = sub.add_parser("grid", help="sample all classes into a PNG grid")
    grid.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    grid.add_argument("--out", type=Path, default=Path("/tmp/testbed_grid.png"))
    grid.add_argument("--seed", type=int, default=0)
    grid.add_argument("--steps", type=int, default=28)
    grid.add_argument("--repeats", type=int, default=2)
    prof = sub.add_parser("profile", help="first-block residual change per step, trained vs random")
    prof.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    prof.add_argument("--steps", type=int, default=28)
    sub.add_parser(
        "wide-timing", help="time a 28-step call of build_wide_pipeline() and the transformer share"
    )
    args = parser.parse_args(argv)

    if args.command == "train":
        from cache_dit.testing.testbed_train import train_all

        train_all(
            spec=testbed_spec(args.name),
            out_dir=args.out,
            seed=args.seed,
            stage=args.stage,
            vae_steps=args.vae_steps,
            transformer_steps=args.transformer_steps,
            threads=args.threads,
            max_minutes=tuple(args.max_minutes),
            batch=args.batch,
            lr=args.lr,
            num_latent_images=args.latent_images,
            init_from=args.init_from,
            resume=args.resume,
        )
    elif args.command == "grid":
        torch.set_num_threads(2)
        pipe = load_testbed_pipeline(weights_dir=args.weights)
        images = [
            sample_classes(
                pipe,
                range(NUM_CLASSES),
                seed=args.seed + r,
                num_inference_steps=args.steps,
                weights_dir=args.weights,
            )
            for r in range(args.repeats)
        ]
        all_images = np.concatenate(images)
        hits = sum(
            dominant_color(img) == class_shape_and_color(i % NUM_CLASSES)[1]
            for i, img in enumerate(all_images)
        )
        print(f"dominant colour correct: {hits}/{len(all_images)}")
        print(f"wrote {save_grid(all_images, args.out)}")
    elif args.command == "wide-timing":
        torch.set_num_threads(2)
        prompt, pooled = wide_prompt_embeds(batch=1)
        seconds, share = time_pipeline_call(build_wide_pipeline(), prompt, pooled, WIDE_IMAGE_SIZE)
        print(
            f"wide pipeline, 28 steps at {WIDE_IMAGE_SIZE}px: {seconds:.2f} s/call, transformer {share:.1%}"
        )
        pipe = load_testbed_pipeline(weights_dir=WEIGHTS_DIR)
        prompt, pooled = testbed_prompt_embeds([0])
        seconds, share = time_pipeline_call(pipe, prompt, pooled, IMAGE_SIZE)
        print(f"trained testbed, 28 steps at {IMAGE_SIZE}px: {seconds:.2f} s/call, transformer {share:.1%}")
    else:
        torch.set_num_threads(2)
        prompt, pooled = testbed_prompt_embeds(range(NUM_CLASSES), args.weights)
        for name, seed in (("trained", None), ("random", 0)):
            pipe = load_testbed_pipeline(weights_dir=args.weights, random_transformer_seed=seed)
            profile = first_block_residual_profile(pipe, prompt, pooled, num_inference_steps=args.steps)
            print(name, " ".join(f"{v:.3f}" for v in profile))


if __name__ == "__main__":
    main()
