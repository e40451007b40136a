"""Mochi 1: one list of dual-stream blocks (48 in mochi-1-preview).

Every block returns (hidden_states, encoder_hidden_states). The last block is built with
`context_pre_only=True`: it reads the text stream but returns it unchanged, so its encoder residual is zero and
the shared layout below holds for it too (a cached or pruned last block adds a zero text residual).
"""

from . import register_family

register_family(
    "MochiTransformer3DModel",
    pipelines=("MochiPipeline",),
    name="Mochi",
    blocks=["transformer_blocks"],
    returns=("hidden", "encoder"),  # MochiPipeline batches cond/uncond into one call marked "cond_uncond"
)
