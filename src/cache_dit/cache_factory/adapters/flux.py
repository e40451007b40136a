"""FLUX.1: 19 dual-stream blocks then 38 single-stream blocks, one sequence of 57 for Fn/Bn and block ids.

Both block kinds take (hidden_states, encoder_hidden_states, temb, image_rotary_emb, joint_attention_kwargs) and
return (encoder_hidden_states, hidden_states).
"""

from . import register_family

register_family(
    "FluxTransformer2DModel",
    pipelines=("FluxPipeline", "FluxFillPipeline"),
    name="FLUX.1",
    blocks=["transformer_blocks", "single_transformer_blocks"],
    returns=("encoder", "hidden"),
)
