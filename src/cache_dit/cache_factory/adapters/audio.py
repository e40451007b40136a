"""Audio DiTs: one list of blocks over the audio latent sequence; the conditioning is a constant side input."""

from . import register_family

# single; CFG: unknown
register_family("AceStepTransformer1DModel", blocks=["layers"])
# single; CFG: unknown
register_family("StableAudio3DiTModel", blocks=["transformer_blocks"], encoder="context")
# single; CFG: batched
register_family("StableAudioDiTModel", blocks=["transformer_blocks"])
# single; CFG: unknown
register_family("LongCatAudioDiTTransformer", blocks=["blocks"], encoder="cond")
# single; CFG: unknown
register_family("MiniMaxMusic3Transformer1DModel", blocks=["transformer_blocks"])
