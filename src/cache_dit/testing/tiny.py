"""Tiny, randomly initialised diffusers pipelines built from config arguments (no downloads).

Used by the tests: they run in a fraction of a second on a CPU. Text encoders are left out; callers pass
`prompt_embeds` (see `flux_prompt_embeds` / `wan_prompt_embeds`).
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxFillPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    WanPipeline,
    WanTransformer3DModel,
)

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
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    return WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=tiny_wan_transformer(num_layers, seed),
    )


def wan_prompt_embeds(batch: int = 1, seq_len: int = 8, seed: int = 0) -> torch.Tensor:
    """prompt_embeds (B, S, 32) for the tiny Wan pipeline."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, seq_len, WAN_TEXT_DIM, generator=g)
