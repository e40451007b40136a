"""Joint-sequence DiTs: text and image are concatenated before the blocks (refiner lists on each stream run
beside the cache), so the blocks carry one stream.
"""

from . import register_family

# joint; CFG: unknown
register_family("Ideogram4Transformer2DModel", blocks=["layers"])
# joint; CFG: unknown
register_family("ErnieImageTransformer2DModel", blocks=["layers"], hidden="x")
# joint; CFG: unknown
register_family("OmniGenTransformer2DModel", blocks=["layers"])
# joint; CFG: unknown
register_family("QwenImage21Transformer2DModel", blocks=["transformer_blocks"])
# helper_lists; CFG: batched; beside the cache: context_refiner, noise_refiner
register_family("Lumina2Transformer2DModel", blocks=["layers"])
# single; CFG: batched
register_family("LuminaNextDiT2DModel", blocks=["layers"])
# helper_lists; CFG: batched; beside the cache: noise_refiner, context_refiner
register_family("ZImageTransformer2DModel", blocks=["layers"], hidden="x", timestep="t")
# helper_lists; CFG: unknown; beside the cache: text_fusion.layerwise_blocks, text_fusion.refiner_blocks
register_family("Krea2Transformer2DModel", blocks=["transformer_blocks"])
# helper_lists; CFG: unknown; beside the cache: token_refiner.refiner_blocks
register_family("MiniMaxH3Transformer3DModel", blocks=["transformer_blocks"])
# helper_lists; CFG: unknown; beside the cache: noise_refiner, perceiver.layers
register_family("BriaFibo2Transformer2DModel", blocks=["layers"], hidden="x")
