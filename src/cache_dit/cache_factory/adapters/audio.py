"""Audio DiTs: one list of blocks over the audio latent sequence; the conditioning is a constant side input."""

from . import register_family

# single; CFG: unknown
register_family(
    "AceStepTransformer1DModel",
    blocks=["layers"],
    hidden="hidden_states",
    encoder="encoder_hidden_states",
    returns="hidden",
)

# single; CFG: unknown
register_family(
    "StableAudio3DiTModel",
    blocks=["transformer_blocks"],
    hidden="hidden_states",
    encoder="context",
    returns="hidden",
)

# single; CFG: batched
register_family(
    "StableAudioDiTModel",
    blocks=["transformer_blocks"],
    hidden="hidden_states",
    encoder="encoder_hidden_states",
    returns="hidden",
)

# single; CFG: unknown
register_family(
    "LongCatAudioDiTTransformer",
    blocks=["blocks"],
    hidden="hidden_states",
    encoder="cond",
    returns="hidden",
)

# single; CFG: unknown
register_family(
    "MiniMaxMusic3Transformer1DModel",
    blocks=["transformer_blocks"],
    hidden="hidden_states",
    returns="hidden",
)
