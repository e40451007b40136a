"""Per-model knowledge, as data: which block lists a transformer has and how its blocks pass tensors.

Adding a model = adding one file with one `register_adapter(TransformerClass, TransformerAdapter(...))`.
The registry is keyed by the transformer class and looked up along the MRO, never by class-name prefix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass(frozen=True)
class ArgSpec:
    """Where a forward argument sits: by keyword `name`, else at `position` among the positional args."""

    name: str
    position: int

    def get(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.name in kwargs:
            return kwargs[self.name]
        if len(args) > self.position:
            return args[self.position]
        return None


@dataclass(frozen=True)
class BlockIO:
    """How one block list's blocks take and return the hidden (image/video) and encoder (text) streams.

    Attributes:
        hidden_arg: the hidden-states input.
        encoder_arg: the encoder-states input (None: the block takes none).
        hidden_out: index of the hidden states in the output tuple; None: the block returns the tensor itself.
        encoder_out: index of the encoder states in the output tuple; None: the block does not return them
            (they are a constant side input, as in Wan).
        num_outputs: length of the output tuple (1 when `hidden_out` is None).
    """

    hidden_arg: ArgSpec
    encoder_arg: ArgSpec | None
    hidden_out: int | None
    encoder_out: int | None
    num_outputs: int = 1

    def inputs(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = self.hidden_arg.get(args, kwargs)
        encoder = self.encoder_arg.get(args, kwargs) if self.encoder_arg is not None else None
        return hidden, encoder

    def outputs(self, output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = output if self.hidden_out is None else output[self.hidden_out]
        encoder = output[self.encoder_out] if self.encoder_out is not None else None
        return hidden, encoder

    @property
    def carries_encoder(self) -> bool:
        """The block updates the encoder stream (so it has a residual of its own)."""
        return self.encoder_out is not None

    def make_output(self, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        """Build what the block would have returned, from the two streams."""
        if self.hidden_out is None:
            return hidden
        out: list[Any] = [None] * self.num_outputs
        out[self.hidden_out] = hidden
        if self.encoder_out is not None:
            out[self.encoder_out] = encoder
        return tuple(out)


@dataclass(frozen=True)
class TransformerAdapter:
    """What the cache needs to know about one transformer class.

    Attributes:
        name: display name ("FLUX.1").
        block_lists: (attribute name, BlockIO) in execution order; together they form one sequence of blocks
            that Fn/Bn and block ids index into.
        timestep_arg: the transformer forward's timestep argument (used to detect a new denoising run when
            the cache is applied to a bare transformer).
        separate_cfg: default of `do_separate_classifier_free_guidance` (the pipeline runs CFG as two calls).
        pipelines: pipeline class names this adapter is tested with.
        latents_arg: the transformer forward's latent input (both CFG calls of a step get the same one).
        long_skips: late blocks take the outputs of early blocks as skip inputs (HunyuanDiT's U-Net-like
            skips), so the last Bn blocks only see computed skips when Bn_compute_blocks <= Fn_compute_blocks.
        side_passes: (keyword, value) pairs marking calls that are not denoising steps (a kv "extract" pass):
            they run uncached and are not counted.
    """

    def is_side_pass(self, kwargs: dict[str, Any]) -> bool:
        return any(key in kwargs and kwargs[key] == value for key, value in self.side_passes)

    name: str
    block_lists: tuple[tuple[str, BlockIO], ...]
    timestep_arg: ArgSpec
    separate_cfg: bool
    pipelines: tuple[str, ...]
    latents_arg: ArgSpec = ArgSpec("hidden_states", 0)
    long_skips: bool = False
    side_passes: tuple[tuple[str, Any], ...] = ()

    def block_lists_of(self, transformer: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList, BlockIO]]:
        """Each declared block list (path, the list, its I/O layout) in execution order."""
        return [(path, resolve_block_list(transformer, path, self.name), io) for path, io in self.block_lists]

    def blocks(self, transformer: torch.nn.Module) -> list[tuple[torch.nn.Module, BlockIO]]:
        """All blocks in execution order with their I/O layout."""
        return [(block, io) for _, blocks, io in self.block_lists_of(transformer) for block in blocks]


def resolve_block_list(
    transformer: torch.nn.Module, path: str, adapter_name: str = ""
) -> torch.nn.ModuleList:
    """Follow a dotted path ("transformer_blocks", "mode_blocks.image", "stages.0.blocks") to a ModuleList.

    Each part is an attribute, a ModuleDict key or a ModuleList index.
    """
    node: Any = transformer
    for part in path.split("."):
        if isinstance(node, torch.nn.ModuleDict) and part in node:
            node = node[part]
        elif isinstance(node, (torch.nn.ModuleList, torch.nn.Sequential)) and part.isdigit():
            node = node[int(part)] if int(part) < len(node) else None
        else:
            node = getattr(node, part, None)
        if node is None:
            break
    if not isinstance(node, torch.nn.ModuleList):
        who = f"the {adapter_name} adapter" if adapter_name else "the adapter"
        raise ValueError(
            f"{type(transformer).__name__}.{path} is not a torch.nn.ModuleList (got {type(node).__name__}); "
            f"{who} cannot cache it"
        )
    return node


@dataclass(frozen=True)
class FamilySpec:
    """A registered family written as a declaration (the `adapter=dict(...)` form, see `declared.py`).

    It is turned into a `TransformerAdapter` against the first instance (argument positions come from the
    blocks' own signatures) and checked exactly like a user's declaration.
    """

    spec: Mapping[str, Any]
    pipelines: tuple[str, ...] = ()


_REGISTRY: dict[type, TransformerAdapter | FamilySpec] = {}
_UNSUPPORTED: dict[type, str] = {}  # class -> why the runner cannot cache it
_RESOLVED: dict[type, TransformerAdapter] = {}


def _diffusers_class(cls_name: str) -> type | None:
    import diffusers

    return getattr(diffusers, cls_name, None)


def register_family(cls_name: str, pipelines: tuple[str, ...] = (), **spec: Any) -> None:
    """Register a diffusers transformer class (by its exported name) with a declaration; a class the installed
    diffusers does not have is skipped."""
    cls = _diffusers_class(cls_name)
    if cls is not None:
        _REGISTRY[cls] = FamilySpec(spec, pipelines)
        _RESOLVED.pop(cls, None)


def register_unsupported(cls_name: str, reason: str) -> None:
    """A class the runner cannot cache: applying a cache raises a ValueError with `reason`."""
    cls = _diffusers_class(cls_name)
    if cls is not None:
        _UNSUPPORTED[cls] = reason


def register_adapter(transformer_cls: type, adapter: TransformerAdapter) -> None:
    """Register (or replace) the adapter for a transformer class."""
    if not isinstance(transformer_cls, type) or not issubclass(transformer_cls, torch.nn.Module):
        raise TypeError(f"transformer_cls must be a torch.nn.Module subclass, got {transformer_cls!r}")
    _REGISTRY[transformer_cls] = adapter
    _RESOLVED.pop(transformer_cls, None)


def unregister_adapter(transformer_cls: type) -> None:
    _REGISTRY.pop(transformer_cls, None)
    _RESOLVED.pop(transformer_cls, None)


@contextmanager
def registered_adapter(transformer_cls: type, adapter: TransformerAdapter) -> Iterator[None]:
    """Register an adapter for the duration of a `with` block (tests), restoring what was there."""
    previous = _REGISTRY.get(transformer_cls)
    register_adapter(transformer_cls, adapter)
    try:
        yield
    finally:
        if previous is None:
            unregister_adapter(transformer_cls)
        else:
            register_adapter(transformer_cls, previous)


def supported_models() -> dict[str, tuple[str, ...]]:
    """Transformer class name -> the pipelines it is tested with."""
    _load_builtin()
    return {cls.__name__: entry.pipelines for cls, entry in _REGISTRY.items()}


def find_adapter(transformer: torch.nn.Module) -> TransformerAdapter:
    """The adapter for `type(transformer)` or its nearest registered base class; ValueError if none."""
    _load_builtin()
    model = type(transformer).__name__
    for cls in type(transformer).__mro__:
        if cls in _UNSUPPORTED:
            raise ValueError(
                f"{model} is not supported by cache-dit: {_UNSUPPORTED[cls]}. If only some of its block lists "
                "can be cached, declare them with adapter=dict(blocks=[...], ...)"
            )
        entry = _REGISTRY.get(cls)
        if isinstance(entry, TransformerAdapter):
            return entry
        if isinstance(entry, FamilySpec):
            if cls not in _RESOLVED:
                from .declared import declare_adapter

                adapter = declare_adapter(transformer, {"name": cls.__name__, **entry.spec})
                _RESOLVED[cls] = replace(adapter, pipelines=entry.pipelines)
            return _RESOLVED[cls]
    raise ValueError(
        f"{model} is not supported by cache-dit; supported: {', '.join(sorted(supported_models()))}. For "
        "another transformer pass adapter='auto' (the layout is learned on the first call) or declare its "
        "blocks with adapter=dict(blocks=[...], hidden=..., encoder=..., returns=...)"
    )


_loaded = False


def _load_builtin() -> None:
    """Import the built-in adapter modules once (they import diffusers' model classes)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import (  # noqa: F401
        audio,
        cogvideox,
        cogview,
        dit_single,
        flux,
        flux_family,
        hunyuan,
        hunyuan_video,
        joint,
        mmdit,
        mochi,
        two_stream,
        unsupported,
        wan,
        wan_family,
    )
