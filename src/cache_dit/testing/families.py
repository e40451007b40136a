"""A zoo of tiny instances of every transformer class exported by `diffusers.models.transformers`.

`FAMILIES` maps the transformer class name to a `Family`: how to build a tiny, randomly initialised
instance from the class's own config arguments (widths <= 64, 1-2 blocks per list, at least 3 blocks in
all where the class allows), and the forward kwargs of one denoising step (same shapes every step, the
timestep decreasing with `step`, the latent input moving slightly like a denoising trajectory; everything
seeded and deterministic). Classes that are not denoising transformers of a pipeline (UNet sub-modules,
deprecated or non-denoising models) are listed with `out_of_scope` set to the reason.

`pattern` is a short label of how the blocks pass tensors (see `families_survey.py` for the measured
survey and `PATTERNS` below for the labels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from diffusers.models import transformers as _T

# Pattern labels (how the block lists pass tensors; see families_survey.py for the measured data).
PATTERNS = {
    "two_stream": "two-stream blocks return (hidden, encoder) or (encoder, hidden); layout kept across lists",
    "single": "single-output blocks; text (if any) is a constant side input",
    "joint": "one joint sequence (text and image concatenated before the blocks)",
    "helper_lists": "helper lists (refiners / text blocks) run on another stream before one main list",
    "segments": "text and image concatenated (or rebuilt) between or inside block lists",
    "encoder_none_last": "the last block returns encoder=None",
    "long_skips": "long skip connections between first and second half of the blocks",
    "module_dict": "block list reached through a ModuleDict entry",
    "added_between_blocks": "the model adds something to the hidden stream between blocks (hints, adapters)",
    "kv_prefill": "a denoising step needs a kv cache filled by a separate extract/prefill call",
    "needs_code": "interleaved lists with reshapes / chunked loops: needs model code",
    "out_of_scope": "not a denoising transformer of a pipeline",
}


@dataclass(frozen=True)
class Family:
    """One transformer class: a tiny builder, one denoising step's inputs, and its block-passing pattern."""

    cls_name: str
    build: Callable[..., torch.nn.Module]  # build(seed=0) -> module in eval mode
    inputs: Callable[..., dict[str, Any]]  # inputs(seed=0, step=0) -> forward kwargs
    out_of_scope: str | None = None
    pattern: str = "single"
    cfg_style: str = "none"  # how its main pipeline runs classifier-free guidance (see CFG_STYLES)
    cfg_note: str = ""  # other CFG facts of its pipelines (extra calls, a second denoiser, kv prefill)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # prepare(model, seed=0) -> kwargs to merge into every step's inputs, computed by calls that are NOT
    # denoising steps (a kv "extract" / prefill pass). Call it once per built model, before the steps; it
    # calls the model's forward, so a cache installed on the model sees it.
    prepare: Callable[..., dict[str, Any]] = field(default=lambda model, seed=0: {}, repr=False)

    def step_inputs(self, model: torch.nn.Module, seed: int = 0, step: int = 0) -> dict[str, Any]:
        """inputs(seed, step) plus what `prepare` returns (runs `prepare` on every call: for one-off use)."""
        return {**self.inputs(seed=seed, step=step), **self.prepare(model, seed=seed)}


# CFG styles of the pipelines (read from the pipeline sources of diffusers 0.42.1).
CFG_STYLES = {
    "separate": "two transformer calls per step inside cache_context('cond') / cache_context('uncond')",
    "separate_unmarked": "two transformer calls per step (cond, then uncond) without cache_context marks",
    "batched": "one call on the batch [uncond, cond] (some mark it cache_context('cond_uncond'))",
    "guidance_embed": "one call; the guidance strength is an embedding input (distilled CFG)",
    "guider": "a guider runs the branches under cache_context('pred_cond') / ('pred_uncond')",
    "separate_model": "the unconditional branch runs on a second transformer",
    "none": "no CFG in the pipeline",
}


class _Step:
    """Seeded input maker for one denoising step: constants are the same every step, latents drift."""

    def __init__(self, seed: int, step: int) -> None:
        self.seed, self.step = seed, step
        self.g = torch.Generator().manual_seed(seed)

    def const(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g)

    def lat(self, *shape: int) -> torch.Tensor:
        """A latent on a trajectory: x_step = x0 + 0.05 * step * d (fixed x0, d drawn every call)."""
        x0 = torch.randn(*shape, generator=self.g)
        d = torch.randn(*shape, generator=self.g)
        return x0 + (0.05 * self.step) * d

    def t(self, scale: float = 1000.0, *shape: int) -> torch.Tensor:
        """A timestep that decreases with the step: scale * 0.98 * 0.9**step."""
        value = scale * 0.98 * (0.9**self.step)
        return torch.full(shape or (1,), value, dtype=torch.float32)

    def t_long(self, *shape: int) -> torch.Tensor:
        return self.t(1000.0, *shape).round().long()


