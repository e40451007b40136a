"""Tiny, randomly initialised diffusers pipelines built from config arguments (no downloads).

Used by the tests: they run in a fraction of a second on a CPU. Text encoders are left out; callers pass
`prompt_embeds` (see `flux_prompt_embeds` / `wan_prompt_embeds`).
"""

from __future__ import annotations

import PIL.Image
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLMochi,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxFillPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
    MochiPipeline,
    MochiTransformer3DModel,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

FLUX_TEXT_DIM = 32
FLUX_POOLED_DIM = 16
WAN_TEXT_DIM = 32


def tiny_flux_transformer(
    num_layers: int = 2, num_single_layers: int = 4, seed: int = 0, in_channels: int = 16, out_channels=None
) -> FluxTransformer2DModel:
    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=FLUX_TEXT_DIM,
        pooled_projection_dim=FLUX_POOLED_DIM,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def _tiny_flux_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()


def tiny_flux_pipeline(num_layers: int = 2, num_single_layers: int = 4, seed: int = 0) -> FluxPipeline:
    """FluxPipeline with 2 dual + 4 single blocks (6 in all), width 32."""
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_tiny_flux_vae(seed),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=tiny_flux_transformer(num_layers, num_single_layers, seed),
    )


def tiny_sd3_pipeline(num_layers: int = 4, seed: int = 0) -> StableDiffusion3Pipeline:
    """StableDiffusion3Pipeline with 4 joint blocks, width 32, no text encoders: CFG is batched into one
    unmarked transformer call per step. Call it with :func:`sd3_prompt_embeds` at 32x32."""
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=num_layers,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=16,
        out_channels=4,
        pos_embed_max_size=16,
    ).eval()
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_tiny_flux_vae(seed),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def sd3_prompt_embeds(seed: int = 0) -> dict[str, torch.Tensor]:
    """The four embedding arguments of the tiny SD3 pipeline (batch 1, text length 8); the negative ones are
    zeros."""
    g = torch.Generator().manual_seed(seed)
    prompt, pooled = torch.randn(1, 8, 32, generator=g), torch.randn(1, 16, generator=g)
    return {
        "prompt_embeds": prompt,
        "pooled_prompt_embeds": pooled,
        "negative_prompt_embeds": torch.zeros_like(prompt),
        "negative_pooled_prompt_embeds": torch.zeros_like(pooled),
    }


def tiny_pixart_pipeline(num_layers: int = 4, seed: int = 0) -> PixArtAlphaPipeline:
    """PixArtAlphaPipeline with 4 blocks, no text encoder: CFG batched into one unmarked call per step. Call it
    with `prompt_embeds` (B, S, 32), `prompt_attention_mask`, the negative pair and `prompt=None,
    negative_prompt=None, use_resolution_binning=False` at 32x32."""
    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=num_layers,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    ).eval()
    return PixArtAlphaPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=_tiny_flux_vae(seed),
        transformer=transformer,
        scheduler=DDIMScheduler(),
    )


def tiny_flux_fill_pipeline(
    num_layers: int = 2, num_single_layers: int = 4, seed: int = 0
) -> FluxFillPipeline:
    """FluxFillPipeline: the transformer takes packed latents, masked-image latents and mask (36 channels)."""
    vae = _tiny_flux_vae(seed)
    # packed channels: latents (4*4) + masked image latents (4*4) + mask (vae_scale_factor**2 * 4 = 4)
    transformer = tiny_flux_transformer(num_layers, num_single_layers, seed, in_channels=36, out_channels=16)
    return FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )


def flux_prompt_embeds(batch: int = 1, seq_len: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds (B, S, 32), pooled_prompt_embeds (B, 16)) for the tiny FLUX pipelines."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, seq_len, FLUX_TEXT_DIM, generator=g), torch.randn(
        batch, FLUX_POOLED_DIM, generator=g
    )


def tiny_wan_transformer(num_layers: int = 6, seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=WAN_TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()


def tiny_wan_pipeline(num_layers: int = 6, seed: int = 0) -> WanPipeline:
    """WanPipeline with 6 blocks, width 24 (runs CFG as two transformer calls per step)."""
    return WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=_tiny_wan_vae(seed),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=tiny_wan_transformer(num_layers, seed),
    )


