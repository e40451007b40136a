"""torch.compile support: where compiled graphs end and the cache's Python decisions begin.

The cache decides in Python between blocks (one host read per decision, per-call state, stats). Traced by dynamo,
that code would be guarded on its state (step index, TaylorSeer store, block index) and recompiled every step. So:

* `eager_boundary` marks the runner's entry points (the transformer's forward wrapper and each block's wrapper):
  dynamo never traces them, nor anything they call. Their frames are skipped, not graph-broken: under regional
  compilation (`block.compile()`, diffusers' `compile_repeated_blocks`), dynamo skips `Module._call_impl` and
  this boundary and picks up the block's own forward as the compiled frame, exactly as without a cache
  (`fullgraph=True` works).
* `compiled_call` runs a block's own forward from inside that boundary *compiled again*, with the compile
  callback (backend, mode, options) that was active when the boundary was entered: under whole-model
  `torch.compile(transformer)` each block's compute is still compiled, the decisions around it are not (nor is
  the transformer's own code around the blocks).

Re-entering the callback uses dynamo's `set_eval_frame`; where a torch build lacks it, blocks under a
whole-model compile run eagerly (still exact, just slower).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch

try:  # dynamo's frame-evaluation hook (what torch.compile installs while a compiled function runs)
    from torch._C._dynamo.eval_frame import set_eval_frame as _set_eval_frame
    from torch._dynamo.decorators import skip as _skip
except ImportError:  # pragma: no cover - builds without dynamo
    _set_eval_frame = None
try:  # fullgraph=True checks that each compiled call ran compiled code (torch >= 2.10)
    from torch._C._dynamo.eval_frame import set_fullgraph_compiled_frame_count as _fullgraph_count
except ImportError:  # pragma: no cover
    _fullgraph_count = None

F = TypeVar("F", bound=Callable[..., Any])

_local = threading.local()


def _callbacks() -> list[Any]:
    stack = getattr(_local, "callbacks", None)
    if stack is None:
        stack = _local.callbacks = []
    return stack


def eager_boundary(fn: F) -> F:
    """Never trace `fn` (nor what it calls); remember the compile callback active at entry for `compiled_call`."""
    if _set_eval_frame is None:  # pragma: no cover
        return torch.compiler.disable(fn)

    @functools.wraps(fn)
    def boundary(*args: Any, **kwargs: Any) -> Any:
        prior = _set_eval_frame(None)  # dynamo off inside: no frame below is traced
        stack = _callbacks()
        # a nested boundary (block inside the transformer's) keeps the outer compile callback
        stack.append(prior if prior is not None else (stack[-1] if stack else None))
        try:
            return fn(*args, **kwargs)
        finally:
            stack.pop()
            if prior is not None and _fullgraph_count is not None:
                # entered straight from a compiled callable (`block.compile(fullgraph=True)`): a block the cache
                # skipped ran no compiled frame, by design; count one so fullgraph's check does not fail
                count = _fullgraph_count(-1)
                _fullgraph_count(count + 1 if count >= 0 else count)
            _set_eval_frame(prior)

    # Dynamo never evaluates this frame (a fast per-code skip flag, no Python callback per call); a compiled
    # caller that reaches it graph-breaks there.
    return _skip(boundary)  # type: ignore[return-value]


def compiled_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `fn` under the compile callback the innermost `eager_boundary` was entered with (eager if none)."""
    stack = getattr(_local, "callbacks", None)
    callback = stack[-1] if stack else None
    if callback is None or _set_eval_frame is None:
        return fn(*args, **kwargs)
    prior = _set_eval_frame(callback)
    try:
        return fn(*args, **kwargs)
    finally:
        _set_eval_frame(prior)


def unwrap_compiled(module: Any) -> Any:
    """The module inside `torch.compile(module)` (an `OptimizedModule`); anything else as is."""
    while isinstance(module, torch._dynamo.eval_frame.OptimizedModule):
        module = module._orig_mod
    return module


def _check_limit(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def set_compile_configs(
    recompile_limit: int = 64, accumulated_recompile_limit: int | None = None
) -> dict[str, int]:
    """Raise dynamo's recompile limits, for runs that sweep many shapes (resolutions, batch sizes, frames).

    Each new input shape a compiled block sees may compile it once more (after one change dynamo marks that
    dimension dynamic, so a sweep usually costs two or three compiles per block class); past `recompile_limit`
    (torch's default: 8) dynamo silently runs that code eagerly. The cache itself adds no recompiles.
    `accumulated_recompile_limit` (all frames together) defaults to at least `recompile_limit`. Returns the
    previous values: `set_compile_configs(**previous)` undoes the change.
    """
    config = torch._dynamo.config
    _check_limit("recompile_limit", recompile_limit)
    if accumulated_recompile_limit is None:
        accumulated_recompile_limit = max(config.accumulated_recompile_limit, recompile_limit)
    _check_limit("accumulated_recompile_limit", accumulated_recompile_limit)
    previous = {
        "recompile_limit": config.recompile_limit,
        "accumulated_recompile_limit": config.accumulated_recompile_limit,
    }
    config.recompile_limit = recompile_limit
    config.accumulated_recompile_limit = accumulated_recompile_limit
    return previous