def wake_zero_params(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> list[str]:
    """Fill every weight the class initialises to all zeros with small seeded noise; returns their names.

    Many DiTs zero-initialise gates, adaLN modulation, output layers or side branches (adaLN-zero, VACE
    hints, GDN convolutions) so that a fresh model is the identity or outputs zeros. A cache tested on
    such a model proves nothing, so the zoo wakes them up. Biases stay as they are.
    """
    g = torch.Generator().manual_seed(10_000 + seed)
    woken = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.numel() > 0 and not name.endswith("bias") and not param.any():
                param.copy_(torch.randn(param.shape, generator=g, dtype=torch.float32).to(param.dtype) * std)
                woken.append(name)
    return woken


def _builder(cls_name: str, cfg: dict[str, Any], post: Callable[[Any], None] | None = None):
    def build(seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        model = getattr(_T, cls_name)(**cfg)
        wake_zero_params(model, seed)
        if post is not None:
            with torch.no_grad():
                post(model)
        return model.eval()

    return build


def _inputs(fn: Callable[[_Step], dict[str, Any]], return_dict: bool = True):
    def inputs(seed: int = 0, step: int = 0) -> dict[str, Any]:
        kwargs = fn(_Step(seed, step))
        if return_dict:
            kwargs["return_dict"] = False
        return kwargs

    return inputs


FAMILIES: dict[str, Family] = {}


def _add(
    cls_name: str,
    cfg: dict[str, Any],
    fn: Callable[[_Step], dict[str, Any]],
    pattern: str = "single",
    note: str = "",
    return_dict: bool = True,
    post: Callable[[Any], None] | None = None,
    extra: dict[str, Any] | None = None,
    prepare: Callable[..., dict[str, Any]] | None = None,
) -> None:
    FAMILIES[cls_name] = Family(
        cls_name=cls_name,
        build=_builder(cls_name, cfg, post),
        inputs=_inputs(fn, return_dict),
        pattern=pattern,
        note=note,
        extra=dict(extra or {}),
        **({"prepare": prepare} if prepare is not None else {}),
    )


def _out(cls_name: str, reason: str) -> None:
    def _no(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"{cls_name} is out of scope: {reason}")

    FAMILIES[cls_name] = Family(cls_name, _no, _no, out_of_scope=reason, pattern="out_of_scope")


def _ids2d(h: int, w: int, axes: int = 3) -> torch.Tensor:
    """FLUX-style image position ids (h*w, axes): (0, row, col[, 0])."""
    ids = torch.zeros(h, w, axes)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, axes)


# --------------------------------------------------------------------------------------------------------
# FLUX-like (dual blocks then single blocks)

_FLUX_AXES = (4, 6, 6)


def _flux_like_inputs(
    ch: int, text_dim: int, pooled: int | None = None, guidance: bool = False, axes: int = 3
):
    def fn(r: _Step) -> dict[str, Any]:
        kw: dict[str, Any] = dict(
            hidden_states=r.lat(1, 16, ch),
            encoder_hidden_states=r.const(1, 8, text_dim),
            timestep=r.t(1.0),
            img_ids=_ids2d(4, 4, axes),
            txt_ids=torch.zeros(8, axes),
        )
        if pooled is not None:
            kw["pooled_projections"] = r.const(1, pooled)
        if guidance:
            kw["guidance"] = torch.full((1,), 3.5)
        return kw

    return fn


_add(
    "FluxTransformer2DModel",
    dict(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        axes_dims_rope=_FLUX_AXES,
    ),
    _flux_like_inputs(16, 32, pooled=16),
    pattern="two_stream",
)
_add(
    "BriaTransformer2DModel",
    dict(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=_FLUX_AXES,
    ),
    _flux_like_inputs(16, 32),
    pattern="two_stream",
)
_add(
    "ChromaTransformer2DModel",
    dict(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=_FLUX_AXES,
        approximator_num_channels=8,
        approximator_hidden_dim=32,
        approximator_layers=1,
    ),
    _flux_like_inputs(16, 32),
    pattern="segments",
)
_add(
    "LongCatImageTransformer2DModel",
    dict(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=_FLUX_AXES,
    ),
    _flux_like_inputs(16, 32),
    pattern="two_stream",
)
_add(
    "OvisImageTransformer2DModel",
    dict(
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=_FLUX_AXES,
    ),
    _flux_like_inputs(16, 32),
    pattern="two_stream",
)
_add(
    "Flux2Transformer2DModel",
    dict(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        timestep_guidance_channels=16,
        mlp_ratio=2.0,
        axes_dims_rope=(4, 4, 4, 4),
    ),
    _flux_like_inputs(16, 32, guidance=True, axes=4),
    pattern="segments",
)
_add(
    "Flux3Transformer2DModel",
    dict(
        in_channels=16,
        cond_in_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        timestep_channels=16,
        mlp_ratio=2.0,
        axes_dims_rope=(4, 4, 4, 4),
    ),
    _flux_like_inputs(16, 32, axes=4),
    pattern="module_dict",
)


def _bria_fibo_inputs(r: _Step) -> dict[str, Any]:
    kw = _flux_like_inputs(16, 32)(r)
    kw["text_encoder_layers"] = [r.const(1, 8, 16) for _ in range(3)]
    return kw


_add(
    "BriaFiboTransformer2DModel",
    dict(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=_FLUX_AXES,
        text_encoder_dim=16,
    ),
    _bria_fibo_inputs,
    pattern="segments",
)

# --------------------------------------------------------------------------------------------------------
# SD3 / AuraFlow / HiDream


_add(
    "SD3Transformer2DModel",
    dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=16,
        out_channels=4,
        pos_embed_max_size=16,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 8, 8),
        encoder_hidden_states=r.const(1, 8, 32),
        pooled_projections=r.const(1, 16),
        timestep=r.t(1000.0),
    ),
    pattern="encoder_none_last",
)
_add(
    "AuraFlowTransformer2DModel",
    dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=16,
        caption_projection_dim=32,
        out_channels=4,
        pos_embed_max_size=64,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 8, 8),
        encoder_hidden_states=r.const(1, 4, 16),
        timestep=r.t(1.0),
    ),
    pattern="segments",
)
_add(
    "HiDreamImageTransformer2DModel",
    dict(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_channels=[8, 4],
        text_emb_dim=8,
        num_routed_experts=4,
        num_activated_experts=2,
        axes_dims_rope=(4, 2, 2),
        max_resolution=(32, 32),
        llama_layers=(0, 1),
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 8, 8),
        timesteps=r.t(1000.0),
        encoder_hidden_states_t5=r.const(1, 8, 8),
        encoder_hidden_states_llama3=r.const(2, 1, 8, 4),
        pooled_embeds=r.const(1, 8),
    ),
    pattern="segments",
)

# --------------------------------------------------------------------------------------------------------
# Wan family


_DROP = object()


def _wan_cfg(**kw: Any) -> dict[str, Any]:
    cfg = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=32,
        num_layers=3,
        cross_attn_norm=True,
        rope_max_seq_len=32,
    )
    cfg.update(kw)
    return {k: v for k, v in cfg.items() if v is not _DROP}


def _wan_inputs(r: _Step, ch: int = 4) -> dict[str, Any]:
    return dict(
        hidden_states=r.lat(1, ch, 2, 8, 8),
        timestep=r.t(1000.0),
        encoder_hidden_states=r.const(1, 8, 16),
    )


_add("WanTransformer3DModel", _wan_cfg(qk_norm="rms_norm_across_heads"), _wan_inputs)
_add("ChronoEditTransformer3DModel", _wan_cfg(), _wan_inputs)
_add("SkyReelsV2Transformer3DModel", _wan_cfg(), _wan_inputs)
_add(
    "WanVACETransformer3DModel",
    _wan_cfg(vace_layers=[0, 2], vace_in_channels=8),
    lambda r: dict(**_wan_inputs(r), control_hidden_states=r.const(1, 8, 2, 8, 8)),
    pattern="added_between_blocks",
    note="vace_blocks compute hints first; the main loop adds hint * scale after blocks 0 and 2",
)
_add(
    "HeliosTransformer3DModel",
    _wan_cfg(rope_dim=(4, 4, 4), rope_max_seq_len=_DROP),
    _wan_inputs,
)
_add(
    "AnyFlowTransformer3DModel",
    _wan_cfg(),
    lambda r: dict(
        hidden_states=r.lat(1, 2, 4, 8, 8),
        timestep=r.t(1000.0, 1, 2),
        r_timestep=r.t(500.0, 1, 2),
        encoder_hidden_states=r.const(1, 8, 16),
    ),
)
_add(
    "AnyFlowFARTransformer3DModel",
    _wan_cfg(compressed_patch_size=(1, 4, 4), full_chunk_limit=3),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 4, 8, 8),
        timestep=r.t(1000.0, 1, 4),
        r_timestep=r.t(500.0, 1, 4),
        encoder_hidden_states=r.const(1, 8, 16),
        chunk_partition=[2, 2],
    ),
    pattern="needs_code",
)

# --------------------------------------------------------------------------------------------------------
# CogVideoX / CogView / ConsisID / GLM

_COGVIDEO = dict(
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=4,
    out_channels=4,
    time_embed_dim=8,
    text_embed_dim=16,
    num_layers=3,
    sample_width=8,
    sample_height=8,
    sample_frames=9,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=8,
)


def _cogvideo_inputs(r: _Step) -> dict[str, Any]:
    return dict(
        hidden_states=r.lat(1, 3, 4, 8, 8),
        encoder_hidden_states=r.const(1, 8, 16),
        timestep=r.t_long(1),
    )


_add("CogVideoXTransformer3DModel", _COGVIDEO, _cogvideo_inputs, pattern="two_stream")
_add(
    "ConsisIDTransformer3DModel",
    dict(_COGVIDEO, is_train_face=False, is_kps=False),
    _cogvideo_inputs,
    pattern="two_stream",
)


