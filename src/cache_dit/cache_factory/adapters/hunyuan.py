"""Hunyuan lineage: the text token refiner runs beside the cache; dual- then single-stream blocks. HunyuanDiT
feeds early blocks' outputs to late blocks (long skips), so Bn <= Fn there.
"""

from . import register_family

# helper_lists; CFG: separate; beside the cache: context_embedder.token_refiner.refiner_blocks
register_family(
    "HunyuanImageTransformer2DModel",
    blocks=["transformer_blocks", "single_transformer_blocks"],
    returns=("hidden", "encoder"),
    separate_cfg=True,
)
# helper_lists; CFG: separate; beside the cache: context_embedder.token_refiner.refiner_blocks
register_family(
    "HunyuanVideo15Transformer3DModel",
    blocks=["transformer_blocks"],
    returns=("hidden", "encoder"),
    separate_cfg=True,
)
# helper_lists; CFG: guidance_embed; beside the cache: context_embedder.token_refiner.refiner_blocks
register_family(
    "HunyuanVideoFramepackTransformer3DModel",
    blocks=["transformer_blocks", "single_transformer_blocks"],
    returns=("hidden", "encoder"),
)
# long_skips; CFG: batched
register_family("HunyuanDiT2DModel", blocks=["blocks"], long_skips=True)
