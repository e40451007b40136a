"""Training of the tiny FLUX testbed (see :mod:`cache_dit.testing.testbed`); CPU, fixed seeds.

Run through ``python -m cache_dit.testing.testbed train``. Stage ``vae`` trains the autoencoder on fresh
procedural images every step (L1 + MSE reconstruction + a small KL) and then sets ``shift_factor`` and
``scaling_factor`` from the latent statistics; stage ``transformer`` encodes a fixed procedural data set
once and trains the transformer plus the class table with the rectified-flow loss of FluxPipeline's
convention, keeping an EMA of the weights.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from cache_dit.testing import testbed as tb


def _log(message: str, start: float) -> None:
    print(f"[{time.time() - start:7.1f}s] {message}", flush=True)


def _lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 10% of ``base_lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _save_fp16(module: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def train_vae(
    steps: int,
    seed: int,
    max_seconds: float = float("inf"),
    batch: int = 16,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    spec: tb.TestbedSpec | None = None,
) -> tuple[tb.AutoencoderKL, dict[str, float]]:
    """Train the testbed VAE on fresh procedural images; return it and the training stats."""
    spec = spec or tb.testbed_spec()
    start = time.time()
    torch.manual_seed(seed)
    vae = tb.AutoencoderKL.from_config(spec.vae_config)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    recon_loss = float("nan")
    done = 0
    for step in range(steps):
        if time.time() - start > max_seconds:
            _log(f"vae: time cap reached at step {step}", start)
            break
        done = step + 1
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup=50)
        images, _ = spec.make_dataset(batch, seed=seed * 100_000 + step)  # (B, 3, S, S)
        posterior = vae.encode(images).latent_dist
        latents = posterior.sample(generator=generator)  # (B, 4, 16, 16)
        recon = vae.decode(latents).sample  # (B, 3, 64, 64)
        recon_loss_t = F.l1_loss(recon, images) + F.mse_loss(recon, images)
        loss = recon_loss_t + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        recon_loss = 0.95 * recon_loss + 0.05 * recon_loss_t.item() if step else recon_loss_t.item()
        if step % 50 == 0 or step == steps - 1:
            _log(f"vae step {step}/{steps} recon(l1+mse, ema) {recon_loss:.4f}", start)
    vae.eval()
    return vae, {"vae_steps": done, "vae_recon_loss": recon_loss, "vae_seconds": time.time() - start}


@torch.no_grad()
def encode_dataset(
    vae: tb.AutoencoderKL, num_images: int, seed: int, spec: tb.TestbedSpec | None = None, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw (unscaled) latent means ``(N, C, h, w)`` and labels ``(N,)`` of a procedural data set."""
    spec = spec or tb.testbed_spec()
    if spec.name == "shapes":  # the committed shapes weights were trained on this one-call data set
        images, labels_t = spec.make_dataset(num_images, seed=seed)
        return torch.cat([vae.encode(part).latent_dist.mode() for part in images.split(128)]), labels_t
    chunks, labels = [], []
    for offset in range(0, num_images, chunk):  # made per chunk: 128x128 scenes would need GBs at once
        count = min(chunk, num_images - offset)
        images, chunk_labels = spec.make_dataset(count, seed=seed * 1000 + offset)
        chunks.append(torch.cat([vae.encode(part).latent_dist.mode() for part in images.split(64)]))
        labels.append(chunk_labels)  # each chunk's classes start at 0 again: its own labels, not the offset's
    return torch.cat(chunks), torch.cat(labels)