def _cogview_inputs(r: _Step) -> dict[str, Any]:
    return dict(
        hidden_states=r.lat(1, 4, 8, 8),
        encoder_hidden_states=r.const(1, 8, 8),
        timestep=r.t_long(1),
        original_size=torch.tensor([[64.0, 64.0]]),
        target_size=torch.tensor([[64.0, 64.0]]),
        crop_coords=torch.tensor([[0.0, 0.0]]),
    )


_COGVIEW = dict(
    patch_size=2,
    in_channels=4,
    num_layers=3,
    attention_head_dim=8,
    num_attention_heads=2,
    out_channels=4,
    text_embed_dim=8,
    time_embed_dim=8,
    condition_dim=2,
    pos_embed_max_size=8,
    sample_size=8,
)
_add("CogView3PlusTransformer2DModel", _COGVIEW, _cogview_inputs, pattern="two_stream")
_add(
    "CogView4Transformer2DModel",
    dict(_COGVIEW, rope_axes_dim=(4, 4)),
    _cogview_inputs,
    pattern="two_stream",
)
# --------------------------------------------------------------------------------------------------------
# HunyuanVideo / HunyuanImage / Framepack / Motif


_add(
    "HunyuanVideoTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 1, 8, 8),
        timestep=r.t_long(1),
        encoder_hidden_states=r.const(1, 6, 16),
        encoder_attention_mask=torch.ones(1, 6),
        pooled_projections=r.const(1, 8),
        guidance=torch.full((1,), 6000.0),
    ),
    pattern="helper_lists",
)
_add(
    "HunyuanImageTransformer2DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=(1, 1),
        text_embed_dim=16,
        rope_axes_dim=(4, 4),
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 8, 8),
        timestep=r.t(1000.0),
        encoder_hidden_states=r.const(1, 6, 16),
        encoder_attention_mask=torch.ones(1, 6),
    ),
    pattern="helper_lists",
)

# --------------------------------------------------------------------------------------------------------
# PixArt / Sana / DiT / Latte / HunyuanDiT / Lumina

_add(
    "PixArtTransformer2DModel",
    dict(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=3,
        cross_attention_dim=16,
        sample_size=8,
        patch_size=2,
        caption_channels=16,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 8, 8),
        encoder_hidden_states=r.const(1, 6, 16),
        timestep=r.t_long(1),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
    ),
)
_add(
    "DiTTransformer2DModel",
    dict(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=3,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
    ),
    lambda r: dict(hidden_states=r.lat(1, 4, 8, 8), timestep=r.t_long(1), class_labels=torch.tensor([3])),
)
_SANA = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=8,
    num_layers=3,
    num_cross_attention_heads=2,
    cross_attention_head_dim=8,
    cross_attention_dim=16,
    caption_channels=8,
    sample_size=8,
    patch_size=1,
)
_add(
    "SanaTransformer2DModel",
    _SANA,
    lambda r: dict(
        hidden_states=r.lat(1, 4, 8, 8), encoder_hidden_states=r.const(1, 6, 8), timestep=r.t(1000.0)
    ),
)
_add(
    "SanaVideoTransformer3DModel",
    dict(_SANA, patch_size=(1, 2, 2)),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 2, 8, 8), encoder_hidden_states=r.const(1, 6, 8), timestep=r.t(1000.0)
    ),
)
_add(
    "LatteTransformer3DModel",
    dict(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=16,
        sample_size=8,
        patch_size=2,
        norm_type="ada_norm_single",
        num_embeds_ada_norm=1000,
        caption_channels=16,
        video_length=2,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 2, 8, 8), timestep=r.t_long(1), encoder_hidden_states=r.const(1, 6, 16)
    ),
    pattern="needs_code",
)


def _hunyuan_dit_inputs(r: _Step) -> dict[str, Any]:
    from diffusers.models.embeddings import get_2d_rotary_pos_embed

    rope = get_2d_rotary_pos_embed(8, ((0, 0), (4, 4)), (4, 4))
    return dict(
        hidden_states=r.lat(1, 4, 8, 8),
        timestep=r.t(1000.0),
        encoder_hidden_states=r.const(1, 4, 16),
        text_embedding_mask=torch.ones(1, 4),
        encoder_hidden_states_t5=r.const(1, 6, 8),
        text_embedding_mask_t5=torch.ones(1, 6),
        image_meta_size=torch.tensor([[64.0, 64.0, 64.0, 64.0, 0.0, 0.0]]),
        style=torch.zeros(1, dtype=torch.long),
        image_rotary_emb=rope,
    )


_add(
    "HunyuanDiT2DModel",
    dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        hidden_size=16,
        num_layers=4,
        cross_attention_dim=16,
        cross_attention_dim_t5=8,
        pooled_projection_dim=8,
        text_len=4,
        text_len_t5=6,
    ),
    _hunyuan_dit_inputs,
    pattern="long_skips",
)
_add(
    "Lumina2Transformer2DModel",
    dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=32,
        num_layers=3,
        num_refiner_layers=1,
        num_attention_heads=2,
        num_kv_heads=1,
        multiple_of=16,
        axes_dim_rope=(4, 6, 6),
        axes_lens=(32, 32, 32),
        cap_feat_dim=16,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 8, 8),
        timestep=r.t(1.0),
        encoder_hidden_states=r.const(1, 6, 16),
        encoder_attention_mask=torch.ones(1, 6, dtype=torch.bool),
    ),
    pattern="helper_lists",
)


def _lumina_next_inputs(r: _Step) -> dict[str, Any]:
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    return dict(
        hidden_states=r.lat(1, 4, 8, 8),
        timestep=r.t(1.0),
        encoder_hidden_states=r.const(1, 6, 16),
        encoder_mask=torch.ones(1, 6),
        image_rotary_emb=get_2d_rotary_pos_embed_lumina(16, 16, 16, linear_factor=1.0, ntk_factor=1.0),
        cross_attention_kwargs={},
    )


_add(
    "LuminaNextDiT2DModel",
    dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=32,
        num_layers=3,
        num_attention_heads=2,
        num_kv_heads=2,
        multiple_of=16,
        cross_attention_dim=16,
        learn_sigma=True,
    ),
    _lumina_next_inputs,
)

# --------------------------------------------------------------------------------------------------------
# Mochi / LTX / LTX2 / Allegro / Cosmos / EasyAnimate

