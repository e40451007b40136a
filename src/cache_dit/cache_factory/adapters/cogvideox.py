"""CogVideoX 1.0 / 1.5: one list of blocks (2B: 30, 5B: 42) carrying the text and video streams.

1.5 differs only in the patch embedding (`patch_size_t=2`) and rotary position embeddings; the blocks and this
layout are the same, so one adapter serves both, text-to-video and image-to-video.
"""

from diffusers import CogVideoXTransformer3DModel

from . import ArgSpec, BlockIO, TransformerAdapter, register_adapter

# block(hidden_states, encoder_hidden_states, temb, image_rotary_emb, attention_kwargs)
#   -> (hidden_states, encoder_hidden_states)
_COGVIDEOX_BLOCK = BlockIO(
    hidden_arg=ArgSpec("hidden_states", 0),
    encoder_arg=ArgSpec("encoder_hidden_states", 1),
    hidden_out=0,
    encoder_out=1,
    num_outputs=2,
)

register_adapter(
    CogVideoXTransformer3DModel,
    TransformerAdapter(
        name="CogVideoX",
        block_lists=(("transformer_blocks", _COGVIDEOX_BLOCK),),
        timestep_arg=ArgSpec("timestep", 2),
        separate_cfg=False,  # the pipelines batch cond/uncond into one call marked "cond_uncond"
        pipelines=("CogVideoXPipeline", "CogVideoXImageToVideoPipeline"),
    ),
)
