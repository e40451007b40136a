"""ParaAttention (`para-attn`): detection and the supported-version check.

Checked here with para-attn 0.3.38 (the latest release), diffusers 0.42.1 and torch 2.14 on 2 CPU ranks:

- FLUX: diffusers' attention dispatch calls `scaled_dot_product_attention(..., enable_gqa=False)`;
  ParaAttention's `UnifiedAttnMode` forwards every keyword to `ulysses_attn_func`, which has no `enable_gqa`
  parameter, so the first attention call raises `TypeError`.
- Wan: ParaAttention replaces `WanTransformer3DModel.forward` with a copy written for an older diffusers; it
  fails on the (cos, sin) tuple that diffusers 0.42's rotary embedding returns (`AttributeError`).

A shim that drops `enable_gqa` would fix FLUX only, by patching ParaAttention's classes globally, and Wan would
still need a new forward. So the cache does not paper over it: applying a cache to a transformer that
para-attn <= 0.3.38 parallelized raises one clear error naming the versions, and points to diffusers' own
`enable_parallelism`, which works with the cache. Later para-attn versions are let through (with an explicit
`parallel_group=`), as they may have fixed this.
"""

from __future__ import annotations

import re
import sys
from typing import Any

LAST_CHECKED_PARA_ATTN = (
    0,
    3,
    38,
)  # this version and older are refused (checked failing with diffusers 0.42.1)


def is_para_attn_parallelized(transformer: Any) -> bool:
    """ParaAttention's adapters mark what they parallelize with `_is_parallelized = True`."""
    return getattr(transformer, "_is_parallelized", False) is True


def _version_tuple(text: str) -> tuple[int, ...]:
    """Leading release numbers: "0.3.38" -> (0, 3, 38); "0.3.38.dev1" -> (0, 3, 38); "0.3.39rc1" -> (0, 3, 39)."""
    parts = []
    for piece in text.split("+")[0].split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts)


def para_attn_version() -> str | None:
    module = sys.modules.get("para_attn")
    if module is None:
        try:
            import para_attn as module  # noqa: F401
        except ImportError:
            return None
    return str(getattr(module, "__version__", "unknown"))


def check_para_attn() -> None:
    """Raise a clear error when the installed para-attn is one known not to run with this diffusers."""
    import diffusers

    version = para_attn_version()
    if version is None:
        return
    parsed = _version_tuple(version)
    if parsed and parsed <= LAST_CHECKED_PARA_ATTN:
        raise RuntimeError(
            f"ParaAttention para-attn {version} does not run with diffusers {diffusers.__version__}: its "
            "attention rejects the `enable_gqa` argument diffusers' attention dispatch passes (FLUX: TypeError) "
            "and its Wan forward predates diffusers' current rotary embedding. Supported by cache-dit: "
            "para-attn > 0.3.38 with an explicit parallel_group=mesh, or diffusers' native context parallelism "
            "(transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=N))), which the cache "
            "finds by itself."
        )


__all__ = ["check_para_attn", "is_para_attn_parallelized", "para_attn_version"]