_add(
    "MochiTransformer3DModel",
    dict(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=3,
        pooled_projection_dim=16,
        in_channels=4,
        text_embed_dim=16,
        time_embed_dim=4,
        max_sequence_length=8,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 2, 8, 8),
        encoder_hidden_states=r.const(1, 8, 16),
        timestep=r.t_long(1),
        encoder_attention_mask=torch.ones(1, 8, dtype=torch.bool),
    ),
    pattern="two_stream",
)
_add(
    "LTXVideoTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=3,
        caption_channels=16,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 2 * 4 * 4, 4),
        encoder_hidden_states=r.const(1, 6, 16),
        timestep=r.t_long(1),
        encoder_attention_mask=torch.ones(1, 6),
        num_frames=2,
        height=4,
        width=4,
    ),
)
_add(
    "LTX2VideoTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=3,
        caption_channels=16,
        rope_double_precision=False,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 2 * 4 * 4, 4),
        audio_hidden_states=r.lat(1, 9, 4),
        encoder_hidden_states=r.const(1, 8, 16),
        audio_encoder_hidden_states=r.const(1, 8, 16),
        timestep=r.t(1000.0),
        encoder_attention_mask=torch.ones(1, 8, dtype=torch.bool),
        num_frames=2,
        height=4,
        width=4,
        audio_num_frames=9,
        fps=25.0,
    ),
    pattern="two_stream",
)
_add(
    "AllegroTransformer3DModel",
    dict(
        patch_size=2,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        cross_attention_dim=16,
        sample_height=8,
        sample_width=8,
        sample_frames=8,
        caption_channels=8,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 2, 8, 8), encoder_hidden_states=r.const(1, 6, 8), timestep=r.t_long(1)
    ),
)
_add(
    "CosmosTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=3,
        mlp_ratio=2,
        text_embed_dim=16,
        adaln_lora_dim=4,
        max_size=(4, 32, 32),
        patch_size=(1, 2, 2),
        rope_scale=(2.0, 1.0, 1.0),
        concat_padding_mask=True,
        extra_pos_embed_type="learnable",
        encoder_hidden_states_channels=16,
        crossattn_proj_in_channels=16,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 2, 8, 8),
        timestep=r.t(1.0),
        encoder_hidden_states=r.const(1, 8, 16),
        fps=30,
        padding_mask=torch.zeros(1, 1, 8, 8),
    ),
)
_add(
    "EasyAnimateTransformer3DModel",
    dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        patch_size=2,
        sample_width=8,
        sample_height=8,
        num_layers=3,
        mmdit_layers=3,
        time_embed_dim=8,
        text_embed_dim=16,
        text_embed_dim_t5=16,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 2, 8, 8),
        timestep=r.t_long(1),
        encoder_hidden_states=r.const(1, 8, 16),
        encoder_hidden_states_t5=r.const(1, 8, 16),
    ),
    pattern="two_stream",
)

# --------------------------------------------------------------------------------------------------------
# Qwen-Image / Z-Image / OmniGen / PRX / Kandinsky / misc

_add(
    "QwenImageTransformer2DModel",
    dict(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        axes_dims_rope=(4, 6, 6),
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 16, 16),
        encoder_hidden_states=r.const(1, 7, 16),
        encoder_hidden_states_mask=torch.ones(1, 7),
        timestep=r.t(1.0),
        img_shapes=[(1, 4, 4)],
    ),
    pattern="two_stream",
)
_add(
    "ZImageTransformer2DModel",
    dict(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=4,
        dim=32,
        n_layers=3,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=16,
        axes_dims=[4, 6, 6],
        axes_lens=[64, 64, 64],
    ),
    lambda r: dict(x=[r.lat(4, 1, 8, 8)], t=r.t(1.0), cap_feats=[r.const(6, 16)]),
    pattern="helper_lists",
)
_add(
    "PRXTransformer2DModel",
    dict(
        in_channels=4,
        patch_size=2,
        context_in_dim=16,
        hidden_size=32,
        mlp_ratio=2.0,
        num_heads=2,
        depth=3,
        axes_dim=[8, 8],
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 8, 8), timestep=r.t(1.0), encoder_hidden_states=r.const(1, 6, 16)
    ),
)
_add(
    "PriorTransformer",
    dict(
        num_attention_heads=2,
        attention_head_dim=4,
        num_layers=3,
        embedding_dim=8,
        num_embeddings=7,
        additional_embeddings=4,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 8),
        timestep=r.t_long(1),
        proj_embedding=r.const(1, 8),
        encoder_hidden_states=r.const(1, 7, 8),
    ),
    pattern="joint",
)
_add(
    "AceStepTransformer1DModel",
    dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        in_channels=24,
        audio_acoustic_hidden_dim=8,
        patch_size=2,
        rope_theta=10000.0,
        sliding_window=16,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 8, 8),
        timestep=r.t(1.0),
        timestep_r=r.t(1.0),
        encoder_hidden_states=r.const(1, 10, 32),
        context_latents=r.const(1, 8, 16),
    ),
)
_add(
    "Cosmos3OmniTransformer",
    dict(
        head_dim=6,
        hidden_act="relu2",
        hidden_size=12,
        intermediate_size=24,
        latent_channel=2,
        latent_patch_size=1,
        num_attention_heads=2,
        num_hidden_layers=3,
        num_key_value_heads=1,
        patch_latent_dim=2,
        qk_norm_for_text=False,
        rope_axes_dim=[1, 1, 1],
        rope_theta=1e8,
        vocab_size=32,
    ),
    lambda r: dict(
        input_ids=torch.tensor([1, 2]),
        text_indexes=torch.tensor([0, 1]),
        position_ids=torch.zeros((3, 6), dtype=torch.long),
        und_len=2,
        sequence_length=6,
        vision_tokens=[r.lat(1, 2, 1, 2, 2)],
        vision_token_shapes=[(1, 2, 2)],
        vision_sequence_indexes=torch.arange(2, 6),
        vision_mse_loss_indexes=torch.arange(2, 6),
        vision_timesteps=r.t(1.0, 4),
        vision_noisy_frame_indexes=[torch.tensor([0])],
    ),
    pattern="two_stream",
    extra={"hidden_arg": "gen_seq", "encoder_arg": "und_seq"},
)


def _ideogram4_inputs(r: _Step) -> dict[str, Any]:
    from diffusers.models.transformers.transformer_ideogram4 import (
        IMAGE_POSITION_OFFSET,
        LLM_TOKEN_INDICATOR,
        OUTPUT_IMAGE_INDICATOR,
    )

    n_txt, n_img = 4, 4
    hidden = torch.zeros(1, n_txt + n_img, 16)
    hidden[:, n_txt:] = r.lat(1, n_img, 16)
    enc = torch.zeros(1, n_txt + n_img, 24)
    enc[:, :n_txt] = r.const(1, n_txt, 24)
    pos = torch.zeros(1, n_txt + n_img, 3, dtype=torch.long)
    pos[:, :n_txt] = torch.arange(n_txt)[:, None]
    pos[:, n_txt:, 0] = IMAGE_POSITION_OFFSET
    pos[:, n_txt:, 1] = torch.tensor([0, 0, 1, 1]) + IMAGE_POSITION_OFFSET
    pos[:, n_txt:, 2] = torch.tensor([0, 1, 0, 1]) + IMAGE_POSITION_OFFSET
    indicator = torch.full((1, n_txt + n_img), OUTPUT_IMAGE_INDICATOR, dtype=torch.long)
    indicator[:, :n_txt] = LLM_TOKEN_INDICATOR
    return dict(
        hidden_states=hidden,
        timestep=r.t(1.0),
        encoder_hidden_states=enc,
        position_ids=pos,
        segment_ids=torch.ones(1, n_txt + n_img, dtype=torch.long),
        indicator=indicator,
    )


_add(
    "Ideogram4Transformer2DModel",
    dict(
        in_channels=16,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=4,
        intermediate_size=32,
        adaln_dim=16,
        llm_features_dim=24,
        rope_theta=10_000,
        mrope_section=(2, 1, 1),
    ),
    _ideogram4_inputs,
    pattern="joint",
)