def tiny_wan22_pipeline() -> WanPipeline:
    """Wan 2.2's two-denoiser WanPipeline: `transformer` for t >= 950 (with the tiny scheduler's shift 7: steps 0-1
    of 8), `transformer_2` (other weights) for the rest."""
    base = tiny_wan_pipeline()
    pipe = WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=base.vae,
        scheduler=base.scheduler,
        transformer=base.transformer,
        transformer_2=tiny_wan_transformer(seed=1),
        boundary_ratio=0.95,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def wan_prompt_embeds(batch: int = 1, seq_len: int = 8, seed: int = 0) -> torch.Tensor:
    """prompt_embeds (B, S, 32) for the tiny Wan pipeline."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, seq_len, WAN_TEXT_DIM, generator=g)


# ----------------------------------------------------------------------------------------------------------
# Mochi
# ----------------------------------------------------------------------------------------------------------

MOCHI_TEXT_DIM = 32


def tiny_mochi_transformer(num_layers: int = 6, seed: int = 0) -> MochiTransformer3DModel:
    """6 blocks, width 16; the last block updates only the video stream (as in mochi-1-preview)."""
    torch.manual_seed(seed)
    return MochiTransformer3DModel(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=num_layers,
        pooled_projection_dim=16,
        in_channels=12,
        text_embed_dim=MOCHI_TEXT_DIM,
        time_embed_dim=4,
        activation_fn="swiglu",
        max_sequence_length=16,
    ).eval()


def tiny_mochi_pipeline(num_layers: int = 6, seed: int = 0) -> MochiPipeline:
    """MochiPipeline with 6 blocks; CFG is batched into one transformer call per step ("cond_uncond")."""
    torch.manual_seed(seed)
    vae = AutoencoderKLMochi(
        latent_channels=12,
        out_channels=3,
        encoder_block_out_channels=(32, 32, 32, 32),
        decoder_block_out_channels=(32, 32, 32, 32),
        layers_per_block=(1, 1, 1, 1, 1),
    ).eval()
    return MochiPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        transformer=tiny_mochi_transformer(num_layers, seed),
    )


def mochi_prompt_embeds(batch: int = 1, seq_len: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds (B, S, 32), prompt_attention_mask (B, S)) for the tiny Mochi pipeline."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, seq_len, MOCHI_TEXT_DIM, generator=g), torch.ones(
        batch, seq_len, dtype=torch.long
    )


# ----------------------------------------------------------------------------------------------------------
# CogVideoX (1.0 and 1.5, T2V and I2V)
# ----------------------------------------------------------------------------------------------------------

COGVIDEOX_TEXT_DIM = 32
COGVIDEOX_TEXT_LEN = 8  # = max_text_seq_length: CogVideoX 1.0's sincos position embedding needs them equal


def tiny_cogvideox_transformer(
    num_layers: int = 6,
    seed: int = 0,
    patch_size_t: int | None = None,
    in_channels: int = 4,
    use_rotary: bool = False,
) -> CogVideoXTransformer3DModel:
    torch.manual_seed(seed)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=in_channels,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=COGVIDEOX_TEXT_DIM,
        num_layers=num_layers,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        patch_size_t=patch_size_t,
        temporal_compression_ratio=4,
        max_text_seq_length=COGVIDEOX_TEXT_LEN,
        use_rotary_positional_embeddings=use_rotary or patch_size_t is not None,
    ).eval()


def _tiny_cogvideox_vae(seed: int = 0) -> AutoencoderKLCogVideoX:
    torch.manual_seed(seed)
    return AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    ).eval()


def tiny_cogvideox_pipeline(num_layers: int = 6, seed: int = 0, version: str = "1.0") -> CogVideoXPipeline:
    """CogVideoXPipeline with 6 blocks; CFG batched into one call ("cond_uncond").

    version "1.0": sincos position embeddings (the prompt must be `COGVIDEOX_TEXT_LEN` tokens long);
    "1.5": `patch_size_t=2` and rotary embeddings (the pipeline pads the latent frames to an even count).
    """
    if version not in ("1.0", "1.5"):
        raise ValueError(f"version must be '1.0' or '1.5', got {version!r}")
    patch_size_t = 2 if version == "1.5" else None
    return CogVideoXPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=_tiny_cogvideox_vae(seed),
        transformer=tiny_cogvideox_transformer(num_layers, seed, patch_size_t=patch_size_t),
        scheduler=CogVideoXDDIMScheduler(timestep_spacing="trailing"),
    )


def tiny_cogvideox_i2v_pipeline(num_layers: int = 6, seed: int = 0) -> CogVideoXImageToVideoPipeline:
    """CogVideoXImageToVideoPipeline: the transformer takes noise and first-frame latents (2 x 4 channels)."""
    return CogVideoXImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=_tiny_cogvideox_vae(seed),
        transformer=tiny_cogvideox_transformer(num_layers, seed, in_channels=8, use_rotary=True),
        scheduler=CogVideoXDDIMScheduler(timestep_spacing="trailing"),
    )


def cogvideox_prompt_embeds(batch: int = 1, seed: int = 0) -> torch.Tensor:
    """prompt_embeds (B, COGVIDEOX_TEXT_LEN, 32) for the tiny CogVideoX pipelines."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, COGVIDEOX_TEXT_LEN, COGVIDEOX_TEXT_DIM, generator=g)


