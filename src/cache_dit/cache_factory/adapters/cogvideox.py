"""CogVideoX 1.0 / 1.5: one list of blocks (2B: 30, 5B: 42) carrying the text and video streams.

1.5 differs only in the patch embedding (`patch_size_t=2`) and rotary position embeddings; the blocks and this
layout are the same, so one adapter serves both, text-to-video and image-to-video.
"""

from . import register_family

register_family(
    "CogVideoXTransformer3DModel",
    pipelines=("CogVideoXPipeline", "CogVideoXImageToVideoPipeline"),
    name="CogVideoX",
    blocks=["transformer_blocks"],
    returns=("hidden", "encoder"),  # the pipelines batch cond/uncond into one call marked "cond_uncond"
)