def _krea2_inputs(r: _Step) -> dict[str, Any]:
    pos = torch.zeros(4 + 4, 3)
    pos[4:, 1] = torch.arange(2).repeat_interleave(2)
    pos[4:, 2] = torch.arange(2).repeat(2)
    mask = torch.ones(1, 4, dtype=torch.bool)
    mask[:, -1] = False
    return dict(
        hidden_states=r.lat(1, 4, 16),
        encoder_hidden_states=r.const(1, 4, 3, 16),
        timestep=r.t(1.0),
        position_ids=pos,
        encoder_attention_mask=mask,
    )


_add(
    "Krea2Transformer2DModel",
    dict(
        in_channels=16,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=32,
        timestep_embed_dim=8,
        text_hidden_dim=16,
        num_text_layers=3,
        text_num_attention_heads=2,
        text_num_key_value_heads=1,
        text_intermediate_size=16,
        num_layerwise_text_blocks=1,
        num_refiner_text_blocks=1,
        axes_dims_rope=(4, 2, 2),
    ),
    _krea2_inputs,
    pattern="helper_lists",
)


def _minimax_h3_inputs(r: _Step) -> dict[str, Any]:
    n_txt, n_aud, n_vid = 4, 6, 8
    n = n_txt + n_aud + n_vid
    txt = torch.arange(n_txt)
    aud = torch.arange(n_txt, n_txt + n_aud)
    vid = torch.arange(n_txt + n_aud, n)
    tags = torch.empty(n, dtype=torch.long)
    tags[txt], tags[aud], tags[vid] = 1, 2, 0
    t_idx = torch.zeros(n, dtype=torch.long)
    t_idx[aud] = 1
    pos = torch.zeros(n, 3)
    pos[:, 0] = torch.arange(n, dtype=torch.float32)
    pos[vid, 1] = torch.arange(n_vid, dtype=torch.float32) % 4
    pos[vid, 2] = torch.arange(n_vid, dtype=torch.float32) % 2
    tv = r.t(1.0)
    return dict(
        hidden_states=r.lat(1, n_vid, 16),
        audio_hidden_states=r.lat(1, n_aud, 6),
        encoder_hidden_states=r.const(1, n_txt, 8),
        timestep=torch.cat([tv * 0.7, tv * 0.3]),
        timestep_indices=t_idx,
        token_tags=tags,
        position_ids=pos,
        video_indices=vid,
        audio_indices=aud,
        text_indices=txt,
    )


_add(
    "MiniMaxH3Transformer3DModel",
    dict(
        num_attention_heads=2,
        attention_head_dim=16,
        hidden_size=24,
        num_layers=3,
        num_refiner_layers=1,
        ffn_dim=32,
        in_channels=4,
        audio_in_channels=6,
        patch_size=(1, 2, 2),
        text_dim=8,
        freq_dim=8,
        time_embed_hidden_dim=24,
        time_embed_dim=16,
        rope_freq_dim=2,
    ),
    _minimax_h3_inputs,
    pattern="helper_lists",
)
_add(
    "GlmImageTransformer2DModel",
    dict(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=2,
        text_embed_dim=32,
        time_embed_dim=16,
        condition_dim=8,
        prior_vq_quantizer_codebook_size=64,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 8, 8),
        encoder_hidden_states=r.const(1, 12, 32),
        prior_token_id=torch.tensor([5]),
        prior_token_drop=torch.zeros(1, dtype=torch.bool),
        timestep=r.t_long(1),
        target_size=torch.tensor([[8.0, 8.0]]),
        crop_coords=torch.tensor([[0.0, 0.0]]),
    ),
    pattern="two_stream",
)
_add(
    "BriaFibo2Transformer2DModel",
    dict(
        in_channels=4,
        patch_size=2,
        dim=32,
        n_layers=3,
        n_refiner_layers=1,
        n_heads=2,
        cap_feat_dim=24,
        injection_layer_ids=(1,),
        perceiver_num_layers=1,
        min_num_gist_tokens=4,
        max_num_gist_tokens=8,
        gist_step=4,
        gist_min_text_len=4,
        gist_max_text_len=16,
        axes_dims=(4, 6, 6),
        axes_lens=(16, 16, 16),
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 8, 8), timestep=r.t(1.0), encoder_hidden_states=r.const(1, 2, 6, 24)
    ),
    pattern="helper_lists",
)
_add(
    "Kandinsky6SRTransformer3DModel",
    dict(
        in_visual_dim=4,
        out_visual_dim=8,
        time_dim=16,
        patch_size=(1, 2, 2),
        model_dim=24,
        ff_dim=32,
        num_visual_blocks=3,
        axes_dims=(4, 4, 4),
    ),
    lambda r: dict(hidden_states=r.lat(1, 2, 16, 16, 9), timestep=r.t(1000.0)),
)

# --------------------------------------------------------------------------------------------------------
# The rest: HunyuanVideo 1.5 / Framepack / Motif / JoyImage / Kandinsky / audio / misc

_add(
    "HunyuanVideo15Transformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=3,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=8,
        image_embed_dim=12,
        rope_axes_dim=(2, 2, 4),
        target_size=16,
        task_type="t2v",
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 4, 1, 8, 8),
        timestep=r.t(1000.0),
        encoder_hidden_states=r.const(1, 6, 16),
        encoder_hidden_states_2=r.const(1, 4, 8),
        encoder_attention_mask=torch.ones(1, 6),
        encoder_attention_mask_2=torch.ones(1, 4),
        image_embeds=torch.zeros(1, 3, 12),
    ),
    pattern="helper_lists",
)


def _framepack_inputs(r: _Step) -> dict[str, Any]:
    return dict(
        hidden_states=r.lat(1, 4, 3, 4, 4),
        timestep=r.t(1000.0),
        encoder_hidden_states=r.const(1, 12, 16),
        encoder_attention_mask=torch.ones(1, 12),
        pooled_projections=r.const(1, 8),
        image_embeds=r.const(1, 12, 16),
        indices_latents=torch.ones(3),
        guidance=torch.full((1,), 6000.0),
        latents_clean=r.const(1, 4, 2, 4, 4),
        indices_latents_clean=torch.ones(2),
        latents_history_2x=r.const(1, 4, 2, 4, 4),
        indices_latents_history_2x=torch.ones(2),
        latents_history_4x=r.const(1, 4, 8, 4, 4),
        indices_latents_history_4x=torch.ones(8),
    )


