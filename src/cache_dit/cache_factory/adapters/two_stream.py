"""Other two-stream DiTs: blocks update the image/video stream and a second stream (text, or audio for LTX-2)
and return both.
"""

from . import register_family

# two_stream; CFG: separate
register_family(
    "QwenImageTransformer2DModel",
    blocks=["transformer_blocks"],
    returns=("encoder", "hidden"),
    separate_cfg=True,
)
# two_stream; CFG: batched
register_family(
    "LTX2VideoTransformer3DModel",
    blocks=["transformer_blocks"],
    encoder="audio_hidden_states",
    returns=("hidden", "encoder"),
)
# two_stream; CFG: batched
register_family("EasyAnimateTransformer3DModel", blocks=["transformer_blocks"], returns=("hidden", "encoder"))
# two_stream; CFG: unknown
register_family(
    "Cosmos3OmniTransformer",
    blocks=["layers"],
    hidden="gen_seq",
    encoder="und_seq",
    returns=("encoder", "hidden"),
)
# two_stream; CFG: unknown
register_family("GlmImageTransformer2DModel", blocks=["transformer_blocks"], returns=("hidden", "encoder"))
# two_stream; CFG: unknown
register_family(
    "MotifVideoTransformer3DModel",
    blocks=["transformer_blocks", "single_transformer_blocks"],
    returns=("hidden", "encoder"),
)
# two_stream; CFG: unknown
register_family("JoyImageEditTransformer3DModel", blocks=["double_blocks"], returns=("hidden", "encoder"))
# two_stream; CFG: unknown
register_family("JoyImageEditPlusTransformer3DModel", blocks=["double_blocks"], returns=("hidden", "encoder"))
# helper_lists; CFG: separate; beside the cache: text_transformer_blocks
register_family(
    "Kandinsky5Transformer3DModel",
    blocks=["visual_transformer_blocks"],
    hidden="visual_embed",
    encoder="text_embed",
    separate_cfg=True,
)
# helper_lists; CFG: unknown; beside the cache: video_text_transformer_blocks, audio_text_transformer_blocks
register_family(
    "Kandinsky6Transformer3DModel",
    blocks=["visual_transformer_blocks"],
    hidden="vis",
    encoder="text_v",
    returns=("hidden", None),
)
