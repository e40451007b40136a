"""Helpers that let diffusers' cache hooks run on the FLUX testbed as the bench's peers.

SeaCache (diffusers 0.42.1, hooks/sea_cache.py) decides from the pipeline's cache context, which must carry
step_index, sigma and num_inference_steps, and from the latent given as (C, T, H, W) by a
`raw_vision_callback`; FluxPipeline enters `transformer.cache_context("cond")` with the name only and diffusers
ships no FLUX callback, so without these SeaCache runs every step in full ("fail-open"). FLUX's blocks are in
diffusers' `TransformerBlockRegistry` already.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch


def flux_raw_vision(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[torch.Tensor]:
    """SeaCache's `raw_vision_callback` for FLUX: the packed latent tokens (B, h*w, C) as one (C, 1, h, w)
    latent per batch item (square token grid, as the testbed's)."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    batch, seq, channels = hidden.shape
    side = math.isqrt(seq)
    if side * side != seq:
        raise ValueError(f"flux_raw_vision needs a square token grid, got {seq} tokens")
    return [x.reshape(side, side, channels).permute(2, 0, 1).unsqueeze(1) for x in hidden]


@contextlib.contextmanager
def flux_sea_cache_context(pipe: Any) -> Iterator[None]:
    """For one pipeline call: make `transformer.cache_context(name)` (entered by FluxPipeline each step) carry
    the step index (counted per context name), the scheduler's sigma at that step and the step count."""
    transformer = pipe.transformer
    original = transformer.cache_context
    counts: dict[str, int] = {}

    def with_step(name: str, **kwargs: Any) -> Any:
        index = counts.get(name, 0)
        counts[name] = index + 1
        sigmas = pipe.scheduler.sigmas
        kwargs.setdefault("step_index", index)
        kwargs.setdefault("sigma", float(sigmas[index]))
        kwargs.setdefault("num_inference_steps", len(pipe.scheduler.timesteps))
        return original(name, **kwargs)

    transformer.cache_context = with_step
    try:
        yield
    finally:
        del transformer.cache_context