_add(
    "HunyuanVideoFramepackTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
        image_condition_type=None,
        has_image_proj=True,
        image_proj_dim=16,
        has_clean_x_embedder=True,
    ),
    _framepack_inputs,
    pattern="helper_lists",
)
_add(
    "MotifVideoTransformer3DModel",
    dict(
        in_channels=9,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=1,
        num_single_layers=2,
        num_decoder_layers=0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=32,
        image_embed_dim=4,
        rope_axes_dim=(4, 4, 4),
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 9, 2, 4, 4), encoder_hidden_states=r.const(1, 12, 32), timestep=r.t_long(1)
    ),
    pattern="two_stream",
)
_JOY = dict(
    patch_size=[1, 2, 2],
    in_channels=16,
    hidden_size=32,
    num_attention_heads=2,
    text_dim=16,
    num_layers=3,
    rope_dim_list=[4, 6, 6],
    theta=256,
)
_add(
    "JoyImageEditTransformer3DModel",
    _JOY,
    lambda r: dict(
        hidden_states=r.lat(1, 16, 1, 4, 4), encoder_hidden_states=r.const(1, 12, 16), timestep=r.t(1.0)
    ),
    pattern="two_stream",
)
_add(
    "JoyImageEditPlusTransformer3DModel",
    _JOY,
    lambda r: dict(
        hidden_states=r.lat(1, 2, 16, 1, 2, 2),
        encoder_hidden_states=r.const(1, 12, 16),
        timestep=r.t(1.0),
        shape_list=[[(1, 1, 1), (1, 1, 1)]],
    ),
    pattern="two_stream",
)
_add(
    "Kandinsky5Transformer3DModel",
    dict(
        in_visual_dim=4,
        in_text_dim=16,
        in_text_dim2=8,
        time_dim=16,
        out_visual_dim=4,
        patch_size=(1, 2, 2),
        model_dim=32,
        ff_dim=64,
        num_text_blocks=1,
        num_visual_blocks=3,
        axes_dims=(4, 6, 6),
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 2, 8, 8, 4),
        encoder_hidden_states=r.const(1, 6, 16),
        timestep=r.t(1000.0),
        pooled_projections=r.const(1, 8),
        visual_rope_pos=[torch.arange(2), torch.arange(4), torch.arange(4)],
        text_rope_pos=torch.arange(6),
    ),
    pattern="helper_lists",
)
_add(
    "Kandinsky6Transformer3DModel",
    dict(
        in_visual_dim=4,
        out_visual_dim=4,
        in_text_dim=8,
        in_text_dim2=8,
        time_dim=16,
        patch_size=(1, 2, 2),
        model_dim=48,
        ff_dim=64,
        num_text_blocks=1,
        num_visual_blocks=3,
        axes_dims=(4, 4, 4),
        visual_cond=True,
        in_audio_dim=4,
        out_audio_dim=4,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 2, 4, 4, 9),
        encoder_hidden_states=r.const(1, 6, 8),
        pooled_projections=r.const(1, 8),
        timestep=r.t(1000.0),
    ),
    pattern="helper_lists",
)
_add(
    "ErnieImageTransformer2DModel",
    dict(
        hidden_size=32,
        num_attention_heads=2,
        num_layers=3,
        ffn_hidden_size=32,
        in_channels=16,
        out_channels=16,
        patch_size=1,
        text_in_dim=16,
        rope_axes_dim=(8, 4, 4),
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 16, 4, 4),
        timestep=r.t(1.0),
        text_bth=r.const(1, 8, 16),
        text_lens=torch.tensor([8]),
    ),
    pattern="joint",
)
_add(
    "LongCatAudioDiTTransformer",
    dict(dit_dim=32, dit_depth=4, dit_heads=2, dit_text_dim=16, latent_dim=8, text_conv=False),
    lambda r: dict(
        hidden_states=r.lat(1, 16, 8),
        encoder_hidden_states=r.const(1, 10, 16),
        encoder_attention_mask=torch.ones(1, 10, dtype=torch.bool),
        attention_mask=torch.ones(1, 16, dtype=torch.bool),
        timestep=r.t(1.0),
    ),
    pattern="single",
    note="long skip from the first block's input to after the last block, outside the block list",
)
_add(
    "MiniMaxMusic3Transformer1DModel",
    dict(
        in_channels=8,
        condition_dim=16,
        num_layers=3,
        num_attention_heads=2,
        attention_head_dim=8,
        ff_inner_dim=32,
        rotary_dim=4,
        fourier_embedding_dim=8,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 8, 24), encoder_hidden_states=r.const(1, 24, 16), timestep=r.t(1.0)
    ),
)
_add(
    "NucleusMoEImageTransformer2DModel",
    dict(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=16,
        axes_dims_rope=(8, 4, 4),
        moe_enabled=False,
        capacity_factors=[8.0, 8.0, 8.0],
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 16, 16),
        encoder_hidden_states=r.const(1, 8, 16),
        encoder_hidden_states_mask=torch.ones(1, 8, dtype=torch.long),
        timestep=r.t(1.0),
        img_shapes=[(1, 4, 4)],
    ),
    pattern="single",
)


def _omnigen_inputs(r: _Step) -> dict[str, Any]:
    n = 24 + 1 + 16
    return dict(
        hidden_states=r.lat(1, 4, 8, 8),
        timestep=r.t(1.0),
        input_ids=torch.arange(24)[None].remainder(10),
        input_img_latents=[r.const(1, 4, 8, 8)],
        input_image_sizes={0: [[0, 16]]},
        attention_mask=torch.ones(1, n, n),
        position_ids=torch.arange(n)[None],
    )


_add(
    "OmniGenTransformer2DModel",
    dict(
        hidden_size=16,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=32,
        num_layers=3,
        pad_token_id=0,
        vocab_size=1000,
        in_channels=4,
        time_step_dim=4,
        rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]},
    ),
    _omnigen_inputs,
    pattern="joint",
)


def _qwen21_inputs(r: _Step) -> dict[str, Any]:
    img_mask = torch.zeros(1, 4 + 1, dtype=torch.bool)
    img_mask[:, 4:] = True
    return dict(
        hidden_states=r.lat(1, 4, 4),
        encoder_hidden_states=r.const(1, 4, 8),
        encoder_hidden_states_mask=torch.ones(1, 4, dtype=torch.long),
        timestep=r.t(1.0),
        img_shapes=[[(1, 2, 2)]],
        img_mask=img_mask,
    )


_add(
    "QwenImage21Transformer2DModel",
    dict(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        context_in_dim=8,
        mlp_ratio=2,
        axes_dims_rope=(4, 6, 6),
    ),
    _qwen21_inputs,
    pattern="joint",
)


def _sana_wm_inputs(r: _Step) -> dict[str, Any]:
    c2w = torch.eye(4).repeat(1, 4, 1, 1)
    c2w[..., 2, 3] = torch.arange(4, dtype=torch.float32) * 0.1
    intr = torch.tensor([8.0, 8.0, 4.0, 4.0]).expand(1, 4, 4)
    return dict(
        hidden_states=r.lat(1, 4, 4, 8, 8),
        timestep=r.t(1000.0, 1, 1, 4),
        encoder_hidden_states=r.const(1, 1, 16, 8),
        encoder_attention_mask=torch.ones(1, 16, dtype=torch.long),
        camera_conditions=torch.cat([c2w.flatten(start_dim=-2), intr], dim=-1),
        chunk_plucker=r.const(1, 8, 4, 8, 8),
    )


_add(
    "SanaWMTransformer3DModel",
    dict(
        in_channels=4,
        num_layers=3,
        hidden_size=32,
        num_attention_heads=2,
        patch_size=(1, 1, 1),
        softmax_every_n=2,
        linear_head_dim=16,
        t_kernel_size=3,
        conv_kernel_size=4,
        caption_channels=8,
        mlp_ratio=2.0,
        chunk_plucker_channels=8,
        chunk_plucker_post_attn_blocks=3,
    ),
    _sana_wm_inputs,
)


def _sana_wm_refiner_inputs(r: _Step) -> dict[str, Any]:
    from diffusers.models.transformers.transformer_sana_wm_refiner import SanaWMLTX2AudioVideoRotaryPosEmbed

    rope = SanaWMLTX2AudioVideoRotaryPosEmbed(
        dim=16,
        patch_size=1,
        patch_size_t=1,
        base_num_frames=20,
        base_height=2048,
        base_width=2048,
        scale_factors=(8, 32, 32),
        modality="video",
        double_precision=False,
        num_attention_heads=2,
    )
    coords = rope.prepare_video_coords(1, 2, 4, 4, device=torch.device("cpu"), fps=24.0)
    return dict(
        hidden_states=r.lat(1, 32, 4),
        encoder_hidden_states=r.const(1, 8, 16),
        timestep=r.t(1000.0, 1, 32),
        video_rotary_emb=rope(coords, device=torch.device("cpu")),
        encoder_attention_mask=torch.ones(1, 8),
    )


