"""FLUX lineage: two-stream blocks then single-stream blocks. Where the single blocks take the concatenated
text+image sequence (FLUX.2, Chroma, Bria FIBO) the cached middle is split at the list boundary.
"""

from . import register_family

# two_stream; CFG: batched
register_family(
    "BriaTransformer2DModel",
    blocks=["transformer_blocks", "single_transformer_blocks"],
    returns=("encoder", "hidden"),
)
# two_stream; CFG: unknown
register_family(
    "LongCatImageTransformer2DModel",
    blocks=["transformer_blocks", "single_transformer_blocks"],
    returns=("encoder", "hidden"),
)
# two_stream; CFG: unknown
register_family(
    "OvisImageTransformer2DModel",
    blocks=["transformer_blocks", "single_transformer_blocks"],
    returns=("encoder", "hidden"),
)
# segments; CFG: separate; beside the cache: distilled_guidance_layer.layers
register_family(
    "ChromaTransformer2DModel",
    blocks=[{"path": "transformer_blocks", "returns": ("encoder", "hidden")}, "single_transformer_blocks"],
    separate_cfg=True,
)
# segments; CFG: guidance_embed
register_family(
    "Flux2Transformer2DModel",
    blocks=[{"path": "transformer_blocks", "returns": ("encoder", "hidden")}, "single_transformer_blocks"],
)
# module_dict; CFG: unknown; beside the cache: txt_mode_blocks
register_family(
    "Flux3Transformer2DModel",
    blocks=["mode_blocks.image", {"path": "single_transformer_blocks", "returns": ("encoder", "hidden")}],
)
# segments; CFG: unknown; beside the cache: caption_projection
register_family(
    "BriaFiboTransformer2DModel",
    blocks=[{"path": "transformer_blocks", "returns": ("encoder", "hidden")}, "single_transformer_blocks"],
)
