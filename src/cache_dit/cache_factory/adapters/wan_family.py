"""Wan lineage: one list of blocks; the text states are a constant side input. VACE hints and Wan-Animate's
face adapter are added between blocks by the model's own loop (kept out of the cached residual).
"""

from . import register_family

# single; CFG: separate
register_family(
    "ChronoEditTransformer3DModel",
    blocks=["blocks"],
    hidden="hidden_states",
    encoder="encoder_hidden_states",
    returns="hidden",
    separate_cfg=True,
)

# single; CFG: separate
register_family(
    "SkyReelsV2Transformer3DModel",
    blocks=["blocks"],
    hidden="hidden_states",
    encoder="encoder_hidden_states",
    returns="hidden",
    separate_cfg=True,
)

# added_between_blocks; CFG: separate; beside the cache: vace_blocks
register_family(
    "WanVACETransformer3DModel",
    blocks=["blocks"],
    hidden="hidden_states",
    encoder="encoder_hidden_states",
    returns="hidden",
    separate_cfg=True,
)

# single; CFG: separate
register_family(
    "HeliosTransformer3DModel",
    blocks=["blocks"],
    hidden="hidden_states",
    encoder="encoder_hidden_states",
    returns="hidden",
    separate_cfg=True,
)

# single; CFG: unknown
register_family(
    "AnyFlowTransformer3DModel",
    blocks=["blocks"],
    hidden="hidden_states",
    encoder="encoder_hidden_states",
    returns="hidden",
)

# added_between_blocks; CFG: separate; beside the cache: motion_encoder.res_blocks, face_adapter
register_family(
    "WanAnimateTransformer3DModel",
    blocks=["blocks"],
    hidden="hidden_states",
    encoder="encoder_hidden_states",
    returns="hidden",
    separate_cfg=True,
)

# kv_prefill; CFG: unknown
register_family(
    "WanAnimate2Transformer3DModel",
    side_pass={"kv_cache_mode": "extract"},  # the reference pass that fills the kv cache
    blocks=["blocks"],
    hidden="hidden_states",
    encoder="encoder_hidden_states",
    returns="hidden",
)