class _Conditioning(torch.nn.Module):
    """Learned class table: ``prompt`` (C + 1, S, D_joint) and ``pooled`` (C + 1, D_pooled)."""

    def __init__(self, joint_dim: int, pooled_dim: int) -> None:
        super().__init__()
        self.prompt = torch.nn.Parameter(torch.randn(tb.NUM_CLASSES + 1, tb.TEXT_SEQ_LEN, joint_dim))
        self.pooled = torch.nn.Parameter(torch.randn(tb.NUM_CLASSES + 1, pooled_dim))

    def embed(self, class_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prompt[class_ids], self.pooled[class_ids]


class _CompositionalConditioning(torch.nn.Module):
    """The scenes' class table, built from one learned token per attribute (kind, colour, count) + a shared one.

    ``embed`` gives ``prompt`` ``(B, 4, D_joint)`` = [kind, colour, count, shared] tokens and ``pooled`` =
    the sum of the attributes' pooled vectors; the null class has its own learned tokens. The full table
    (one row per class) is materialised once at save time, so loading stays a plain table look-up.
    """

    def __init__(self, joint_dim: int, pooled_dim: int) -> None:
        super().__init__()
        from cache_dit.testing import scenes

        sizes = (len(scenes.KINDS), len(scenes.COLORS), len(scenes.COUNTS))
        self.tokens = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(n, joint_dim)) for n in sizes])
        self.pooled_parts = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(n, pooled_dim) / math.sqrt(3)) for n in sizes]
        )
        self.shared = torch.nn.Parameter(torch.randn(joint_dim))
        self.null_prompt = torch.nn.Parameter(torch.randn(scenes.TEXT_SEQ_LEN, joint_dim))
        self.null_pooled = torch.nn.Parameter(torch.randn(pooled_dim))
        attrs = [scenes.class_attribute_indices(c) for c in range(scenes.NUM_CLASSES)]
        self.register_buffer("attributes", torch.tensor(attrs + [(0, 0, 0)]), persistent=False)  # (C + 1, 3)
        self.null_class_id = scenes.NULL_CLASS_ID

    def embed(self, class_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attrs = self.attributes[class_ids]  # (B, 3)
        tokens = [table[attrs[:, i]] for i, table in enumerate(self.tokens)]  # 3 x (B, D)
        prompt = torch.stack(tokens + [self.shared.expand_as(tokens[0])], dim=1)  # (B, 4, D)
        pooled = sum(table[attrs[:, i]] for i, table in enumerate(self.pooled_parts))  # (B, D_pooled)
        is_null = (class_ids == self.null_class_id)[:, None]
        prompt = torch.where(is_null[:, :, None], self.null_prompt[None], prompt)
        pooled = torch.where(is_null, self.null_pooled[None], pooled)
        return prompt, pooled

    @property
    def prompt(self) -> torch.Tensor:
        return self.embed(torch.arange(self.null_class_id + 1))[0]

    @property
    def pooled(self) -> torch.Tensor:
        return self.embed(torch.arange(self.null_class_id + 1))[1]


def _save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    step: int,
    total_steps: int,
    running: float,
    seconds: float,
) -> None:
    """Everything a killed run needs to continue bit for bit (and the training seconds so far, so that a resumed
    run records the whole run's time); written to a temporary file, then renamed."""
    state = {
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "step": step,
        "total_steps": total_steps,
        "running": running,
        "seconds": seconds,
    }
    tmp = Path(path).with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_class_table_into(cond: torch.nn.Module, weights_dir: Path) -> None:
    """Start ``cond`` from a saved class table (``prompt (C + 1, S, D)``, ``pooled (C + 1, D)``).

    A plain table is copied. The compositional one is recovered exactly: each attribute's token is its
    column in any class that has it, the null rows are the last row, and the three pooled parts are the
    least-squares split of the classes' pooled sums (any exact split gives the same sums).
    """
    table = tb.load_class_table(weights_dir)
    with torch.no_grad():
        if isinstance(cond, _Conditioning):
            cond.prompt.copy_(table.prompt)
            cond.pooled.copy_(table.pooled)
            return
        attrs = cond.attributes[: cond.null_class_id]  # (C, 3)
        for i, tokens in enumerate(cond.tokens):
            for value in range(len(tokens)):
                first_class = int((attrs[:, i] == value).nonzero()[0])
                tokens[value].copy_(table.prompt[first_class, i])
        cond.shared.copy_(table.prompt[0, 3])
        cond.null_prompt.copy_(table.prompt[cond.null_class_id])
        cond.null_pooled.copy_(table.pooled[cond.null_class_id])
        sizes = [len(t) for t in cond.pooled_parts]
        design = torch.zeros(cond.null_class_id, sum(sizes))  # (C, sum of attribute sizes)
        offsets = [0, sizes[0], sizes[0] + sizes[1]]
        for c in range(cond.null_class_id):
            for i in range(3):
                design[c, offsets[i] + attrs[c, i]] = 1.0
        parts = torch.linalg.lstsq(design, table.pooled[: cond.null_class_id]).solution  # (sum sizes, D)
        for i, part in enumerate(cond.pooled_parts):
            part.copy_(parts[offsets[i] : offsets[i] + sizes[i]])
        error = (cond.embed(torch.arange(cond.null_class_id + 1))[1] - table.pooled).abs().max()
        if error > 1e-2:  # the saved table is fp16
            raise ValueError(f"{weights_dir}: the pooled table is not compositional (error {error:.3g})")