# ----------------------------------------------------------------------------------------------------------
# Wan 2.1 I2V / FLF2V
# ----------------------------------------------------------------------------------------------------------

CLIP_DIM = 16
CLIP_IMAGE_SIZE = 32
CLIP_TOKENS = (CLIP_IMAGE_SIZE // 8) ** 2 + 1  # patches + class token


def _tiny_wan_vae(seed: int = 0) -> AutoencoderKLWan:
    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()


def tiny_wan_i2v_pipeline(num_layers: int = 6, seed: int = 0, flf2v: bool = False) -> WanImageToVideoPipeline:
    """WanImageToVideoPipeline with 6 blocks and a tiny CLIP vision encoder (two marked CFG calls per step).

    The transformer takes noise (16) + frame mask (4) + conditioning-video latents (16) = 36 channels and the
    CLIP image tokens; `flf2v=True` gives it the position embedding of first + last frame tokens.
    """
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36,
        out_channels=16,
        text_dim=WAN_TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=CLIP_DIM,
        added_kv_proj_dim=24,
        pos_embed_seq_len=2 * CLIP_TOKENS if flf2v else None,
    ).eval()
    torch.manual_seed(seed + 1)
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=CLIP_DIM,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=CLIP_IMAGE_SIZE,
            patch_size=8,
            projection_dim=CLIP_DIM,
        )
    ).eval()
    image_processor = CLIPImageProcessor(
        crop_size=CLIP_IMAGE_SIZE, size={"shortest_edge": CLIP_IMAGE_SIZE}, do_center_crop=True
    )
    return WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=_tiny_wan_vae(seed),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_processor=image_processor,
        image_encoder=image_encoder,
        transformer=transformer,
    )


def random_image(size: int, seed: int = 0) -> PIL.Image.Image:
    """A seeded random RGB image (size x size) to condition image-to-video pipelines on."""
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    return PIL.Image.fromarray(pixels)


# ----------------------------------------------------------------------------------------------------------
# HunyuanVideo
# ----------------------------------------------------------------------------------------------------------

HUNYUAN_TEXT_DIM = 32
HUNYUAN_POOLED_DIM = 16


def tiny_hunyuan_video_transformer(
    num_layers: int = 2, num_single_layers: int = 4, seed: int = 0
) -> HunyuanVideoTransformer3DModel:
    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=HUNYUAN_TEXT_DIM,
        pooled_projection_dim=HUNYUAN_POOLED_DIM,
        rope_axes_dim=(2, 2, 4),
    ).eval()


def tiny_hunyuan_video_pipeline(
    num_layers: int = 2, num_single_layers: int = 4, seed: int = 0
) -> HunyuanVideoPipeline:
    """HunyuanVideoPipeline with 2 dual-stream + 4 single-stream blocks (guidance-distilled: one call per step,
    two marked calls with `true_cfg_scale > 1`)."""
    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    ).eval()
    return HunyuanVideoPipeline(
        text_encoder=None,
        tokenizer=None,
        transformer=tiny_hunyuan_video_transformer(num_layers, num_single_layers, seed),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=None,
        tokenizer_2=None,
    )


def hunyuan_video_prompt_embeds(
    batch: int = 1, seq_len: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt_embeds (B, S, 32), pooled (B, 16), attention mask (B, S)) for the tiny HunyuanVideo pipeline."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, seq_len, HUNYUAN_TEXT_DIM, generator=g),
        torch.randn(batch, HUNYUAN_POOLED_DIM, generator=g),
        torch.ones(batch, seq_len, dtype=torch.long),
    )
