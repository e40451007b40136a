"""Mochi 1: one list of dual-stream blocks (48 in mochi-1-preview).

Every block returns (hidden_states, encoder_hidden_states). The last block is built with
`context_pre_only=True`: it reads the text stream but returns it unchanged, so its encoder residual is zero and
the shared layout below holds for it too (a cached or pruned last block adds a zero text residual).
"""

from diffusers import MochiTransformer3DModel

from . import ArgSpec, BlockIO, TransformerAdapter, register_adapter

# block(hidden_states, encoder_hidden_states, temb, encoder_attention_mask, image_rotary_emb)
#   -> (hidden_states, encoder_hidden_states)
_MOCHI_BLOCK = BlockIO(
    hidden_arg=ArgSpec("hidden_states", 0),
    encoder_arg=ArgSpec("encoder_hidden_states", 1),
    hidden_out=0,
    encoder_out=1,
    num_outputs=2,
)

register_adapter(
    MochiTransformer3DModel,
    TransformerAdapter(
        name="Mochi",
        block_lists=(("transformer_blocks", _MOCHI_BLOCK),),
        timestep_arg=ArgSpec("timestep", 2),
        separate_cfg=False,  # MochiPipeline batches cond/uncond into one call marked "cond_uncond"
        pipelines=("MochiPipeline",),
    ),
)
