"""Wan lineage: one list of blocks; the text states are a constant side input. VACE hints and Wan-Animate's
face adapter are added between blocks by the model's own loop (kept out of the cached residual).
"""

from . import register_family

# single; CFG: separate
register_family("ChronoEditTransformer3DModel", blocks=["blocks"], separate_cfg=True)
# single; CFG: separate
register_family("SkyReelsV2Transformer3DModel", blocks=["blocks"], separate_cfg=True)
# added_between_blocks; CFG: separate; beside the cache: vace_blocks
register_family("WanVACETransformer3DModel", blocks=["blocks"], separate_cfg=True)
# single; CFG: separate
register_family("HeliosTransformer3DModel", blocks=["blocks"], separate_cfg=True)
# single; CFG: unknown
register_family("AnyFlowTransformer3DModel", blocks=["blocks"])
# added_between_blocks; CFG: separate; beside the cache: motion_encoder.res_blocks, face_adapter
register_family("WanAnimateTransformer3DModel", blocks=["blocks"], separate_cfg=True)
# kv_prefill; CFG: unknown
register_family("WanAnimate2Transformer3DModel", blocks=["blocks"], side_pass={"kv_cache_mode": "extract"})
