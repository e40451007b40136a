"""Transformer classes the runner cannot cache without model code, each with the reason a user is told."""

from . import register_unsupported

register_unsupported(
    "LatteTransformer3DModel",
    "its spatial and temporal block lists run interleaved, with reshapes of the hidden states between them, "
    "so no run of consecutive blocks keeps one layout",
)
register_unsupported(
    "AnyFlowFARTransformer3DModel",
    "it denoises frame chunks autoregressively against a KV cache that grows between calls, so a block "
    "residual stored at one step does not describe the next chunk's blocks",
)
register_unsupported(
    "RFD4ProteinaTransformer",
    "it runs its block list several times per call (recycling cycles) and rebuilds a pair representation "
    "between blocks",
)
