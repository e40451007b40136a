"""Wan 2.1: one list of blocks; the text states are a constant side input, only the video stream flows.

I2V and FLF2V use the same transformer class with image inputs (CLIP tokens joined to the text tokens before
the blocks, conditioning latents concatenated to the noise): the blocks and this layout are unchanged.
"""

from diffusers import WanTransformer3DModel

from . import ArgSpec, BlockIO, TransformerAdapter, register_adapter

# block(hidden_states, encoder_hidden_states, temb, rotary_emb) -> hidden_states
_WAN_BLOCK = BlockIO(
    hidden_arg=ArgSpec("hidden_states", 0),
    encoder_arg=ArgSpec("encoder_hidden_states", 1),
    hidden_out=None,
    encoder_out=None,
)

register_adapter(
    WanTransformer3DModel,
    TransformerAdapter(
        name="Wan2.1",
        block_lists=(("blocks", _WAN_BLOCK),),
        timestep_arg=ArgSpec("timestep", 1),
        separate_cfg=True,
        pipelines=("WanPipeline", "WanImageToVideoPipeline"),
    ),
)
