"""taylorseer_cache_type='output': forecast the transformer's whole output on a fixed schedule.

A step off the schedule returns the TaylorSeer forecast of the output; no part of the transformer runs. A step
on it, or one the forecast cannot serve, runs in full and updates the forecast. The forecast serves a step only
when every tensor input of the call (latents, text states, ids, masks) has the shape, dtype and device it had
when the forecast was made, and the call asks for the same output type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..state import OutputStore, Pass, layout
from ..taylorseer import TaylorSeer

if TYPE_CHECKING:
    from ..runner import CacheRunner


def input_layouts(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """(position or name, shape, dtype, device) of every tensor argument of a call (one level into lists)."""
    items = [*enumerate(args), *sorted(kwargs.items(), key=lambda kv: kv[0])]
    found: list[tuple[Any, ...]] = []
    for key, value in items:
        if isinstance(value, torch.Tensor):
            found.append((key, layout(value)))
        elif isinstance(value, (list, tuple)):
            found.extend(((key, i), layout(v)) for i, v in enumerate(value) if isinstance(v, torch.Tensor))
    return tuple(found)


class OutputForecast:
    """The output-mode step (see the module docstring)."""

    def __init__(self, runner: CacheRunner) -> None:
        self.runner = runner

    def step(self, p: Pass, orig: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        r = self.runner
        branch = p.branch
        store = branch.output
        inputs = input_layouts(args, kwargs)
        return_dict = kwargs.get("return_dict")
        fits = store is not None and store.seer.factors and store.inputs == inputs
        if p.step not in r.schedule and fits and store.return_dict == return_dict:
            p.cached = True
            branch.cached_steps.append(p.step)
            forecast = store.seer.predict(p.step)
            if forecast is store.seer.factors[0]:  # order 0: never hand out the stored tensor itself
                forecast = forecast.clone()
            return with_first_tensor(store.template, forecast)
        if store is not None and store.seer.factors and not fits:
            r.warn_once(
                "output-layout",
                "an input of the transformer (latents, text states, ids or masks) changed shape/dtype/device "
                "between steps of one call; computing fully",
            )
        p.whole = True
        out = orig(*args, **kwargs)
        value = single_tensor_output(out, type(r.transformer).__name__)
        if not fits or store.return_dict != return_dict:
            store = branch.output = OutputStore(TaylorSeer(r.orders[0], r.config.taylorseer.mix_orders))
        # a copy: the pipeline owns `out` and may change it in place (the stored value must not follow)
        store.seer.update(value.detach().clone(), p.step)
        # the output's structure with an empty stand-in for its tensor (None for a bare tensor)
        store.template = None if isinstance(out, torch.Tensor) else with_first_tensor(out, value.new_empty(0))
        store.inputs, store.return_dict = inputs, return_dict
        return out


def first_tensor(out: Any) -> torch.Tensor:
    """The main output of a transformer call: the tensor itself, the first of a tuple, or `.sample`."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return first_tensor(out[0])
    if hasattr(out, "to_tuple"):
        return first_tensor(out.to_tuple())
    raise TypeError(f"cannot find the output tensor in {type(out).__name__}")


def single_tensor_output(out: Any, model: str) -> torch.Tensor:
    """The one tensor of a transformer output that output mode forecasts (a tensor, a tuple or a diffusers
    `BaseOutput` holding exactly one tensor, first)."""
    if isinstance(out, Mapping):  # diffusers' outputs are dataclasses; their None fields are not in .values()
        items = list(out.values()) if dataclasses.is_dataclass(out) else []
    else:
        items = list(out) if isinstance(out, tuple) else [out]
    tensors = [item for item in items if isinstance(item, torch.Tensor)]
    if not items or not isinstance(items[0], torch.Tensor) or len(tensors) != 1:
        raise ValueError(
            f"taylorseer_cache_type='output' forecasts a transformer output that is one tensor; {model} returned "
            f"{type(out).__name__} with {len(tensors)} tensors. Use taylorseer_cache_type='residual' for it."
        )
    return items[0]


def with_first_tensor(template: Any, value: torch.Tensor) -> Any:
    """`template` (an output `single_tensor_output` accepted, or None for a bare tensor) with its tensor
    replaced by `value`."""
    if template is None or isinstance(template, torch.Tensor):
        return value
    if isinstance(template, tuple):
        return (value, *template[1:])
    first = next(iter(template.keys()))
    return dataclasses.replace(template, **{first: value})
