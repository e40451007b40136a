"""Model cases: one tiny pipeline per supported model, able to build itself and run a call.

Shared by the tests and the benchmarks; every run is seeded and tiny (a fraction of a second on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def _run_flux_fill(
    pipe: Any, steps: int = 8, size: int = 32, seed: int = 0, cfg: bool = False, **extra: Any
) -> torch.Tensor:
    pe, pooled = tiny.flux_prompt_embeds()
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return pipe(
        prompt_embeds=pe,
        pooled_prompt_embeds=pooled,
        image=image,
        mask_image=mask,
        height=size,
        width=size,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        **extra,
    ).images


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
    ),
    ModelCase("wan", _quiet(tiny.tiny_wan_pipeline), _run_wan, num_blocks=6, separate_cfg=True, alt_size=32),
]


CASES = {c.name: c for c in MODEL_CASES}