_add(
    "SanaWMLTX2RefinerTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=3,
        caption_channels=16,
        rope_double_precision=False,
    ),
    _sana_wm_refiner_inputs,
)
_add(
    "StableAudio3DiTModel",
    dict(
        io_channels=8,
        patch_size=1,
        embed_dim=32,
        depth=3,
        num_heads=4,
        cond_token_dim=16,
        global_cond_dim=12,
        local_add_cond_dim=5,
        timestep_features_dim=16,
        ff_mult=2,
        num_memory_tokens=3,
        use_differential_attention=False,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 8, 16),
        timestep=r.t(1.0),
        encoder_hidden_states=r.const(1, 4, 16),
        global_hidden_states=r.const(1, 12),
    ),
)


def _stable_audio_inputs(r: _Step) -> dict[str, Any]:
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    return dict(
        hidden_states=r.lat(1, 4, 16),
        timestep=r.t(1000.0),
        encoder_hidden_states=r.const(1, 4, 8),
        global_hidden_states=r.const(1, 1, 8),
        rotary_embedding=get_1d_rotary_pos_embed(4, 16 + 1, use_real=True, repeat_interleave_real=False),
    )


_add(
    "StableAudioDiTModel",
    dict(
        sample_size=16,
        in_channels=4,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=2,
        num_key_value_attention_heads=2,
        out_channels=4,
        cross_attention_dim=8,
        time_proj_dim=8,
        global_states_input_dim=8,
        cross_attention_input_dim=8,
    ),
    _stable_audio_inputs,
)
_add(
    "WanAnimateTransformer3DModel",
    dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=12,
        latent_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=32,
        num_layers=3,
        image_dim=16,
        rope_max_seq_len=32,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16},
        motion_encoder_size=16,
        motion_style_dim=8,
        motion_dim=4,
        motion_encoder_dim=16,
        face_encoder_hidden_dim=16,
        face_encoder_num_heads=2,
        inject_face_latents_blocks=3,
    ),
    lambda r: dict(
        hidden_states=r.lat(1, 12, 21, 4, 4),
        timestep=r.t(1000.0),
        encoder_hidden_states=r.const(1, 12, 16),
        encoder_hidden_states_image=r.const(1, 12, 16),
        pose_hidden_states=r.const(1, 4, 20, 4, 4),
        face_pixel_values=r.const(1, 3, 77, 16, 16),
    ),
    pattern="added_between_blocks",
    note="face_adapter (interleaved) adds face features to the hidden stream after every 3rd block",
)


def _wan_animate2_inputs(r: _Step) -> dict[str, Any]:
    """One denoising step ("cached" mode): 3 latent frames (reference slot + 2), 2x2 patches per frame."""
    return dict(
        hidden_states=[r.lat(16, 3, 4, 4)],
        timestep=r.t(1000.0),
        encoder_hidden_states=[r.const(8, 32)],
        condition_latents=[r.const(20, 3, 4, 4)],
        encoder_hidden_states_image=r.const(1, 4, 1280),
        kv_cache_mode="cached",
        seq_len=3 * 4,
        reference_grid_sizes=torch.tensor([[2, 2, 2]], dtype=torch.long),
        origin_len=5,
        origin_area=[32, 32],
    )


