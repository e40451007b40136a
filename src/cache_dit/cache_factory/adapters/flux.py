"""FLUX.1: 19 dual-stream blocks then 38 single-stream blocks, one sequence of 57 for Fn/Bn and block ids."""

from diffusers import FluxTransformer2DModel

from . import ArgSpec, BlockIO, TransformerAdapter, register_adapter

# Both block kinds take (hidden_states, encoder_hidden_states, temb, image_rotary_emb, joint_attention_kwargs)
# and return (encoder_hidden_states, hidden_states).
_FLUX_BLOCK = BlockIO(
    hidden_arg=ArgSpec("hidden_states", 0),
    encoder_arg=ArgSpec("encoder_hidden_states", 1),
    hidden_out=1,
    encoder_out=0,
    num_outputs=2,
)

register_adapter(
    FluxTransformer2DModel,
    TransformerAdapter(
        name="FLUX.1",
        block_lists=(("transformer_blocks", _FLUX_BLOCK), ("single_transformer_blocks", _FLUX_BLOCK)),
        timestep_arg=ArgSpec("timestep", 3),
        separate_cfg=False,
        pipelines=("FluxPipeline", "FluxFillPipeline"),
    ),
)
