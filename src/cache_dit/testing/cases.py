"""Model cases: one tiny pipeline per supported model, able to build itself and run a call.

Shared by the tests and the benchmarks; every run is seeded and tiny (a fraction of a second on a CPU).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch

from . import tiny


@dataclass
class ModelCase:
    name: str
    build: Callable[[], Any]
    run: Callable[..., torch.Tensor]  # run(pipe, steps=, size=, seed=, cfg=, **pipe_kwargs) -> output tensor
    num_blocks: int
    separate_cfg: bool  # the pipeline runs CFG as two transformer calls per step
    alt_size: int  # a second resolution the pipeline accepts
    # conditioning inputs beyond the prompt: run() keyword -> make(size, seed) giving a value for it (I2V's first
    # frame, FLF2V's last frame, Fill's mask); run() makes its own default when the keyword is left out
    conditioning: dict[str, Callable[[int, int], Any]] = field(default_factory=dict)
    batched_cfg: bool = False  # the pipeline batches cond/uncond into one call marked "cond_uncond"
    size: int = 32  # run()'s default resolution
    # a DBPrune threshold inside this model's range of per-block input diffs (tests of the dynamic threshold);
    # tiny random weights give each model its own range (CogVideoX's sit around 0.3-0.7, Mochi's early ones
    # near 0.008)
    prune_threshold: float = 0.05
    # the case whose transformer class (adapter) this one shares, with another pipeline or conditioning; the
    # tests mark such cases `variant`, so `pytest -m "not variant"` runs one case per adapter while iterating
    variant_of: str | None = None

    def call_kwargs(self, **run_kwargs: Any) -> dict[str, Any]:
        """The keyword arguments `run(pipe, **run_kwargs)` calls the pipeline with (`cache_dit.calibrate` takes
        them): a stand-in pipeline records them instead of running."""

        def stand_in(**kwargs: Any) -> NoReturn:
            raise _Called(kwargs)

        try:
            self.run(stand_in, **run_kwargs)
        except _Called as called:
            return called.kwargs
        raise RuntimeError(f"the {self.name} case did not call its pipeline")


class _Called(Exception):
    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.kwargs = kwargs


def _run_flux(
    pipe: Any, steps: int = 8, size: int = 32, seed: int = 0, cfg: bool = False, **extra: Any
) -> torch.Tensor:
    pe, pooled = tiny.flux_prompt_embeds()
    if cfg:
        npe, npooled = tiny.flux_prompt_embeds(seed=1)
        extra.update(negative_prompt_embeds=npe, negative_pooled_prompt_embeds=npooled, true_cfg_scale=2.0)
    return pipe(
        prompt_embeds=pe,
        pooled_prompt_embeds=pooled,
        height=size,
        width=size,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        **extra,
    ).images


def _fill_image(size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _fill_mask(size: int, seed: int = 0) -> torch.Tensor:
    """seed 0: a centred square; other seeds: a random rectangle of at least a quarter of each side."""
    mask = torch.zeros(1, 1, size, size)
    if seed == 0:
        mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
        return mask
    g = torch.Generator().manual_seed(seed)
    top, left = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
    mask[..., top : top + size // 2, left : left + size // 2] = 1
    return mask


def _run_flux_fill(
    pipe: Any,
    steps: int = 8,
    size: int = 32,
    seed: int = 0,
    cfg: bool = False,
    image: Any = None,
    mask_image: Any = None,
    **extra: Any,
) -> torch.Tensor:
    """FLUX Fill: the FLUX call plus an image and a mask to fill (default: a centred square)."""
    image = _fill_image(size) if image is None else image
    mask_image = _fill_mask(size) if mask_image is None else mask_image
    return _run_flux(pipe, steps, size, seed, cfg, image=image, mask_image=mask_image, **extra)


def _run_wan(
    pipe: Any, steps: int = 8, size: int = 16, seed: int = 0, cfg: bool = True, **extra: Any
) -> torch.Tensor:
    return pipe(
        prompt_embeds=tiny.wan_prompt_embeds(),
        negative_prompt_embeds=tiny.wan_prompt_embeds(seed=1),
        height=size,
        width=size,
        num_frames=5,
        num_inference_steps=steps,
        guidance_scale=5.0 if cfg else 1.0,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        **extra,
    ).frames


def _run_mochi(
    pipe: Any, steps: int = 8, size: int = 32, seed: int = 0, cfg: bool = True, **extra: Any
) -> torch.Tensor:
    pe, mask = tiny.mochi_prompt_embeds()
    npe, nmask = tiny.mochi_prompt_embeds(seed=1)
    with warnings.catch_warnings():
        # Mochi's RoPE asks for float32 CPU autocast, which torch declines with a warning (harmless)
        warnings.filterwarnings("ignore", message="In CPU autocast", category=UserWarning)
        return pipe(
            prompt_embeds=pe,
            prompt_attention_mask=mask,
            negative_prompt_embeds=npe,
            negative_prompt_attention_mask=nmask,
            height=size,
            width=size,
            num_frames=7,  # 2 latent frames (temporal factor 6)
            num_inference_steps=steps,
            guidance_scale=4.5 if cfg else 1.0,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
            **extra,
        ).frames


def _run_cogvideox(
    pipe: Any, steps: int = 8, size: int = 32, seed: int = 0, cfg: bool = True, **extra: Any
) -> torch.Tensor:
    # 9 frames = 3 latent frames; CogVideoX 1.5 (patch_size_t=2) pads them to 4
    return pipe(
        prompt_embeds=tiny.cogvideox_prompt_embeds(),
        negative_prompt_embeds=tiny.cogvideox_prompt_embeds(seed=1),
        height=size,
        width=size,
        num_frames=9,
        num_inference_steps=steps,
        guidance_scale=6.0 if cfg else 1.0,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        max_sequence_length=tiny.COGVIDEOX_TEXT_LEN,
        **extra,
    ).frames


def _run_cogvideox_i2v(
    pipe: Any,
    steps: int = 8,
    size: int = 32,
    seed: int = 0,
    cfg: bool = True,
    image: Any = None,
    **extra: Any,
) -> torch.Tensor:
    image = tiny.random_image(size, seed=1) if image is None else image
    return _run_cogvideox(pipe, steps, size, seed, cfg, image=image, **extra)


def _run_wan_i2v(
    pipe: Any,
    steps: int = 8,
    size: int = 16,
    seed: int = 0,
    cfg: bool = True,
    image: Any = None,
    **extra: Any,
) -> torch.Tensor:
    """Wan I2V: first frame `image`; FLF2V passes `last_image` too."""
    image = tiny.random_image(size, seed=1) if image is None else image
    return _run_wan(pipe, steps, size, seed, cfg, image=image, **extra)


def _run_wan_flf2v(
    pipe: Any,
    steps: int = 8,
    size: int = 16,
    seed: int = 0,
    cfg: bool = True,
    last_image: Any = None,
    **extra: Any,
) -> torch.Tensor:
    last_image = tiny.random_image(size, seed=2) if last_image is None else last_image
    return _run_wan_i2v(pipe, steps, size, seed, cfg, last_image=last_image, **extra)


def _run_hunyuan_video(
    pipe: Any, steps: int = 8, size: int = 16, seed: int = 0, cfg: bool = False, **extra: Any
) -> torch.Tensor:
    """Guidance-distilled (the `guidance` embedding); `cfg=True` adds true CFG: a second, marked call per step."""
    pe, pooled, mask = tiny.hunyuan_video_prompt_embeds()
    if cfg:
        npe, npooled, nmask = tiny.hunyuan_video_prompt_embeds(seed=1)
        extra.update(
            negative_prompt_embeds=npe,
            negative_pooled_prompt_embeds=npooled,
            negative_prompt_attention_mask=nmask,
            true_cfg_scale=2.0,
        )
    return pipe(
        prompt_embeds=pe,
        pooled_prompt_embeds=pooled,
        prompt_attention_mask=mask,
        height=size,
        width=size,
        num_frames=5,
        num_inference_steps=steps,
        guidance_scale=6.0,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        **extra,
    ).frames


def _quiet(build: Callable[[], Any]) -> Callable[[], Any]:
    def wrapped() -> Any:
        pipe = build()
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return wrapped


MODEL_CASES = [
    ModelCase(
        "flux", _quiet(tiny.tiny_flux_pipeline), _run_flux, num_blocks=6, separate_cfg=False, alt_size=48
    ),
    ModelCase(
        "flux_fill",
        _quiet(tiny.tiny_flux_fill_pipeline),
        _run_flux_fill,
        num_blocks=6,
        separate_cfg=False,
        alt_size=48,
        conditioning={"image": lambda size, seed: _fill_image(size, seed), "mask_image": _fill_mask},
        variant_of="flux",
    ),
    ModelCase(
        "wan", _quiet(tiny.tiny_wan_pipeline), _run_wan, num_blocks=6, separate_cfg=True, alt_size=32, size=16
    ),
    ModelCase(
        "wan_i2v",
        _quiet(tiny.tiny_wan_i2v_pipeline),
        _run_wan_i2v,
        num_blocks=6,
        separate_cfg=True,
        alt_size=32,
        size=16,
        conditioning={"image": lambda size, seed: tiny.random_image(size, seed)},
        variant_of="wan",
    ),
    ModelCase(
        "wan_flf2v",
        _quiet(functools.partial(tiny.tiny_wan_i2v_pipeline, flf2v=True)),
        _run_wan_flf2v,
        num_blocks=6,
        separate_cfg=True,
        alt_size=32,
        size=16,
        conditioning={
            "image": lambda size, seed: tiny.random_image(size, seed),
            "last_image": lambda size, seed: tiny.random_image(size, seed),
        },
        variant_of="wan",
    ),
    ModelCase(
        "mochi",
        _quiet(tiny.tiny_mochi_pipeline),
        _run_mochi,
        num_blocks=6,
        separate_cfg=False,
        alt_size=48,
        batched_cfg=True,
        prune_threshold=0.006,
    ),
    ModelCase(
        "cogvideox",
        _quiet(tiny.tiny_cogvideox_pipeline),
        _run_cogvideox,
        num_blocks=6,
        separate_cfg=False,
        alt_size=48,
        batched_cfg=True,
        prune_threshold=0.4,
    ),
    ModelCase(
        "cogvideox1.5",
        _quiet(functools.partial(tiny.tiny_cogvideox_pipeline, version="1.5")),
        _run_cogvideox,
        num_blocks=6,
        separate_cfg=False,
        alt_size=48,
        batched_cfg=True,
        prune_threshold=0.4,
        variant_of="cogvideox",
    ),
    ModelCase(
        "cogvideox_i2v",
        _quiet(tiny.tiny_cogvideox_i2v_pipeline),
        _run_cogvideox_i2v,
        num_blocks=6,
        separate_cfg=False,
        alt_size=48,
        batched_cfg=True,
        conditioning={"image": lambda size, seed: tiny.random_image(size, seed)},
        prune_threshold=0.4,
        variant_of="cogvideox",
    ),
    ModelCase(
        "hunyuan_video",
        _quiet(tiny.tiny_hunyuan_video_pipeline),
        _run_hunyuan_video,
        num_blocks=6,
        separate_cfg=False,
        alt_size=32,
        size=16,
        prune_threshold=0.017,
    ),
]


CASES = {c.name: c for c in MODEL_CASES}


def count_block_calls(transformer: torch.nn.Module) -> tuple[dict[int, int], dict[int, list[Any]]]:
    """Wrap every block's forward (before a cache is applied) to count real computations and keep inputs.

    Returns (calls per global block id, hidden-states inputs per block id), in the adapter's block order.
    A block the cache skips never reaches the counter.
    """
    from cache_dit.cache_factory.adapters import find_adapter

    counts: dict[int, int] = {}
    inputs: dict[int, list[Any]] = {}
    for idx, (block, io) in enumerate(find_adapter(transformer).blocks(transformer)):
        original = block.forward

        def counting(
            *args: Any, _idx: int = idx, _original: Any = original, _io: Any = io, **kwargs: Any
        ) -> Any:
            counts[_idx] = counts.get(_idx, 0) + 1
            inputs.setdefault(_idx, []).append(_io.hidden_arg.get(args, kwargs))
            return _original(*args, **kwargs)

        block.forward = counting
    return counts, inputs
