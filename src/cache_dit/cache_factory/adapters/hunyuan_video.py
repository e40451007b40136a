"""HunyuanVideo: 20 dual-stream blocks then 40 single-stream blocks, one sequence of 60 for Fn/Bn and block ids.

Unlike FLUX's, HunyuanVideo's single-stream blocks split the joint sequence back and return both streams, in
the same order as the dual-stream blocks, so one layout serves both lists.
"""

from . import register_family

register_family(
    "HunyuanVideoTransformer3DModel",
    pipelines=("HunyuanVideoPipeline",),
    name="HunyuanVideo",
    blocks=["transformer_blocks", "single_transformer_blocks"],
    returns=("hidden", "encoder"),  # guidance-distilled: one call per step; two marked calls with true CFG
)