def _wan_animate2_prepare(model: torch.nn.Module, seed: int = 0) -> dict[str, Any]:
    """The reference pass (kv_cache_mode="extract") that fills the kv cache the denoising steps attend to."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    g = torch.Generator().manual_seed(seed + 1)
    cache = WanAnimate2KVCache(len(model.blocks))
    with torch.no_grad():
        model(
            hidden_states=[torch.randn(16, 2, 4, 4, generator=g)],
            timestep=torch.tensor([1.0]),
            encoder_hidden_states=[torch.randn(8, 32, generator=g)],
            condition_latents=[torch.randn(20, 2, 4, 4, generator=g)],
            encoder_hidden_states_image=torch.randn(1, 4, 1280, generator=g),
            kv_cache=cache,
            kv_cache_mode="extract",
            seq_len=2 * 4,
            offset_grid_sizes=torch.tensor([[2, 2, 2]], dtype=torch.long),
            return_dict=False,
        )
    _wan_animate2_eager_block_mask(model, origin_len=5, origin_area=(32, 32))
    return {"kv_cache": cache}


def _wan_animate2_eager_block_mask(
    model: torch.nn.Module, origin_len: int, origin_area: tuple[int, int]
) -> None:
    """Fill the model's block-mask cache the way its forward would, but without `create_block_mask`'s
    torch.compile (10+ s on a CPU for a tiny mask; the mask is the same)."""
    from diffusers.models.transformers import transformer_wan_animate_2 as module

    key = (origin_len // 4 + 1, origin_area[0] * origin_area[1] // 256)
    if key in model.block_masks:
        return
    compiled = module.create_block_mask

    def eager(*args: Any, **kwargs: Any) -> Any:
        return compiled(*args, **{**kwargs, "_compile": False})

    module.create_block_mask = eager
    try:
        model.block_masks[key] = model.create_mask(key[0], key[1], torch.device("cpu"))
    finally:
        module.create_block_mask = compiled


_add(
    "WanAnimate2Transformer3DModel",
    dict(
        patch_size=(1, 2, 2),
        text_len=16,
        in_dim=36,
        dim=32,
        ffn_dim=64,
        freq_dim=32,
        text_dim=32,
        out_dim=16,
        num_heads=2,
        num_layers=3,
        use_img_emb=True,
    ),
    _wan_animate2_inputs,
    pattern="kv_prefill",
    note="a denoising step ('cached') attends to a kv cache filled by a reference ('extract') pass: prepare()",
    prepare=_wan_animate2_prepare,
)


def _rfd4_inputs(r: _Step) -> dict[str, Any]:
    n = 8
    return dict(
        bb_ca=r.lat(1, n, 3),
        local_latents=r.lat(1, n, 8),
        bb_ca_time=r.t(1.0),
        local_latents_time=r.t(1.0),
        padding_mask=torch.ones(1, n, dtype=torch.bool),
        conditioning={
            "is_in_context_conditioning": torch.zeros(1, n, dtype=torch.bool),
            "supports_local_latent": torch.ones(1, n, dtype=torch.bool),
        },
    )


_add(
    "RFD4ProteinaTransformer",
    dict(
        nlayers=3,
        token_dim=32,
        nheads=2,
        dim_cond=16,
        pair_repr_dim=16,
        latent_dim=8,
        token_type_emb_dim=8,
        cath_emb_dim=8,
        t_emb_dim=16,
        seq_sep_dim=8,
        xt_pair_dist_dim=8,
        feats_seq=("xt_bb_ca", "xt_local_latents"),
        feats_cond_seq=("time_emb_bb_ca", "time_emb_local_latents"),
        feats_pair_repr=("xt_bb_ca_pair_dists",),
        feats_pair_cond=("time_emb_bb_ca",),
        tri_mult_c=16,
    ),
    _rfd4_inputs,
    pattern="needs_code",
)

# --------------------------------------------------------------------------------------------------------
# Out of scope

_out("DualTransformer2DModel", "UNet sub-module (Versatile Diffusion, deprecated); not a pipeline denoiser")
_out("TransformerTemporalModel", "UNet sub-module (temporal layers inside 3D UNets)")
_out("Transformer2DModel", "UNet sub-module (cross-attention layers inside UNets)")
_out("DreamLiteTransformer2DModel", "UNet sub-module of UNetDreamLite")
_out("T5FilmDecoder", "deprecated (spectrogram diffusion pipeline)")
_out("MiniMaxMusic3RVQDepthDecoder", "not a denoiser (RVQ depth decoder of MiniMax Music 3)")


# (style, note) per family, from the pipelines that use the class (diffusers 0.42.1 sources).
CFG_BY_FAMILY: dict[str, tuple[str, str]] = {
    "FluxTransformer2DModel": (
        "separate",
        "FLUX.1-dev: guidance embedding; true_cfg_scale adds the marked uncond call",
    ),
    "BriaTransformer2DModel": ("batched", ""),
    "ChromaTransformer2DModel": ("separate_unmarked", ""),
    "LongCatImageTransformer2DModel": ("separate", ""),
    "OvisImageTransformer2DModel": ("separate", ""),
    "Flux2Transformer2DModel": (
        "guidance_embed",
        "Klein pipelines: separate marked calls; Klein-KV: kv prefill call",
    ),
    "Flux3Transformer2DModel": ("guider", "modular pipeline only"),
    "BriaFiboTransformer2DModel": ("batched", ""),
    "SD3Transformer2DModel": ("batched", "skip-layer guidance adds a third call per step"),
    "AuraFlowTransformer2DModel": ("batched", ""),
    "HiDreamImageTransformer2DModel": ("batched", ""),
    "WanTransformer3DModel": ("separate", "Wan 2.2: a second denoiser transformer_2 for low-noise steps"),
    "ChronoEditTransformer3DModel": ("separate_unmarked", ""),
    "SkyReelsV2Transformer3DModel": ("separate", "diffusion forcing: several denoising loops per call"),
    "WanVACETransformer3DModel": ("separate", ""),
    "HeliosTransformer3DModel": ("separate", "pyramid pipeline: several denoising loops per call"),
    "AnyFlowTransformer3DModel": ("batched", ""),
    "AnyFlowFARTransformer3DModel": ("batched", "chunked autoregressive loop with kv cache"),
    "CogVideoXTransformer3DModel": ("batched", "marked cond_uncond"),
    "ConsisIDTransformer3DModel": ("batched", ""),
    "CogView3PlusTransformer2DModel": ("batched", ""),
    "CogView4Transformer2DModel": ("separate", ""),
    "HunyuanVideoTransformer3DModel": ("guidance_embed", "true_cfg_scale adds the marked uncond call"),
    "HunyuanImageTransformer2DModel": ("guider", "guidance embedding in the distilled variant"),
    "PixArtTransformer2DModel": ("batched", ""),
    "DiTTransformer2DModel": ("batched", ""),
    "SanaTransformer2DModel": ("batched", "Sana Sprint: guidance embedding"),
    "SanaVideoTransformer3DModel": ("batched", ""),
    "LatteTransformer3DModel": ("batched", ""),
    "HunyuanDiT2DModel": ("batched", ""),
    "Lumina2Transformer2DModel": (
        "separate_unmarked",
        "CFG truncation: the uncond call stops after a ratio of steps",
    ),
    "LuminaNextDiT2DModel": ("batched", ""),
    "MochiTransformer3DModel": ("batched", "marked cond_uncond"),
    "LTXVideoTransformer3DModel": ("batched", "marked cond_uncond"),
    "LTX2VideoTransformer3DModel": ("batched", "marked cond_uncond"),
    "AllegroTransformer3DModel": ("batched", ""),
    "CosmosTransformer3DModel": ("separate_unmarked", ""),
    "EasyAnimateTransformer3DModel": ("batched", ""),
    "QwenImageTransformer2DModel": ("separate", "true_cfg_scale"),
    "ZImageTransformer2DModel": ("batched", "CFG truncation"),
    "PRXTransformer2DModel": ("batched", ""),
    "PriorTransformer": ("batched", "a prior pipeline (Kandinsky 2.x, Shap-E, unCLIP)"),
    "AceStepTransformer1DModel": ("batched", "CFG interval; cover tasks add a third call"),
    "Cosmos3OmniTransformer": ("separate_unmarked", ""),
    "Ideogram4Transformer2DModel": ("separate_model", "unconditional_transformer runs the uncond branch"),
    "Krea2Transformer2DModel": ("separate_unmarked", ""),
    "MiniMaxH3Transformer3DModel": ("guider", "modular pipeline only"),
    "GlmImageTransformer2DModel": ("separate_unmarked", "kv 'extract' calls on the condition images first"),
    "BriaFibo2Transformer2DModel": ("separate_unmarked", ""),
    "Kandinsky6SRTransformer3DModel": ("none", ""),
    "HunyuanVideo15Transformer3DModel": ("guider", ""),
    "HunyuanVideoFramepackTransformer3DModel": (
        "guidance_embed",
        "several denoising loops (sections) per call",
    ),
    "MotifVideoTransformer3DModel": ("guider", ""),
    "JoyImageEditTransformer3DModel": ("separate_unmarked", ""),
    "JoyImageEditPlusTransformer3DModel": ("batched", ""),
    "Kandinsky5Transformer3DModel": ("separate_unmarked", ""),
    "Kandinsky6Transformer3DModel": ("separate", ""),
    "ErnieImageTransformer2DModel": ("batched", ""),
    "LongCatAudioDiTTransformer": ("separate_unmarked", ""),
    "MiniMaxMusic3Transformer1DModel": ("guider", "modular pipeline only"),
    "NucleusMoEImageTransformer2DModel": ("separate_unmarked", "true_cfg_scale"),
    "OmniGenTransformer2DModel": ("batched", "2 or 3 branches (text, image guidance) in one batch"),
    "QwenImage21Transformer2DModel": ("separate", "kv prefill ('extract') call before the loop"),
    "SanaWMTransformer3DModel": ("batched", ""),
    "SanaWMLTX2RefinerTransformer3DModel": (
        "none",
        "refiner stage of the SANA-WM pipeline; kv sink injection",
    ),
    "StableAudio3DiTModel": ("batched", ""),
    "StableAudioDiTModel": ("batched", ""),
    "WanAnimateTransformer3DModel": ("separate", ""),
    "WanAnimate2Transformer3DModel": (
        "guider",
        "modular; kv 'extract' pass per segment, then 'cached' steps",
    ),
    "RFD4ProteinaTransformer": ("none", "protein design sampler, not an image pipeline"),
}
for _name, (_style, _note) in CFG_BY_FAMILY.items():
    FAMILIES[_name] = replace(FAMILIES[_name], cfg_style=_style, cfg_note=_note)


def all_transformer_class_names() -> list[str]:
    """Every class exported by `diffusers.models.transformers` (the installed version)."""
    return sorted(
        n for n in dir(_T) if isinstance(getattr(_T, n), type) and issubclass(getattr(_T, n), torch.nn.Module)
    )


def in_scope() -> list[Family]:
    return [f for f in FAMILIES.values() if f.out_of_scope is None]
