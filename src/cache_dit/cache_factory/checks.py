"""First-pass checks of the adapter against the model, and `validate=True`'s replay of a stored step.

A wrong adapter (declared, derived or registered) fails on the first call, naming the block, instead of
giving a wrong image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .policies.output import first_tensor
from .state import Pass

if TYPE_CHECKING:
    from .runner import CacheRunner


def checking_forward(
    runner: CacheRunner,
    p: Pass,
    idx: int,
    forward: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Callable[..., Any]:
    """First pass only: check block `idx`'s inputs now and its output when it runs, against the adapter."""
    io, name = runner.ios[idx], f"{type(runner.transformer).__name__}.{runner.block_names[idx]}"
    if idx <= p.last_block:
        raise ValueError(
            f"{name} ran after {runner.block_names[p.last_block]}: the adapter lists the blocks in another "
            "order than the model runs them (block lists must be given in execution order, each run once)"
        )
    p.last_block = idx
    hidden, encoder = io.inputs(args, kwargs)
    if not isinstance(hidden, torch.Tensor):
        raise ValueError(
            f"{name}: the adapter's hidden argument {io.hidden_arg.name!r} (position "
            f"{io.hidden_arg.position}) is {type(hidden).__name__}, expected a tensor"
        )
    if io.encoder_arg is not None and encoder is not None:
        if not isinstance(encoder, torch.Tensor):
            raise ValueError(
                f"{name}: the adapter's encoder argument {io.encoder_arg.name!r} is "
                f"{type(encoder).__name__}, expected a tensor or None"
            )

    def checked(*a: Any, **kw: Any) -> Any:
        out = forward(*a, **kw)
        if io.hidden_out is None:
            if not isinstance(out, torch.Tensor):
                raise ValueError(
                    f"{name} returned {type(out).__name__}, but the adapter says it returns the hidden states tensor"
                )
        elif not isinstance(out, (tuple, list)) or len(out) != io.num_outputs:
            got = (
                f"{type(out).__name__} of length {len(out)}"
                if isinstance(out, (tuple, list))
                else type(out).__name__
            )
            raise ValueError(
                f"{name} returned a {got}, but the adapter says a tuple of {io.num_outputs} "
                f"(hidden at {io.hidden_out}, encoder at {io.encoder_out})"
            )
        if io.hidden_out is not None:
            unnamed = [
                i
                for i, item in enumerate(out)
                if item is not None and i not in (io.hidden_out, io.encoder_out)
            ]
            if unnamed:
                raise ValueError(
                    f"{name} returned {type(out[unnamed[0]]).__name__} at position {unnamed[0]}, which the "
                    "adapter names neither hidden nor encoder: the cache cannot stand in for it"
                )
        hidden_out, encoder_out = io.outputs(out)
        if not isinstance(hidden_out, torch.Tensor) or hidden_out.shape != hidden.shape:
            got = (
                tuple(hidden_out.shape) if isinstance(hidden_out, torch.Tensor) else type(hidden_out).__name__
            )
            raise ValueError(
                f"{name}: the output the adapter names as hidden states is {got}, expected a tensor of the "
                f"input's shape {tuple(hidden.shape)} (a block must keep the shape of the stream it updates)"
            )
        if isinstance(encoder, torch.Tensor) and encoder.dim() != hidden.dim():
            raise ValueError(
                f"{name}: the adapter's encoder argument {io.encoder_arg.name!r} has shape "
                f"{tuple(encoder.shape)}, but a text stream has the rank of the hidden states "
                f"{tuple(hidden.shape)}: it names another input (e.g. the time embedding)"
            )
        if io.carries_encoder:
            if encoder_out is None:
                runner.none_encoder_out.add(idx)
            elif not isinstance(encoder_out, torch.Tensor):
                raise ValueError(
                    f"{name}: the output the adapter names as encoder states is "
                    f"{type(encoder_out).__name__}, expected a tensor or None"
                )
        return out

    return checked


def can_replay(runner: CacheRunner, p: Pass) -> bool:
    """After the first computed step that stored everything a cached step needs (output mode: never; its
    cached steps use no block, so there is no block description to check)."""
    if p.cached or not runner.caching_enabled or runner.adapter is None or runner.output_mode:
        return False
    if runner.prune is not None:
        return bool(p.branch.blocks)
    return all(start in p.branch.segments for start in runner.segment_starts)


def replay(
    runner: CacheRunner,
    p: Pass,
    orig: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
) -> None:
    """validate=True: run the same inputs again through the cached path; it must give the same output.

    With identical inputs every stored residual is exact, so any difference beyond float rounding means the
    adapter is wrong for this model (a stream it does not know about, a block it misreads).
    """
    runner.validate = False
    again_pass = Pass(branch=p.branch, step=p.step, replay=True)
    if runner.prune is not None:
        again_pass.prune_allowed = True
    runner.current = again_pass
    try:
        again = orig(*args, **kwargs)
    finally:
        runner.current = None
    ref, got = first_tensor(out), first_tensor(again)
    diff = float((ref.float() - got.float()).abs().max())
    scale = float(ref.float().abs().max()) or 1.0
    runner.last_validation_diff = diff
    if not (again_pass.cached or again_pass.pruned) or diff > 1e-3 * scale:
        what = (
            "never reached the cached path"
            if not (again_pass.cached or again_pass.pruned)
            else f"max |diff| {diff:.3g}"
        )
        raise ValueError(
            f"validate=True: a cached step with identical inputs does not reproduce the computed output of "
            f"{type(runner.transformer).__name__} ({what}, output scale {scale:.3g}); the adapter does not "
            "describe this model's blocks correctly"
        )
