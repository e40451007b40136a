"""CogView / ConsisID: one list of two-stream blocks returning (hidden, encoder)."""

from . import register_family

# two_stream; CFG: batched
register_family("ConsisIDTransformer3DModel", blocks=["transformer_blocks"], returns=("hidden", "encoder"))
# two_stream; CFG: batched
register_family(
    "CogView3PlusTransformer2DModel", blocks=["transformer_blocks"], returns=("hidden", "encoder")
)
# two_stream; CFG: separate
register_family(
    "CogView4Transformer2DModel",
    blocks=["transformer_blocks"],
    returns=("hidden", "encoder"),
    separate_cfg=True,
)