def train_transformer(
    latents: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    seed: int,
    max_seconds: float = float("inf"),
    batch: int = 32,
    lr: float = 5e-4,
    ema_decay: float = 0.998,
    label_dropout: float = 0.1,
    spec: tb.TestbedSpec | None = None,
    log_path: Path | None = None,
    init_from: Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 50,
    stop_at: int | None = None,
) -> tuple[tb.FluxTransformer2DModel, torch.nn.Module, dict[str, float]]:
    """Rectified-flow training on scaled latents ``(N, C, h, w)``; returns EMA transformer and table.

    ``init_from``: a weights folder whose transformer and class table start the run (a fine-tune with a
    fresh optimiser and schedule; the EMA starts from them too). ``resume``: continue from the full
    checkpoint at ``log_path`` (model, EMA, optimiser, data-order generator, step), written every
    ``checkpoint_every`` steps and kept when the run stops at its time cap.
    """
    spec = spec or tb.testbed_spec()
    start = time.time()
    torch.manual_seed(seed)
    transformer = tb.FluxTransformer2DModel.from_config(spec.transformer_config)
    dims = spec.transformer_config["joint_attention_dim"], spec.transformer_config["pooled_projection_dim"]
    cond = _CompositionalConditioning(*dims) if spec.name == "scenes" else _Conditioning(*dims)
    if init_from is not None:
        tb._load_module_weights(transformer, Path(init_from) / "transformer.safetensors")
        _load_class_table_into(cond, Path(init_from))
        _log(f"initialised transformer and class table from {init_from}", start)
    model = torch.nn.ModuleDict({"transformer": transformer, "cond": cond})
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)

    packed = tb.pack_latents(latents)  # (N, 64, 16)
    img_ids = tb.latent_image_ids(spec.image_size, spec.vae_scale_factor)  # (N_img, 3)
    txt_ids = torch.zeros(spec.text_seq_len, 3)  # (S, 3)
    mu = tb.image_mu(packed.shape[1])
    generator = torch.Generator().manual_seed(seed)
    running = float("nan")
    first = 0
    prior_seconds = 0.0  # training seconds of the earlier runs a resumed run continues
    if resume:
        if log_path is None or not Path(log_path).exists():
            raise FileNotFoundError(f"resume: no checkpoint at {log_path}")
        saved = torch.load(log_path, weights_only=False)
        if saved.get("total_steps") != steps:
            raise ValueError(
                f"resume: the checkpoint is for --transformer-steps {saved.get('total_steps')}, not {steps}"
            )
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        first, running = saved["step"], saved["running"]
        prior_seconds = saved.get("seconds", 0.0)
        _log(f"resumed from {log_path} at step {first}", start)
    ema_warm = init_from is not None  # the EMA of a fine-tune starts from trained weights: no decay ramp
    done = first

    def save_checkpoint() -> None:
        seconds = prior_seconds + time.time() - start
        _save_checkpoint(log_path, model, ema, optimizer, generator, done, steps, running, seconds)

    stopped_early = False
    for step in range(first, steps):
        if time.time() - start > max_seconds or step == stop_at:
            _log(f"transformer: stopped at step {step} (time cap or stop_at)", start)
            stopped_early = True
            break
        done = step + 1
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup=100)
        index = torch.randint(len(packed), (batch,), generator=generator)
        x0 = packed[index]  # (B, N_img, 4C)
        class_ids = labels[index].clone()
        class_ids[torch.rand(batch, generator=generator) < label_dropout] = spec.null_class_id
        noise = torch.randn(x0.shape, generator=generator)  # (B, N_img, 4C)
        prompt, pooled = cond.embed(class_ids)  # (B, S, D_joint), (B, D_pooled)
        sigma = tb.sample_training_sigmas(batch, mu, generator)  # (B,)
        x_t = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        target = noise - x0
        pred = transformer(
            hidden_states=x_t,
            timestep=sigma,  # the pipeline passes t / 1000 = sigma; the model multiplies by 1000
            pooled_projections=pooled,
            encoder_hidden_states=prompt,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]  # (B, N_img, 4C)
        loss = F.mse_loss(pred, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        decay = ema_decay if ema_warm else min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 50 == 0 or step == steps - 1:
            _log(f"transformer step {step}/{steps} loss(ema) {running:.4f}", start)
        if log_path is not None and (done % checkpoint_every == 0 or done == steps):
            save_checkpoint()
    if stopped_early and log_path is not None:
        save_checkpoint()
        _log(f"checkpoint kept at {log_path}: continue with --resume", start)
    stats = {
        "transformer_steps": done,
        "transformer_total_steps": steps,
        "transformer_loss": running,
        "transformer_seconds": prior_seconds + time.time() - start,  # a resumed run: every run's seconds
    }
    return ema["transformer"], ema["cond"], stats


def train_all(
    out_dir: Path | None = None,
    seed: int = 0,
    stage: str = "all",
    vae_steps: int = 1200,
    transformer_steps: int = 3000,
    threads: int = 2,
    max_minutes: tuple[float, float] = (10.0, 38.0),
    num_latent_images: int | None = None,
    spec: tb.TestbedSpec | None = None,
    batch: int = 32,
    lr: float = 5e-4,
    init_from: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the requested stages of testbed ``spec`` and write weights + configs into ``out_dir``.

    The transformer stage writes its weights even when it stops at its time cap, and then keeps
    ``out_dir/checkpoint.pt`` (git-ignored) so that ``resume=True`` continues the same run.
    """
    spec = spec or tb.testbed_spec()
    torch.set_num_threads(threads)
    out_dir = Path(spec.weights_dir if out_dir is None else out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_latent_images = num_latent_images or spec.num_classes * 400
    start = time.time()
    info_path = out_dir / "testbed.json"
    info: dict[str, Any] = json.loads(info_path.read_text()) if info_path.exists() else {}
    info.update(
        {
            "name": spec.name,
            "seed": seed,
            "threads": threads,
            "class_names": list(spec.class_names),
            "null_class_id": spec.null_class_id,
        }
    )

    if stage in ("all", "vae"):
        vae, vae_stats = train_vae(vae_steps, seed, max_seconds=60 * max_minutes[0], spec=spec)
        raw, _ = encode_dataset(vae, 12 * 64, seed=seed + 7, spec=spec)  # (N, C, h, w)
        shift, scale = raw.mean().item(), 1.0 / raw.std().item()
        vae_stats.update({"latent_shift_factor": shift, "latent_scaling_factor": scale})
        info.update(vae_stats)
        (out_dir / "vae_config.json").write_text(
            json.dumps({**spec.vae_config, "shift_factor": shift, "scaling_factor": scale}, indent=2)
        )
        _save_fp16(vae, out_dir / "vae.safetensors")
        _log(f"vae done: shift_factor {shift:.4f} scaling_factor {scale:.4f}", start)

    if stage in ("all", "transformer"):
        vae_config = json.loads((out_dir / "vae_config.json").read_text())
        vae = tb.AutoencoderKL.from_config(vae_config).eval()
        tb._load_module_weights(vae, out_dir / "vae.safetensors")
        raw, labels = encode_dataset(vae, num_latent_images, seed=seed + 1, spec=spec)  # (N, C, h, w)
        latents = (raw - vae_config["shift_factor"]) * vae_config["scaling_factor"]
        _log(f"encoded {len(latents)} latents: mean {latents.mean():.3f} std {latents.std():.3f}", start)
        prior_steps = 0
        if init_from is not None:  # the steps the starting weights had, so the total stays on record
            prior_info = Path(init_from) / "testbed.json"
            prior = json.loads(prior_info.read_text()) if prior_info.exists() else {}
            prior_steps = prior.get("transformer_steps_total", prior.get("transformer_steps", 0))
        elif resume:
            prior_steps = info.get("transformer_prior_steps", 0)
        transformer, cond, t_stats = train_transformer(
            latents,
            labels,
            transformer_steps,
            seed,
            max_seconds=60 * max_minutes[1],
            spec=spec,
            batch=batch,
            lr=lr,
            log_path=out_dir / "checkpoint.pt",  # git-ignored; kept only when the run stops early
            init_from=init_from,
            resume=resume,
        )
        if t_stats["transformer_steps"] == transformer_steps:
            (out_dir / "checkpoint.pt").unlink(missing_ok=True)
        info.update(t_stats)
        info.update(
            {
                "transformer_batch": batch,
                "transformer_lr": lr,
                "latent_images": num_latent_images,
                "transformer_prior_steps": prior_steps,
                "transformer_steps_total": prior_steps + t_stats["transformer_steps"],
            }
        )
        _save_fp16(transformer, out_dir / "transformer.safetensors")
        (out_dir / "transformer_config.json").write_text(json.dumps(spec.transformer_config, indent=2))
        with torch.no_grad():
            save_file(
                {
                    "prompt": cond.prompt.detach().half().contiguous(),
                    "pooled": cond.pooled.detach().half().contiguous(),
                },
                str(out_dir / "class_embeds.safetensors"),
            )
        (out_dir / "scheduler_config.json").write_text(json.dumps(tb.SCHEDULER_CONFIG, indent=2))

    info["last_run_seconds"] = time.time() - start
    info_path.write_text(json.dumps(info, indent=2))
    _log(f"wrote weights to {out_dir}", start)
    return info
