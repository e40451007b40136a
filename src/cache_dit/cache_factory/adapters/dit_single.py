"""Single-stream DiTs: one list of blocks returning the hidden states; text, if any, is a constant cross-
attention input.
"""

from . import register_family

# single; CFG: batched
register_family("PixArtTransformer2DModel", blocks=["transformer_blocks"])
# single; CFG: batched
register_family("DiTTransformer2DModel", blocks=["transformer_blocks"])
# single; CFG: batched
register_family("SanaTransformer2DModel", blocks=["transformer_blocks"])
# single; CFG: batched
register_family("SanaVideoTransformer3DModel", blocks=["transformer_blocks"])
# single; CFG: unknown
register_family("SanaWMTransformer3DModel", blocks=["blocks"], hidden="x", encoder="camera_conditions")
# single; CFG: unknown
register_family("SanaWMLTX2RefinerTransformer3DModel", blocks=["transformer_blocks"])
# single; CFG: batched
register_family("PRXTransformer2DModel", blocks=["blocks"])
# single; CFG: batched
register_family("AllegroTransformer3DModel", blocks=["transformer_blocks"])
# single; CFG: separate
register_family("CosmosTransformer3DModel", blocks=["transformer_blocks"], separate_cfg=True)
# single; CFG: batched
register_family("LTXVideoTransformer3DModel", blocks=["transformer_blocks"])
# single; CFG: unknown
register_family("Kandinsky6SRTransformer3DModel", blocks=["visual_transformer_blocks"])
# single; CFG: unknown
register_family("NucleusMoEImageTransformer2DModel", blocks=["transformer_blocks"])
# joint; CFG: batched
register_family("PriorTransformer", blocks=["transformer_blocks"])
