"""Wan 2.1: one list of blocks; the text states are a constant side input, only the video stream flows.

I2V and FLF2V use the same transformer class with image inputs (CLIP tokens joined to the text tokens before
the blocks, conditioning latents concatenated to the noise): the blocks and this layout are unchanged.
"""

from . import register_family

register_family(
    "WanTransformer3DModel",
    pipelines=("WanPipeline", "WanImageToVideoPipeline"),
    name="Wan2.1",
    blocks=["blocks"],  # block(hidden_states, encoder_hidden_states, temb, rotary_emb) -> hidden_states
    separate_cfg=True,
)
