"""`adapter="auto"`: derive the block layout from the first (fully computed) transformer call.

Every child of every `nn.ModuleList` is watched during that call. A list is a block list when its blocks run
once each, in order, without interleaving with another list, and each block returns the stream(s) it takes in the
same shape (a residual block). Which returned item is which stream is read from the data: the next block's
argument that receives the very tensor a block returned (or, for the last block of a list, the argument of the
same shape). Of two streams, the one whose argument is named like text (encoder, context, txt, ...) is the
encoder stream. A list that only updates a text stream (a text refiner) runs beside the cache, not in it.

What is derived is a plain declaration (`declared.declare_adapter`), so it is checked the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from . import TransformerAdapter, resolve_block_list
from .declared import declare_adapter

_TEXT_HINTS = ("encoder", "context", "text", "txt", "caption", "prompt", "cap_")


def _is_text(name: str) -> bool:
    return any(h in name.lower() for h in _TEXT_HINTS)


@dataclass
class _Event:
    path: str
    index: int
    bound: dict[str, Any]  # argument name -> value
    output: Any = None


@dataclass
class _ListInfo:
    path: str
    size: int
    events: list[_Event] = field(default_factory=list)


def _bind(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        bound = inspect.signature(type(module).forward).bind(module, *args, **kwargs)
    except TypeError:
        return dict(kwargs)
    named = dict(bound.arguments)
    named.pop(next(iter(named)), None)  # self
    for key, value in list(named.items()):
        if isinstance(value, dict) and inspect.signature(type(module).forward).parameters[key].kind is (
            inspect.Parameter.VAR_KEYWORD
        ):
            named.pop(key)
            named.update(value)
    return named


def _items(output: Any) -> list[Any]:
    return (
        [output]
        if isinstance(output, torch.Tensor)
        else list(output)
        if isinstance(output, (tuple, list))
        else []
    )


def _find_arg(bound: dict[str, Any], value: torch.Tensor, by_identity: bool) -> str | None:
    hits = [
        k
        for k, v in bound.items()
        if isinstance(v, torch.Tensor) and (v is value if by_identity else v.shape == value.shape)
    ]
    return hits[0] if len(hits) == 1 else None  # several of one shape: ambiguous, left to the identity pass


def _layout(info: _ListInfo, following: _Event | None) -> dict[str, Any] | None:
    """The declaration of one list, or None when its blocks are not residual blocks over a flowing stream."""
    events = info.events
    n_out = {len(_items(e.output)) for e in events}
    if len(n_out) != 1 or 0 in n_out:
        return None
    tensor_output = isinstance(events[0].output, torch.Tensor)
    streams: dict[int, str] = {}  # output item -> argument name
    for k, event in enumerate(events):
        nxt = events[k + 1] if k + 1 < len(events) else following
        for j, item in enumerate(_items(event.output)):
            if not isinstance(item, torch.Tensor) or j in streams:
                continue
            name = _find_arg(nxt.bound, item, by_identity=True) if nxt is not None else None
            if name is not None and name in event.bound and event.bound[name].shape == item.shape:
                streams[j] = name
    first = events[0]
    for j, item in enumerate(_items(first.output)):  # items that flow nowhere visible: match by shape
        if j not in streams and isinstance(item, torch.Tensor):
            name = _find_arg(first.bound, item, by_identity=False)
            if name is not None and name not in streams.values():
                streams[j] = name
    if not streams or len(streams) > 2:
        return None
    names = [name for _, name in sorted(streams.items())]
    if len(names) == 1 and _is_text(names[0]):
        return {"path": info.path, "text_only": True}
    hidden, encoder = names if len(names) == 2 else (names[0], None)
    if encoder is not None and _is_text(hidden) and not _is_text(encoder):
        hidden, encoder = encoder, hidden
    role = {j: ("hidden" if name == hidden else "encoder") for j, name in streams.items()}
    items = _items(first.output)
    if any(j not in role and item is not None for j, item in enumerate(items)):
        return None  # the block returns something else the cache cannot stand in for
    returns: Any = "hidden" if tensor_output else tuple(role.get(j) for j in range(len(items)))
    if encoder is None:  # a constant text input, if the block takes one
        text_args = [k for k, v in first.bound.items() if isinstance(v, torch.Tensor) and _is_text(k)]
        encoder = text_args[0] if text_args else None
    return {"path": info.path, "hidden": hidden, "encoder": encoder, "returns": returns}


def derive_adapter(
    transformer: torch.nn.Module, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, TransformerAdapter]:
    """Run `call(*args, **kwargs)` (the transformer's forward) once, watching every ModuleList's children."""
    lists: dict[str, _ListInfo] = {}
    order: list[_Event] = []
    handles = []
    for path, module in transformer.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if any(path.startswith(p + ".") for p in lists):
            continue  # a list inside a block of another list
        info = lists[path] = _ListInfo(path, len(module))
        for index, child in enumerate(module):

            def pre(mod: Any, a: Any, kw: Any, _info: _ListInfo = info, _i: int = index) -> None:
                event = _Event(_info.path, _i, _bind(mod, a, kw))
                _info.events.append(event)
                order.append(event)

            def post(mod: Any, a: Any, kw: Any, out: Any, _info: _ListInfo = info) -> None:
                _info.events[-1].output = out

            handles.append(child.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(child.register_forward_hook(post, with_kwargs=True))
    try:
        out = call(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()

    model = type(transformer).__name__
    runs: list[str] = []  # list paths in the order their (contiguous) runs started
    for event in order:
        if not runs or runs[-1] != event.path:
            runs.append(event.path)
    declared: list[dict[str, Any]] = []
    for path in dict.fromkeys(runs):
        info = lists[path]
        indices = [e.index for e in info.events]
        if indices != list(range(info.size)) or runs.count(path) != 1:
            continue  # not a block list run once in order (interleaved lists, loops over layers, helpers)
        if len({type(m) for m in resolve_block_list(transformer, path)}) != 1:
            continue  # a list of different layers (an MLP's parts), not of blocks
        last_pos = max(i for i, e in enumerate(order) if e.path == path)
        following = next((e for e in order[last_pos + 1 :] if e.path != path), None)
        entry = _layout(info, following)
        if entry is not None:
            declared.append(entry)
    main = [e for e in declared if not e.get("text_only")]
    if not main:
        interleaved = [p for p in dict.fromkeys(runs) if runs.count(p) > 1]
        hint = f" (lists {', '.join(interleaved)} run interleaved)" if interleaved else ""
        raise ValueError(
            f"adapter='auto' found no block list it can cache in {model}{hint}; declare one with "
            "adapter=dict(blocks=[...], hidden=..., encoder=..., returns=...)"
        )
    return out, declare_adapter(transformer, {"blocks": main, "name": f"auto {model}"})
