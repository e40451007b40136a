"""A declared adapter: describe a transformer the library does not know, without writing library code.

    apply_cache_on_pipe(
        pipe,
        adapter=dict(
            blocks=["transformer_blocks", "single_transformer_blocks"],  # block lists, in execution order
            hidden="hidden_states",  # the blocks' image/video stream argument
            encoder="encoder_hidden_states",  # the blocks' text stream argument (None: they take none)
            returns=("encoder", "hidden"),  # what a block returns: "hidden", or a tuple naming each item
        ),
        ...,
    )

A list may override any of hidden/encoder/returns: `blocks=[{"path": "blocks", "returns": "hidden"}, ...]`.
Paths may go through ModuleDicts and ModuleLists ("mode_blocks.image"). Everything that can be checked without
running the model is checked here; the first call then checks every block's inputs and outputs against the
declaration (see `CacheRunner._checking_forward`) and `validate=True` replays one step through the cached path.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from . import ArgSpec, BlockIO, TransformerAdapter, resolve_block_list

_KEYS = (
    "blocks",
    "hidden",
    "encoder",
    "returns",
    "timestep",
    "latents",
    "separate_cfg",
    "long_skips",
    "side_pass",
    "name",
)
_LIST_KEYS = ("path", "hidden", "encoder", "returns")
_STREAMS = ("hidden", "encoder")


def _fail_unknown(what: str, key: Any, allowed: Sequence[str]) -> None:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{what} has unknown key {key!r}{hint} (allowed: {', '.join(allowed)})")


def forward_params(module: torch.nn.Module) -> tuple[list[str], bool]:
    """(parameter names of `module.forward` in order, without self; whether it takes **kwargs)."""
    forward = type(module).forward
    params = list(inspect.signature(forward).parameters.values())[1:]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names += [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def arg_spec(module: torch.nn.Module, name: str, what: str) -> ArgSpec:
    """Where argument `name` of `module.forward` sits; ValueError naming the block and its arguments if absent."""
    names, var_kw = forward_params(module)
    if name in names:
        return ArgSpec(name, names.index(name))
    if var_kw:
        return ArgSpec(name, 10_000)  # only ever passed by keyword
    raise ValueError(
        f"{what}: {type(module).__name__}.forward has no argument {name!r}; its arguments: {', '.join(names)}"
    )


def timestep_spec(transformer: torch.nn.Module, name: str | None = None) -> ArgSpec | None:
    """The transformer forward's timestep argument: `name`, else the first named like "timestep", else "t"."""
    names, _ = forward_params(transformer)
    # "timestep(s)" anywhere in the name, else a parameter named just "t" (a common custom-DiT spelling)
    name = name or next((n for n in names if "timestep" in n), None) or ("t" if "t" in names else None)
    return ArgSpec(name, names.index(name)) if name in names else None


def _returns(value: Any, what: str) -> tuple[int | None, int | None, int]:
    """(hidden_out, encoder_out, num_outputs) from "hidden" or a tuple such as ("encoder", "hidden").

    A tuple item None is an item the block returns as None (the cache returns None there too).
    """
    if value == "hidden":
        return None, None, 1
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(
            f"{what}: returns={value!r} is not allowed; allowed: 'hidden' (the block returns the tensor) or a "
            "tuple naming each returned item, e.g. ('encoder', 'hidden')"
        )
    items = list(value)
    bad = [v for v in items if v not in (*_STREAMS, None)]
    if bad or items.count("hidden") != 1 or items.count("encoder") > 1:
        raise ValueError(
            f"{what}: returns={tuple(items)!r} must name 'hidden' once and 'encoder' at most once; other items "
            "may only be None (returned as None)"
        )
    encoder = items.index("encoder") if "encoder" in items else None
    return items.index("hidden"), encoder, len(items)


def declare_adapter(transformer: torch.nn.Module, spec: Mapping[str, Any]) -> TransformerAdapter:
    """Build (and check) a `TransformerAdapter` from a user's declaration; see the module docstring."""
    if not isinstance(spec, Mapping):
        raise TypeError(f"adapter must be a dict, 'auto' or a TransformerAdapter, got {type(spec).__name__}")
    for key in spec:
        if key not in _KEYS:
            _fail_unknown("adapter", key, _KEYS)
    if "blocks" not in spec:
        raise ValueError("adapter needs 'blocks': the block list attribute paths, in execution order")
    blocks = spec["blocks"]
    if isinstance(blocks, (str, Mapping)):
        blocks = [blocks]
    if not isinstance(blocks, Sequence) or not blocks:
        raise ValueError(f"adapter['blocks'] must be a non-empty list of paths or dicts, got {blocks!r}")
    model = type(transformer).__name__
    lists: list[tuple[str, BlockIO]] = []
    for entry in blocks:
        entry = {"path": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
            raise ValueError(f"adapter['blocks'] items must be paths or dicts with a 'path', got {entry!r}")
        for key in entry:
            if key not in _LIST_KEYS:
                _fail_unknown(f"adapter['blocks'] entry {entry['path']!r}", key, _LIST_KEYS)
        merged = {k: entry.get(k, spec.get(k)) for k in ("hidden", "encoder", "returns")}
        path = entry["path"]
        block_list = resolve_block_list(transformer, path, "declared")
        if len(block_list) == 0:
            raise ValueError(f"{model}.{path} is an empty ModuleList")
        what = f"adapter, block list {model}.{path}"
        first = block_list[0]
        hidden = arg_spec(first, merged["hidden"] or "hidden_states", what)
        encoder_name = (
            merged["encoder"] if "encoder" in entry or "encoder" in spec else "encoder_hidden_states"
        )
        encoder = None
        if encoder_name is not None:
            names, var_kw = forward_params(first)
            if encoder_name in names or var_kw or "encoder" in entry or "encoder" in spec:
                encoder = arg_spec(first, encoder_name, what)
        hidden_out, encoder_out, num = _returns(merged["returns"] or "hidden", what)
        if encoder_out is not None and encoder is None:
            raise ValueError(f"{what}: returns names 'encoder' but no encoder argument is declared")
        lists.append((path, BlockIO(hidden, encoder, hidden_out, encoder_out, num)))

    forward_names, _ = forward_params(transformer)
    timestep = spec.get("timestep")
    latents = spec.get("latents", forward_names[0] if forward_names else "hidden_states")
    for key, value in (("timestep", timestep or ""), ("latents", latents)):
        if not isinstance(value, str):
            raise TypeError(f"adapter[{key!r}] must be a str (a forward argument name), got {value!r}")
    if timestep:
        arg_spec(transformer, timestep, f"adapter, {model}")  # raises naming the forward's arguments
    timestep_arg = timestep_spec(transformer, timestep) or ArgSpec("", 10_000)
    separate_cfg = spec.get("separate_cfg", False)
    long_skips = spec.get("long_skips", False)
    for key, value in (("separate_cfg", separate_cfg), ("long_skips", long_skips)):
        if not isinstance(value, bool):
            raise TypeError(f"adapter[{key!r}] must be a bool, got {value!r}")
    side_pass = spec.get("side_pass") or {}
    if not isinstance(side_pass, Mapping):
        raise TypeError(f"adapter['side_pass'] must be a dict of forward keyword -> value, got {side_pass!r}")
    return TransformerAdapter(
        name=str(spec.get("name", f"declared {model}")),
        block_lists=tuple(lists),
        timestep_arg=timestep_arg,
        separate_cfg=separate_cfg,
        pipelines=(),
        latents_arg=arg_spec(transformer, latents, f"adapter, {model}"),
        long_skips=long_skips,
        side_passes=tuple(side_pass.items()),
    )
