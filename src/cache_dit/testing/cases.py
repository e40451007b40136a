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
    """FLUX Fill: the FLUX call plus an image and a centred square mask to fill."""
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return _run_flux(pipe, steps, size, seed, cfg, image=image, mask_image=mask, **extra)


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
