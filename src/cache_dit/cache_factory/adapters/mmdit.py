"""MMDiT lineage: joint-attention blocks over two streams (SD3: the last block returns encoder=None), AuraFlow
and HiDream with single-stream blocks over the concatenated sequence after the joint ones.
"""

from . import register_family

# encoder_none_last; CFG: batched
register_family("SD3Transformer2DModel", blocks=["transformer_blocks"], returns=("encoder", "hidden"))
# segments; CFG: batched
register_family(
    "AuraFlowTransformer2DModel",
    blocks=[
        {"path": "joint_transformer_blocks", "returns": ("encoder", "hidden")},
        "single_transformer_blocks",
    ],
)
# segments; CFG: batched; beside the cache: caption_projection
register_family(
    "HiDreamImageTransformer2DModel",
    blocks=[{"path": "double_stream_blocks", "returns": ("hidden", "encoder")}, "single_stream_blocks"],
)
