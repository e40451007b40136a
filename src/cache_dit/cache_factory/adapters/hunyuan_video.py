"""HunyuanVideo: 20 dual-stream blocks then 40 single-stream blocks, one sequence of 60 for Fn/Bn and block ids.

Unlike FLUX's, HunyuanVideo's single-stream blocks split the joint sequence back and return both streams, in
the same order as the dual-stream blocks, so one layout serves both lists.
"""

from diffusers import HunyuanVideoTransformer3DModel

from . import ArgSpec, BlockIO, TransformerAdapter, register_adapter

# Both block kinds: block(hidden_states, encoder_hidden_states, temb, attention_mask, image_rotary_emb,
# token_replace_emb, first_frame_num_tokens) -> (hidden_states, encoder_hidden_states)
_HUNYUAN_BLOCK = BlockIO(
    hidden_arg=ArgSpec("hidden_states", 0),
    encoder_arg=ArgSpec("encoder_hidden_states", 1),
    hidden_out=0,
    encoder_out=1,
    num_outputs=2,
)

register_adapter(
    HunyuanVideoTransformer3DModel,
    TransformerAdapter(
        name="HunyuanVideo",
        block_lists=(("transformer_blocks", _HUNYUAN_BLOCK), ("single_transformer_blocks", _HUNYUAN_BLOCK)),
        timestep_arg=ArgSpec("timestep", 1),
        separate_cfg=False,  # guidance-distilled: one call per step; two marked calls with true_cfg_scale > 1
        pipelines=("HunyuanVideoPipeline",),
    ),
)
