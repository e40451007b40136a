"""MMDiT lineage: joint-attention blocks over two streams (SD3: the last block returns encoder=None), AuraFlow
and HiDream with single-stream blocks over the concatenated sequence after the joint ones.
"""

from . import register_family

# encoder_none_last; CFG: batched
register_family(
    "SD3Transformer2DModel",
    blocks=["transformer_blocks"],
    hidden="hidden_states",
    encoder="encoder_hidden_states",
    returns=("encoder", "hidden"),
)

# segments; CFG: batched
register_family(
    "AuraFlowTransformer2DModel",
    blocks=[
        {
            "path": "joint_transformer_blocks",
            "hidden": "hidden_states",
            "encoder": "encoder_hidden_states",
            "returns": ("encoder", "hidden"),
        },
        {"path": "single_transformer_blocks", "hidden": "hidden_states", "returns": "hidden"},
    ],
)

# segments; CFG: batched; beside the cache: caption_projection
register_family(
    "HiDreamImageTransformer2DModel",
    blocks=[
        {
            "path": "double_stream_blocks",
            "hidden": "hidden_states",
            "encoder": "encoder_hidden_states",
            "returns": ("hidden", "encoder"),
        },
        {"path": "single_stream_blocks", "hidden": "hidden_states", "returns": "hidden"},
    ],
)
