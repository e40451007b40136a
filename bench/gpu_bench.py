"""FLUX.1-dev and Wan 2.1 transformers at their real sizes on one GPU: uncached and cached, eager and compiled.

Timing needs no trained weights: each transformer is built from its config alone on the meta device (no hub, no
network), materialised on the GPU (`to_empty`) and filled there with random weights, then driven over the
pipeline's own loop (random latents, the FlowMatchEulerDiscreteScheduler's timesteps and `step`, the pipeline's
`cache_context` marks, inside `cache_dit.denoising_run`). Per model, per variant (eager; regional compile, i.e.
`transformer.compile_repeated_blocks()` as bench/compile_bench.py does) and per mode:

    none            uncached
    thr0            DBCache F8B0 at threshold 0: the machinery alone (computes every block)
    fixed2x/4x      fixed schedule (`uniform_schedule`, interval 2 / 4), Fn=Bn=0, TaylorSeer(1) residual forecast
    fixed2x/4x-out  the same schedules with `taylorseer_cache_type="output"` (a cached step runs nothing)
    F8B0            DBCache F8B0 at a threshold that caches about half the steps after warm-up
    DBPrune         DBPrune F8B8 at a threshold that prunes about half the prunable blocks after warm-up
                    (both thresholds found by replaying the gate on a scout loop's recorded values)

it reports the median ms per step over interleaved rounds (every mode once per round), the speedup against the
uncached loop of the same round, the block-count bound (block calls of the uncached loop / blocks computed), peak
memory (torch.cuda.max_memory_allocated) and the cache's extra memory, and the host syncs per step inside the
transformer call (`torch.cuda.set_sync_debug_mode` warnings on CUDA; a TorchFunctionMode counter on CPU). It
writes its own section of bench/RESULTS.md (between the gpu-bench markers, named after the card) after every
loop, so a run cut short keeps what it measured; `--json` also writes the raw numbers.

Run, on one H100/H200 (about 5 minutes: --budget-s 270 bounds the building and measuring; Python start and
imports take about 10 s more):

    python bench/gpu_bench.py

It needs torch with CUDA, diffusers 0.42.x and accelerate; cache_dit is taken from src/ when it is not installed.
On a machine without network where diffusers is missing, carry its wheel and importlib_metadata's
(`pip download --no-deps --only-binary=:all: --python-version 3.12 diffusers==0.42.1 importlib_metadata
-d .whl` where pip works; there `pip install --no-index --no-deps --target /tmp/site .whl/*.whl` and
`PYTHONPATH=/tmp/site python bench/gpu_bench.py`).

What the budget covers. FLUX.1-dev at 1024x1024 (4096 image + 512 text tokens, 74 TFLOP per call) takes about
0.2 s per step, so a round of its eight modes over 28 steps is about 30 s; Wan 2.1 at 81 frames 480p (21x60x104
latents, 32760 tokens) is attention-bound: 0.28 PFLOP per call for the 1.3B shape (~0.6 s per step: a round of
its modes over 50 steps ~2.5 min) and 1.7 PFLOP for the 14B (~3 s per step). So the script plans. Per model, a
scout loop (the first 20 steps, uncached) warms up, measures the step time (and the FLOP rate that predicts the
next model's) and picks the F8B0 / DBPrune thresholds; then rounds run while they fit. A phase (model x variant)
always gets its uncached and fixed-2x loops first if they fit; its other loops leave time for the minimum
(uncached + fixed-2x loops, compile, build and scout) of this model's later variant and of the next model's first
one. Whatever does not fit is listed as skipped. With FLUX at 0.22 s per step (0.18 compiled), Wan 1.3B at 0.65 s
and a 45 s compile, the default budget measures FLUX eager and regional fully (2 rounds of every mode) and Wan
eager's uncached, fixed-2x, F8B0 and fixed-4x output loops once (tests/bench/test_gpu_bench.py checks this
plan on a fake clock). `--wan-size auto` takes the 14B shape only when its minimum fits the budget left and its
weights fit in memory, else the 1.3B shape. `--budget-s 540` (one 10-minute call) measures more.

Smoke run (part of `make test` through tests/bench/test_gpu_bench.py): `python bench/gpu_bench.py --tiny` runs the
same code path on the CPU with tiny configs of the same classes (meta build and `to_empty` included; regional
compile with dynamo's `eager` backend, inductor's CPU codegen would take minutes) in under a minute (57 s, 25 of
them imports, on a shared 2-core CPU at load 6); it prints the section and writes it only where `--out` is given.
`--device cuda` without a GPU stops with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
START, END = "<!-- gpu-bench:start -->", "<!-- gpu-bench:end -->"

try:
    import numpy as np
    import torch
    from torch.overrides import TorchFunctionMode
except ImportError as exc:  # pragma: no cover - the bench needs torch
    print(f"gpu_bench: needs torch and numpy ({exc})", file=sys.stderr)
    raise SystemExit(2) from None
try:
    import cache_dit  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`: take the package from src/
    sys.path.insert(0, str(HERE.parent / "src"))
try:
    import diffusers
    from accelerate import init_empty_weights
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel, WanTransformer3DModel

    import cache_dit
    from cache_dit.cache_factory.adapters import find_adapter
    from cache_dit.cache_factory.calibration import uniform_schedule
    from cache_dit.cache_factory.decision import is_similar, relative_l1
    from cache_dit.cache_factory.runner import get_runner
except ImportError as exc:
    print(
        f"gpu_bench: {exc}; needs diffusers 0.42.x, accelerate and cache_dit (src/ of this checkout)",
        file=sys.stderr,
    )
    raise SystemExit(2) from None


# ----------------------------------------------------------------------------------------------------------
# Host syncs
# ----------------------------------------------------------------------------------------------------------

# Tensor methods and torch functions that read a device tensor's values on the host (each a device-to-host
# synchronisation when the tensor is on an accelerator).
SYNC_FUNCTIONS = frozenset(
    {
        "item",
        "tolist",
        "numpy",
        "cpu",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "__complex__",
        "__format__",
        "__repr__",
        "__array__",
        "nonzero",
        "argwhere",
        "masked_select",
        "unique",
        "unique_consecutive",
        "equal",
        "allclose",
        "is_nonzero",
    }
)


def _is_cpu(value: Any) -> bool:
    return (isinstance(value, str) and value.split(":")[0] == "cpu") or (
        isinstance(value, torch.device) and value.type == "cpu"
    )


def is_sync_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a torch call reads tensor values on the host (a sync on an accelerator).

    Counted: the names in `SYNC_FUNCTIONS` (`.cpu()` included, whatever the tensor's device); `.to("cpu")` of a
    tensor not on the CPU (on a CPU run a `.to(device)` cannot be told from a move to the host, so it is not
    counted); indexing with a boolean mask;
    `torch.where(cond)` with one argument; `repeat_interleave` with tensor repeats and no `output_size`.
    """
    name = getattr(func, "__name__", "")
    if name in SYNC_FUNCTIONS:
        return True
    if name == "to":  # to the host from an accelerator (`.to(x.device)` on a CPU run is no sync, nor counted)
        source = args[0] if args and isinstance(args[0], torch.Tensor) else None
        to_cpu = any(_is_cpu(a) for a in args[1:]) or _is_cpu(kwargs.get("device"))
        return to_cpu and source is not None and source.device.type != "cpu"
    if name == "__getitem__" and len(args) > 1:
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
    if name == "where":
        return len(args) + len(kwargs) == 1
    if name == "repeat_interleave":
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        return isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None
    return False


def _caller_site() -> str:
    """`path:line` of the innermost frame outside torch (where the sync was asked for)."""
    frame = sys._getframe(2)
    while frame is not None and (
        f"{os.sep}torch{os.sep}" in frame.f_code.co_filename or frame.f_code.co_filename == __file__
    ):
        frame = frame.f_back
    if frame is None:
        return "?"
    parts = Path(frame.f_code.co_filename).parts
    short = "/".join(parts[parts.index("site-packages") + 1 :] if "site-packages" in parts else parts[-3:])
    return f"{short}:{frame.f_lineno}"


class _SyncMode(TorchFunctionMode):
    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if self.counter.enabled and is_sync_call(func, args, kwargs):
            self.counter.record(f"{getattr(func, '__name__', func)} at {_caller_site()}")
        return func(*args, **kwargs)


class SyncCounter:
    """Counts device-to-host synchronisations inside `with counter.counting():` blocks.

    `method="function"` (any device): a TorchFunctionMode sees every torch call made from Python and counts those
    that read values on the host (`is_sync_call`), as if every tensor lived on an accelerator. `method="cuda"`:
    `torch.cuda.set_sync_debug_mode("warn")`, which flags each real synchronisation of a CUDA stream (also those
    inside torch's own ops). `per_call` holds the count of each `counting()` block, `sites` where they came from.
    """

    def __init__(self, method: str = "function") -> None:
        if method not in ("function", "cuda"):
            raise ValueError(f"SyncCounter method must be 'function' or 'cuda', got {method!r}")
        self.method = method
        self.per_call: list[int] = []
        self.sites: collections.Counter[str] = collections.Counter()
        self.enabled = False
        self._mode: _SyncMode | None = None

    @property
    def total(self) -> int:
        return sum(self.per_call)

    def record(self, site: str) -> None:
        self.per_call[-1] += 1
        self.sites[site] += 1

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count the syncs of the enclosed code as one call."""
        self.per_call.append(0)
        if self.method == "cuda":
            with self._cuda_warnings():
                yield
            return
        outer = self._mode is not None
        if not outer:
            self._mode = _SyncMode(self)
            self._mode.__enter__()
        self.enabled = True
        try:
            yield
        finally:
            self.enabled = False
            if not outer:
                mode, self._mode = self._mode, None
                mode.__exit__(None, None, None)

    @contextlib.contextmanager
    def _cuda_warnings(self) -> Iterator[None]:
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        for w in caught:
            if "synchroniz" in str(w.message):
                self.record(f"sync at {Path(w.filename).name}:{w.lineno}")
            else:  # not ours: hand it on as it was
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    @contextlib.contextmanager
    def around(self, *modules: torch.nn.Module) -> Iterator[SyncCounter]:
        """Count per call of each module (forward pre/post hooks), while the block runs."""
        if self.method != "function":
            raise ValueError("SyncCounter.around counts with method='function'; use counting() on CUDA")
        handles = []
        mode = self._mode = _SyncMode(self)
        mode.__enter__()

        def pre(module: Any, args: Any, kwargs: Any) -> None:
            self.per_call.append(0)
            self.enabled = True

        def post(module: Any, args: Any, kwargs: Any, out: Any) -> None:
            self.enabled = False

        try:
            for m in modules:
                handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
                handles.append(m.register_forward_hook(post, with_kwargs=True, always_call=True))
            yield self
        finally:
            self.enabled = False
            for h in handles:
                h.remove()
            self._mode = None
            mode.__exit__(None, None, None)


# ----------------------------------------------------------------------------------------------------------
# Models: configs, inputs, loops
# ----------------------------------------------------------------------------------------------------------

# black-forest-labs/FLUX.1-dev transformer/config.json
FLUX_DEV_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "out_channels": None,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
FLUX_TINY_CONFIG: dict[str, Any] = {
    **FLUX_DEV_CONFIG,
    "in_channels": 16,
    "num_layers": 4,
    "num_single_layers": 8,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 16,
    "axes_dims_rope": [4, 6, 6],
}
# Wan-AI/Wan2.1-T2V-14B-Diffusers and -1.3B-Diffusers transformer/config.json
WAN_BASE_CONFIG: dict[str, Any] = {
    "patch_size": [1, 2, 2],
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "attention_head_dim": 128,
}
WAN_CONFIGS: dict[str, dict[str, Any]] = {
    "14b": {**WAN_BASE_CONFIG, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40},
    "1.3b": {**WAN_BASE_CONFIG, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30},
    "tiny": {
        **WAN_BASE_CONFIG,
        "text_dim": 32,
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "ffn_dim": 32,
        "num_layers": 12,
        "rope_max_seq_len": 32,
    },
}
# black-forest-labs/FLUX.1-dev scheduler/scheduler_config.json (dynamic shifting by image sequence length)
FLUX_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
WAN_FLOW_SHIFT = 3.0  # Wan 2.1 at 480p


@dataclass
class ModelSpec:
    """One transformer to time: its class and config, the call's sizes and the loop's steps."""

    key: str  # "flux" / "wan"
    label: str
    cls: type
    config: dict[str, Any]
    steps: int
    warmup: int  # F8B0's and DBPrune's warmup_steps
    prune_fn_bn: int  # DBPrune's Fn = Bn
    text_len: int
    # FLUX: (latent height, latent width) before 2x2 packing; Wan: (latent frames, height, width)
    latent: tuple[int, ...]
    shape_note: str

    @property
    def tokens(self) -> int:
        if self.key == "flux":
            return self.latent[0] // 2 * (self.latent[1] // 2)
        f, h, w = self.latent
        pt, ph, pw = self.config["patch_size"]
        return (f // pt) * (h // ph) * (w // pw)

    @property
    def num_blocks(self) -> int:
        c = self.config
        return c["num_layers"] + c.get("num_single_layers", 0) if self.key == "flux" else c["num_layers"]

    def flops_per_call(self) -> float:
        """Matmul FLOPs of one transformer call (projections, MLPs, attention), for planning only."""
        c, n, s = self.config, self.tokens, self.text_len
        d = c["num_attention_heads"] * c["attention_head_dim"]
        if self.key == "flux":
            total = n + s  # both streams; the dual blocks project each stream, attention is joint
            per_block = 12 * d * d * total + 2 * total * total * d
            return 2.0 * per_block * (c["num_layers"] + c["num_single_layers"])
        per_block = 6 * d * d * n + 2 * d * d * s + 2 * d * c["ffn_dim"] * n + 2 * n * n * d + 2 * n * s * d
        return 2.0 * per_block * c["num_layers"]


def flux_spec(tiny: bool) -> ModelSpec:
    if tiny:
        return ModelSpec(
            "flux", "FLUX.1-dev architecture, tiny", FluxTransformer2DModel, FLUX_TINY_CONFIG, 6, 2, 2, 8,
            (8, 8), "4+8 blocks, 32 wide, 16 image + 8 text tokens",
        )  # fmt: skip
    return ModelSpec(
        "flux", "FLUX.1-dev transformer", FluxTransformer2DModel, FLUX_DEV_CONFIG, 28, 8, 8, 512, (128, 128),
        "19 dual + 38 single blocks, 24 heads x 128 = 3072 wide, 1024x1024: 4096 image + 512 text tokens",
    )  # fmt: skip


def wan_spec(size: str) -> ModelSpec:
    if size == "tiny":
        return ModelSpec(
            "wan", "Wan 2.1 architecture, tiny", WanTransformer3DModel, WAN_CONFIGS["tiny"], 6, 2, 2, 8,
            (2, 4, 4), "12 blocks, 24 wide, 8 video + 8 text tokens",
        )  # fmt: skip
    c = WAN_CONFIGS[size]
    return ModelSpec(
        "wan", f"Wan 2.1 T2V {size.upper()} transformer", WanTransformer3DModel, c, 50, 8, 8, 512, (21, 60, 104),
        f"{c['num_layers']} blocks, {c['num_attention_heads']} heads x 128 = {c['num_attention_heads'] * 128} "
        "wide, 81 frames 480x832: 21x60x104 latents, 32760 video + 512 text tokens",
    )  # fmt: skip


def build_on_meta(spec: ModelSpec) -> torch.nn.Module:
    """The transformer with its parameters on the meta device (no memory, no init) and its buffers (rotary
    tables) computed on the CPU, as diffusers' `from_pretrained` builds it."""
    with init_empty_weights(include_buffers=False):
        return spec.cls(**spec.config)


def param_bytes(model: torch.nn.Module, dtype: torch.dtype) -> int:
    keep = _keep_fp32(model)
    return sum(
        p.numel() * (4 if _kept(name, keep) else torch.finfo(dtype).bits // 8)
        for name, p in model.named_parameters()
    )


def _keep_fp32(model: torch.nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "_keep_in_fp32_modules", None) or ())


def _kept(name: str, keep: tuple[str, ...]) -> bool:
    return any(k in name.split(".") for k in keep)


@torch.no_grad()
def materialize(
    model: torch.nn.Module, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> torch.nn.Module:
    """Meta -> `device`: parameters in `dtype` (the model's `_keep_in_fp32_modules` in float32, as
    `from_pretrained(torch_dtype=...)` loads them), buffers keep their values, weights drawn on the device:
    matrices N(0, 1/fan_in), 1-d weights 1 (norm scales), biases 0."""
    keep = _keep_fp32(model)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    for module_name, module in model.named_modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            full = f"{module_name}.{name}" if module_name else name
            target = (torch.float32 if _kept(full, keep) else dtype) if p.is_floating_point() else p.dtype
            module._parameters[name] = torch.nn.Parameter(
                torch.empty(p.shape, dtype=target, device="meta"), requires_grad=False
            )
    model.to_empty(device=device)
    for name, b in model.named_buffers():
        b.copy_(buffers[name])
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            p.normal_(0.0, p[0].numel() ** -0.5, generator=generator)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)
    return model.eval()


def flux_image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`img_ids` (height * width, 3) of a packed latent grid, as `FluxPipeline._prepare_latent_image_ids` makes
    them (importing FluxPipeline would import its text encoders' modules: seconds for two small helpers)."""
    ids = torch.zeros(height, width, 3)
    ids[..., 1] = torch.arange(height)[:, None]
    ids[..., 2] = torch.arange(width)[None, :]
    return ids.reshape(height * width, 3).to(device=device, dtype=dtype)


def flux_pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C), as `FluxPipeline._pack_latents`."""
    b, c, h, w = latents.shape
    latents = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(b, (h // 2) * (w // 2), c * 4)


class Driver:
    """The pipeline's denoising loop around one transformer (FluxPipeline's / WanPipeline's, one branch)."""

    def __init__(
        self, spec: ModelSpec, transformer: torch.nn.Module, device: torch.device, dtype: torch.dtype
    ):
        self.spec, self.transformer, self.device, self.dtype = spec, transformer, device, dtype
        g = torch.Generator(device=device).manual_seed(1)
        c = spec.config
        text_dim = c["joint_attention_dim"] if spec.key == "flux" else c["text_dim"]
        self.prompt = torch.randn(1, spec.text_len, text_dim, generator=g, device=device).to(dtype)
        if spec.key == "flux":
            h, w = spec.latent
            self.pooled = torch.randn(1, c["pooled_projection_dim"], generator=g, device=device).to(dtype)
            self.img_ids = flux_image_ids(h // 2, w // 2, device, dtype)
            self.txt_ids = torch.zeros(spec.text_len, 3, device=device, dtype=dtype)
            self.guidance = (
                torch.full([1], 3.5, device=device, dtype=torch.float32) if c["guidance_embeds"] else None
            )

    def scheduler(self, steps: int) -> FlowMatchEulerDiscreteScheduler:
        if self.spec.key == "flux":
            sched = FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER_CONFIG)
            cfg = FLUX_SCHEDULER_CONFIG
            slope = (cfg["max_shift"] - cfg["base_shift"]) / (
                cfg["max_image_seq_len"] - cfg["base_image_seq_len"]
            )
            mu = self.spec.tokens * slope + cfg["base_shift"] - slope * cfg["base_image_seq_len"]
            sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device=self.device)
        else:
            sched = FlowMatchEulerDiscreteScheduler(shift=WAN_FLOW_SHIFT)
            sched.set_timesteps(steps, device=self.device)
        sched.set_begin_index(0)  # as FluxPipeline does: no timestep lookup (a host sync) in step()
        return sched

    def latents(self) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(0)
        if self.spec.key == "flux":
            h, w = self.spec.latent
            channels = self.spec.config["in_channels"] // 4
            x = torch.randn(1, channels, h, w, generator=g, device=self.device).to(self.dtype)
            return flux_pack(x)  # (1, N, 4C)
        return torch.randn(
            1, self.spec.config["in_channels"], *self.spec.latent, generator=g, device=self.device
        )

    @torch.no_grad()
    def loop(
        self,
        steps: int,
        around_call: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        stop_after: int | None = None,
    ) -> torch.Tensor:
        """One denoising run; `around_call()` wraps each transformer call (sync counting)."""
        t_model = self.transformer
        sched = self.scheduler(steps)
        # WanPipeline reads float(scheduler.sigmas[i]) for its cache_context marks every step, a host sync
        # outside the transformer; the same values, read once before the loop
        sigmas = sched.sigmas.tolist()
        latents = self.latents()
        with cache_dit.denoising_run(t_model):
            for i, t in enumerate(sched.timesteps):
                if stop_after is not None and i >= stop_after:
                    break
                if self.spec.key == "flux":
                    with t_model.cache_context("cond"), around_call():
                        noise = t_model(
                            hidden_states=latents,
                            timestep=t.expand(1).to(latents.dtype) / 1000,
                            guidance=self.guidance,
                            pooled_projections=self.pooled,
                            encoder_hidden_states=self.prompt,
                            txt_ids=self.txt_ids,
                            img_ids=self.img_ids,
                            joint_attention_kwargs=None,
                            return_dict=False,
                        )[0]
                else:
                    marks = {"step_index": i, "sigma": sigmas[i], "num_inference_steps": steps}
                    with t_model.cache_context("cond", **marks), around_call():
                        noise = t_model(
                            hidden_states=latents.to(self.dtype),
                            timestep=t.expand(1),
                            encoder_hidden_states=self.prompt,
                            attention_kwargs=None,
                            return_dict=False,
                        )[0]
                latents = sched.step(noise, t, latents, return_dict=False)[0]
        return latents


# ----------------------------------------------------------------------------------------------------------
# Modes
# ----------------------------------------------------------------------------------------------------------

MODE_KEYS = ("none", "thr0", "fixed2x", "fixed2x-out", "fixed4x", "fixed4x-out", "F8B0", "DBPrune")
# The order within a round: what matters most first, so a round cut by the budget keeps it.
RUN_ORDER = ("none", "fixed2x", "F8B0", "fixed4x-out", "DBPrune", "thr0", "fixed2x-out", "fixed4x")
MINIMUM_MODES = ("none", "fixed2x")  # a phase's least worth measuring: the cache's gain at 2x, once


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    options: dict[str, Any] | None


def pairwise_relative_l1(values: list[torch.Tensor]) -> list[list[float]]:
    """d[i][j] = `relative_l1(values[j], values[i])` for i < j (0 elsewhere): step j against an earlier one."""
    n = len(values)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    found = torch.stack([relative_l1(values[j], values[i]) for i, j in pairs]).tolist() if pairs else []
    table = [[0.0] * n for _ in range(n)]
    for (i, j), d in zip(pairs, found):
        table[i][j] = d
    return table


def replay_gate(diffs: list[list[float]], warmup: int, threshold: float) -> tuple[int, int]:
    """The threshold gate replayed on one stream's recorded values (`pairwise_relative_l1`): steps before
    `warmup` are computed; a later step is served when its diff against the last computed step is below the
    threshold (`decision.is_similar`), else computed. Returns (served, steps after warm-up)."""
    last, served, eligible = 0, 0, 0
    for step in range(1, len(diffs)):
        if step < warmup:
            last = step
            continue
        eligible += 1
        if is_similar(diffs[last][step], threshold):
            served += 1
        else:
            last = step
    return served, eligible


def half_threshold(streams: list[list[list[float]]], warmup: int) -> tuple[float, float]:
    """The threshold at which the replayed gates of all `streams` together serve closest to half of their steps
    after warm-up (the served share grows with the threshold: a bisection over the midpoints between the
    recorded diffs), and that share. (0, 0) when there is nothing to serve."""
    values = sorted(
        {d for table in streams for i, row in enumerate(table) for d in row[i + 1 :] if math.isfinite(d)}
    )
    candidates = [(a + b) / 2 for a, b in zip(values, values[1:])] + ([values[-1] * 1.5] if values else [])
    candidates = [c for c in candidates if c > 0]

    def share(threshold: float) -> float:
        served = eligible = 0
        for table in streams:
            s, e = replay_gate(table, warmup, threshold)
            served, eligible = served + s, eligible + e
        return served / eligible if eligible else 0.0

    if not candidates or share(candidates[-1]) == 0.0:
        return 0.0, 0.0
    lo, hi = 0, len(candidates) - 1  # the first candidate serving at least half
    while lo < hi:
        mid = (lo + hi) // 2
        if share(candidates[mid]) >= 0.5:
            hi = mid
        else:
            lo = mid + 1
    options = [candidates[lo]] + ([candidates[lo - 1]] if lo > 0 else [])
    best = min(options, key=lambda c: (abs(share(c) - 0.5), -c))
    return best, share(best)


def make_modes(spec: ModelSpec, thresholds: dict[str, float]) -> dict[str, Mode]:
    steps, fn = spec.steps, 8
    taylor1 = {"enable_taylorseer": True, "taylorseer_kwargs": {"n_derivatives": 1}}
    modes = [
        Mode("none", "uncached", None),
        Mode("thr0", f"DBCache F{fn}B0, threshold 0", {"Fn_compute_blocks": fn, "Bn_compute_blocks": 0,
                                                       "residual_diff_threshold": 0.0}),
    ]  # fmt: skip
    for interval in (2, 4):
        schedule = uniform_schedule(steps, warmup_steps=1, interval=interval)
        fixed = {"Fn_compute_blocks": 0, "Bn_compute_blocks": 0, "compute_steps": schedule, **taylor1}
        modes.append(
            Mode(
                f"fixed{interval}x",
                f"fixed every {interval}, TaylorSeer(1) residual",
                {**fixed, "enable_encoder_taylorseer": spec.key == "flux"},
            )
        )
        modes.append(
            Mode(
                f"fixed{interval}x-out",
                f"fixed every {interval}, TaylorSeer(1) output",
                {**fixed, "enable_encoder_taylorseer": False, "taylorseer_cache_type": "output"},
            )
        )
    tau = thresholds.get("F8B0", 0.0)
    modes.append(
        Mode(
            "F8B0",
            f"DBCache F{fn}B0, threshold {tau:.3g}",
            {"Fn_compute_blocks": fn, "Bn_compute_blocks": 0, "residual_diff_threshold": tau,
             "warmup_steps": spec.warmup},
        )
    )  # fmt: skip
    tau_p, k = thresholds.get("DBPrune", 0.0), spec.prune_fn_bn
    modes.append(
        Mode(
            "DBPrune",
            f"DBPrune F{k}B{k}, threshold {tau_p:.3g}",
            {"cache_type": "DBPrune", "Fn_compute_blocks": k, "Bn_compute_blocks": k,
             "residual_diff_threshold": tau_p, "warmup_steps": spec.warmup},
        )
    )  # fmt: skip
    return {m.key: m for m in modes}


def block_counts(mode: Mode, spec: ModelSpec, stats: Any) -> tuple[int, int]:
    """(blocks the uncached loop computes, blocks this loop computed), from the cache's stats."""
    total = spec.steps * spec.num_blocks
    o = mode.options
    if o is None:
        return total, total
    if o.get("cache_type") == "DBPrune":
        pruned = sum(sum(b.pruned_blocks) for b in stats.branches.values())
        return total, total - pruned
    cached = sum(len(b.cached_steps) for b in stats.branches.values())
    if o.get("taylorseer_cache_type") == "output":
        return total, total - cached * spec.num_blocks
    skipped = spec.num_blocks - o["Fn_compute_blocks"] - o["Bn_compute_blocks"]
    return total, total - cached * skipped


def expected_fraction(mode: Mode, spec: ModelSpec) -> float:
    """Planning: the share of the uncached loop's block calls this mode is expected to compute."""
    o, steps, blocks = mode.options, spec.steps, spec.num_blocks
    if o is None or ("compute_steps" not in o and o.get("residual_diff_threshold", 0) == 0):
        return 1.0
    if "compute_steps" in o:
        return len(o["compute_steps"]) / steps
    half = (steps - spec.warmup) / 2 / steps
    if o.get("cache_type") == "DBPrune":
        return 1 - half * (blocks - 2 * spec.prune_fn_bn) / blocks
    return 1 - half * (blocks - o["Fn_compute_blocks"]) / blocks


def release_cache(transformer: torch.nn.Module) -> None:
    """Remove the cache and drop its tensors now: the runner sits in reference cycles (its policies point back
    at it), so without this its buffers would live until the next full garbage collection (seconds each on a
    heap holding torch and dynamo) and count in the next mode's peak memory."""
    runner = get_runner(transformer)
    if runner is not None:
        runner.call.branches.clear()
    cache_dit.disable_cache(transformer)


def held_bytes(transformer: torch.nn.Module) -> int:
    """Bytes of the distinct tensors the cache's state holds (buffers, residuals, forecasts)."""
    runner = get_runner(transformer)
    if runner is None:
        return 0
    seen: dict[int, int] = {}
    visited: set[int] = set()

    def walk(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            seen[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
        elif id(obj) in visited:
            return
        elif isinstance(obj, dict):
            visited.add(id(obj))
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            visited.add(id(obj))
            for v in obj:
                walk(v)
        elif hasattr(obj, "__dict__") and not isinstance(obj, (torch.nn.Module, type)):
            visited.add(id(obj))
            for v in vars(obj).values():
                walk(v)

    for branch in runner.call.branches.values():
        walk(branch)
    return sum(seen.values())


# ----------------------------------------------------------------------------------------------------------
# The run: phases, rounds, budget
# ----------------------------------------------------------------------------------------------------------


def now() -> float:
    """The budget's clock."""
    return time.perf_counter()


@dataclass
class ModeResult:
    label: str
    options: dict[str, Any] | None
    status: str = "pending"
    loop_s: dict[int, float] = field(default_factory=dict)  # round -> seconds
    cached_steps: list[int] | None = None
    total_blocks: int = 0
    computed_blocks: int = 0
    peak_bytes: int | None = None
    held_bytes: int = 0
    syncs: int | None = None
    max_syncs_per_call: int | None = None
    calls: int = 0
    sync_sites: dict[str, int] = field(default_factory=dict)

    @property
    def bound(self) -> float | None:
        return self.total_blocks / self.computed_blocks if self.computed_blocks else None


@dataclass
class Phase:
    model: str
    variant: str  # "eager" / "regional"
    title: str
    steps: int
    blocks: int
    modes: dict[str, ModeResult] = field(default_factory=dict)
    compile_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def ms_per_step(self, key: str) -> tuple[float, float, float] | None:
        times = list(self.modes[key].loop_s.values())
        if not times:
            return None
        ms = [1000 * t / self.steps for t in times]
        return statistics.median(ms), min(ms), max(ms)

    def speedups(self, key: str) -> list[float]:
        none, mine = self.modes["none"].loop_s, self.modes[key].loop_s
        return [none[r] / mine[r] for r in mine if r in none]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "variant": self.variant,
            "title": self.title,
            "steps": self.steps,
            "blocks": self.blocks,
            "compile_s": self.compile_s,
            "notes": self.notes,
            "modes": {},
        }
        for key, m in self.modes.items():
            ms, sp = self.ms_per_step(key), self.speedups(key)
            out["modes"][key] = {
                "label": m.label,
                "status": m.status,
                "options": m.options,
                "loop_s": [m.loop_s[r] for r in sorted(m.loop_s)],
                "ms_per_step": ms[0] if ms else None,
                "speedup": statistics.median(sp) if sp else None,
                "bound": m.bound,
                "cached_steps": m.cached_steps,
                "total_blocks": m.total_blocks,
                "computed_blocks": m.computed_blocks,
                "peak_bytes": m.peak_bytes,
                "held_bytes": m.held_bytes,
                "syncs": m.syncs,
                "max_syncs_per_call": m.max_syncs_per_call,
                "calls": m.calls,
                "sync_sites": m.sync_sites,
            }
        return out


class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.dtype = getattr(torch, args.dtype)
        self.started = time.time()
        self.deadline = now() + args.budget_s
        self.phases: list[Phase] = []
        self.notes: list[str] = []
        self.rate: float | None = None  # FLOP/s measured on the first scout (planning)
        self.cuda = device.type == "cuda"

    # -- planning -----------------------------------------------------------------------------------------

    def left(self) -> float:
        return self.deadline - now()

    def step_estimate(self, spec: ModelSpec) -> float:
        rate = self.rate or self.args.assumed_tflops * 1e12
        return spec.flops_per_call() / rate

    def minimum(self, spec: ModelSpec, variant: str, first: bool) -> float:
        """Seconds of the least worth running in one phase: its uncached and fixed-2x loops, after the compile
        (regional) and, for a model's first phase, its build and scout loop."""
        step = self.step_estimate(spec)
        cost = 5.0 + self.scout_steps(spec) * step if first else 0.0
        if variant == "regional":
            cost += self.args.compile_estimate_s
        return cost + 1.5 * spec.steps * step

    def scout_steps(self, spec: ModelSpec) -> int:
        return min(spec.steps, spec.warmup + 12)

    # -- output -------------------------------------------------------------------------------------------

    def device_name(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name(self.device)
        return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"

    def section(self, final: bool) -> str:
        a = self.args
        elapsed = time.time() - self.started
        title = self.device_name() + (" (tiny smoke run)" if a.tiny else "")
        lines = [
            START,
            f"## GPU timing: {title}",
            "",
            f"Generated by `{' '.join(['python bench/gpu_bench.py', *a.argv])}` "
            f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(self.started))} in {elapsed:.0f} s "
            f"(budget {a.budget_s:.0f} s){'' if final else '; IN PROGRESS: cut short or still running'}.",
            "",
        ]
        mem = (
            f", {torch.cuda.get_device_properties(self.device).total_memory / 2**30:.0f} GiB"
            if self.cuda
            else ""
        )
        cuda = f" (CUDA {torch.version.cuda})" if self.cuda else ""
        lines += [
            f"- Device: {self.device_name()}{mem}; torch {torch.__version__}{cuda}, diffusers "
            f"{diffusers.__version__}, Python {platform.python_version()}; {a.dtype}.",
            "- Weights: random (matrices N(0, 1/fan_in), norm scales 1, biases 0), built from the config on the meta "
            "device and materialised on the device (`to_empty`); `_keep_in_fp32_modules` stay float32 as "
            "`from_pretrained` keeps them.",
            "- Loop: as the pipeline drives it: random latents, FlowMatchEulerDiscreteScheduler timesteps and "
            "`step` (`set_begin_index(0)`), the pipeline's `cache_context` marks (Wan's sigmas read once, not per "
            "step), inside `cache_dit.denoising_run`; "
            "one transformer call per step (FLUX.1-dev is guidance-distilled; Wan runs the conditional branch "
            "only: its CFG call doubles every time and keeps its own cache state, so the ratios hold).",
            "- ms/step: median (min-max) over the rounds; every mode runs once per round, interleaved. Speedup: "
            "median over rounds of uncached / mode within the round. Bound: block calls of the uncached loop / "
            "blocks computed (those run on cached steps included), i.e. the speedup if blocks were all the "
            "time; realized = speedup / bound.",
            "- Memory: peak = `torch.cuda.max_memory_allocated` during the loop (weights included); extra = peak - "
            "the uncached loop's peak; held = the tensors the cache keeps after the loop.",
            "- Host syncs: device-to-host synchronisations inside the transformer call, per step, counted in the "
            + (
                "first round with `torch.cuda.set_sync_debug_mode('warn')`."
                if self.cuda
                else "eager variant with a TorchFunctionMode counter (item, bool, float, tolist, cpu, nonzero, ...)."
            ),
        ]
        for phase in self.phases:
            lines += ["", f"### {phase.title}", ""]
            if phase.compile_s is not None:
                lines.append(
                    f"Compile (first call, regional, `{a.compile_backend}`): {phase.compile_s:.1f} s."
                )
                lines.append("")
            lines += [
                "| mode | ms/step (min-max) | speedup | bound | realized/bound | cached steps | peak GiB "
                "| extra MiB | held MiB | syncs/step | rounds |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            for key in MODE_KEYS:
                if key not in phase.modes:
                    continue
                m = phase.modes[key]
                ms, sp = phase.ms_per_step(key), phase.speedups(key)
                if ms is None:
                    lines.append(f"| {key}: {m.label} | {m.status} | | | | | | | | | |")
                    continue
                speed = statistics.median(sp) if sp else None
                bound = m.bound
                none_peak = phase.modes["none"].peak_bytes
                extra = (
                    f"{(m.peak_bytes - none_peak) / 2**20:+.0f}"
                    if m.peak_bytes is not None and none_peak is not None
                    else "n/a"
                )
                cached = "" if m.cached_steps is None else str(len(m.cached_steps))
                if m.options and m.options.get("cache_type") == "DBPrune":
                    cached = f"{m.total_blocks - m.computed_blocks} blocks"
                syncs = "n/a" if m.syncs is None else f"{m.syncs / m.calls:.2f}"
                lines.append(
                    f"| {key}: {m.label} | {ms[0]:.1f} ({ms[1]:.1f}-{ms[2]:.1f}) "
                    f"| {'' if speed is None else f'{speed:.2f}x'} | {'' if bound is None else f'{bound:.2f}x'} "
                    f"| {'' if speed is None or bound is None else f'{100 * speed / bound:.0f}%'} | {cached} "
                    f"| {'n/a' if m.peak_bytes is None else f'{m.peak_bytes / 2**30:.2f}'} | {extra} "
                    f"| {m.held_bytes / 2**20:.1f} | {syncs} | {len(m.loop_s)} |"
                )
            for note in phase.notes:
                lines.append(f"- {note}")
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        lines.append(END)
        return "\n".join(lines)

    def write(self, final: bool = False) -> None:
        section = self.section(final)
        if self.args.out is not None:
            path = Path(self.args.out)
            text = path.read_text() if path.exists() else "# Benchmark results\n"
            if START in text and END in text:
                head, rest = text.split(START, 1)
                text = head + section + rest.split(END, 1)[1]
            else:
                text = text.rstrip("\n") + "\n\n" + section + "\n"
            path.write_text(text)
        if self.args.json is not None:
            data = {
                "device": self.device_name(),
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "tiny": self.args.tiny,
                "budget_s": self.args.budget_s,
                "elapsed_s": time.time() - self.started,
                "final": final,
                "notes": self.notes,
                "phases": [p.to_json() for p in self.phases],
            }
            Path(self.args.json).write_text(json.dumps(data, indent=1, default=str))
        if final:
            print(section, flush=True)

    def log(self, message: str) -> None:
        print(f"[gpu_bench {time.time() - self.started:6.1f}s] {message}", flush=True)

    # -- measuring ----------------------------------------------------------------------------------------

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def scout(self, driver: Driver) -> dict[str, float]:
        """An uncached partial loop (the warm-up): the step time, and the F8B0 / DBPrune thresholds.

        It records what each gate compares: the first 8 blocks' residual (F8B0) and each prunable block's input
        (DBPrune; on up to 256 fixed token positions) at every scout step; then `half_threshold` replays the gate
        on them and picks the threshold that serves closest to half the steps after warm-up. (A random model's
        features need not drift smoothly, so a multiple of the step-to-step diff would not say how often.)
        """
        spec, t = driver.spec, driver.transformer
        blocks = find_adapter(t).blocks(t)
        fn, k = 8, spec.prune_fn_bn
        prunable = range(k, len(blocks) - k)
        residuals: list[torch.Tensor] = []
        inputs: dict[int, list[torch.Tensor]] = {i: [] for i in prunable}
        state: dict[str, Any] = {"in0": None, "tokens": None}

        def pre(idx: int, io: Any) -> Callable[..., None]:
            def hook(module: Any, args: Any, kwargs: Any) -> None:
                hidden = io.inputs(args, kwargs)[0]  # (B, N, D)
                if idx == 0:
                    state["in0"] = hidden
                if idx in inputs:
                    if state["tokens"] is None:
                        g = torch.Generator().manual_seed(0)
                        n = hidden.shape[1]
                        state["tokens"] = torch.randperm(n, generator=g)[: min(n, 256)].sort().values
                    inputs[idx].append(hidden[:, state["tokens"].to(hidden.device)].float())

            return hook

        def post(module: Any, args: Any, kwargs: Any, out: Any) -> None:
            residuals.append(blocks[fn - 1][1].outputs(out)[0] - state["in0"])  # (B, N, D)

        handles = [
            b.register_forward_pre_hook(pre(i, io), with_kwargs=True) for i, (b, io) in enumerate(blocks)
        ]
        handles.append(blocks[fn - 1][0].register_forward_hook(post, with_kwargs=True))
        steps = self.scout_steps(spec)
        try:
            self.sync()
            start = time.perf_counter()
            driver.loop(spec.steps, stop_after=steps)
            self.sync()
            elapsed = time.perf_counter() - start
        finally:
            for h in handles:
                h.remove()
        self.rate = self.rate or spec.flops_per_call() * steps / elapsed
        f8, f8_served = half_threshold([pairwise_relative_l1(residuals)], spec.warmup)
        prune, prune_served = half_threshold([pairwise_relative_l1(v) for v in inputs.values()], spec.warmup)
        return {
            "F8B0": f8,
            "DBPrune": prune,
            "F8B0_served": f8_served,
            "DBPrune_served": prune_served,
            "step_s": elapsed / steps,
        }

    def compile(self, driver: Driver) -> float:
        """Regional compile (`compile_repeated_blocks`, as bench/compile_bench.py); returns the first call's
        seconds (the compile)."""
        driver.transformer.compile_repeated_blocks(backend=self.args.compile_backend)
        self.sync()
        start = time.perf_counter()
        driver.loop(driver.spec.steps, stop_after=1)
        self.sync()
        return time.perf_counter() - start

    @torch.no_grad()
    def measure(self, driver: Driver, mode: Mode, result: ModeResult, rnd: int, count: bool) -> None:
        """One timed loop of `mode`; on `count`, host syncs per transformer call too."""
        t = driver.transformer
        release_cache(t)
        if mode.options is not None:
            cache_dit.apply_cache_on_transformer(t, **mode.options)
        counter = SyncCounter("cuda" if self.cuda else "function") if count else None
        around = counter.counting if counter is not None else contextlib.nullcontext
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        out = driver.loop(driver.spec.steps, around_call=around)
        self.sync()
        elapsed = time.perf_counter() - start
        if not bool(torch.isfinite(out).all()):
            self.notes.append(f"{driver.spec.key} {mode.key}: the loop's latents are not finite")
        result.loop_s[rnd] = elapsed
        if self.cuda:
            result.peak_bytes = max(result.peak_bytes or 0, torch.cuda.max_memory_allocated(self.device))
        result.held_bytes = held_bytes(t)
        stats = cache_dit.summary(t) if mode.options is not None else None
        result.cached_steps = None if stats is None else list(stats.cached_steps)
        result.total_blocks, result.computed_blocks = block_counts(mode, driver.spec, stats)
        if counter is not None:
            result.syncs, result.calls = counter.total, len(counter.per_call)
            result.max_syncs_per_call = max(counter.per_call, default=0)
            result.sync_sites = dict(counter.sites.most_common(5))
        release_cache(t)
        result.status = "ok"

    def run_model(
        self, spec: ModelSpec, variants: list[str], reserve_for: Callable[[str], Callable[[], float]]
    ) -> None:
        """Build, scout, then each variant's rounds while they fit the budget less what `reserve_for(variant)()`
        keeps for the later phases."""
        a = self.args
        need = 5.0 + self.scout_steps(spec) * self.step_estimate(spec)
        if self.left() - reserve_for(variants[0])() < need:
            self.notes.append(
                f"{spec.label}: skipped (budget: its build and scout loop ~{need:.0f} s did not fit)."
            )
            self.log(f"{spec.label}: skipped (budget)")
            self.write()
            return
        self.log(f"{spec.label}: building on meta, materialising on {self.device} ({spec.shape_note})")
        try:
            model = build_on_meta(spec)
            nbytes = param_bytes(model, self.dtype)
            start = time.perf_counter()
            transformer = materialize(model, self.device, self.dtype)
            self.sync()
            self.log(
                f"{spec.label}: {nbytes / 2**30:.2f} GiB of weights in {time.perf_counter() - start:.1f} s"
            )
            driver = Driver(spec, transformer, self.device, self.dtype)
            scout = self.scout(driver)
        except Exception as exc:  # noqa: BLE001 - one model failing must not lose the others
            self.notes.append(f"{spec.label}: build or scout failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            self.free()
            return
        self.log(
            f"{spec.label}: scout {scout['step_s'] * 1000:.1f} ms/step; thresholds F8B0 {scout['F8B0']:.4g}, "
            f"DBPrune {scout['DBPrune']:.4g}"
        )
        modes = make_modes(spec, scout)
        order = [k for k in RUN_ORDER if k in modes and k in a.modes]
        for variant in variants:
            phase = Phase(spec.key, variant, f"{spec.label} ({spec.shape_note}), {spec.steps} steps, {variant}",
                          spec.steps, spec.num_blocks)  # fmt: skip
            phase.modes = {k: ModeResult(modes[k].label, modes[k].options) for k in MODE_KEYS if k in order}
            phase.notes.append(
                f"Thresholds from the scout loop ({self.scout_steps(spec)} uncached steps, warm-up {spec.warmup}): "
                f"F8B0 {scout['F8B0']:.4g}, DBPrune {scout['DBPrune']:.4g}; replayed on its recorded residuals / "
                f"block inputs they serve {100 * scout['F8B0_served']:.0f}% of the steps / "
                f"{100 * scout['DBPrune_served']:.0f}% of the prunable block calls after warm-up (the timed loops, "
                "whose cached steps change what follows, report their own counts)."
            )
            self.phases.append(phase)
            step_s = scout["step_s"]
            reserve = reserve_for(variant)
            if variant == "regional":
                need = a.compile_estimate_s + spec.steps * step_s
                if self.left() - reserve() < need:
                    phase.notes.append(
                        f"Skipped: budget (compile + one uncached loop ~{need:.0f} s did not fit)."
                    )
                    self.log(f"{phase.title}: skipped (budget)")
                    for m in phase.modes.values():
                        m.status = "skipped: budget"
                    self.write()
                    continue
                try:
                    phase.compile_s = self.compile(driver)
                    self.log(f"{phase.title}: compiled in {phase.compile_s:.1f} s")
                except Exception as exc:  # noqa: BLE001
                    phase.notes.append(f"Compile failed: {type(exc).__name__}: {exc}")
                    traceback.print_exc()
                    for m in phase.modes.values():
                        m.status = "skipped: compile failed"
                    self.write()
                    continue
            self.rounds(driver, phase, modes, order, step_s, reserve)
        del driver, transformer, model
        self.free()

    def rounds(
        self,
        driver: Driver,
        phase: Phase,
        modes: dict[str, Mode],
        order: list[str],
        step_s: float,
        reserve: Callable[[], float],
    ) -> None:
        spec = driver.spec
        count_syncs = self.cuda or phase.variant == "eager"  # CPU: no function mode around compiled blocks
        for rnd in range(self.args.repeats):
            for key in order:
                m = phase.modes[key]
                if rnd > 0 and 0 not in m.loop_s:
                    continue  # only modes measured in the first round are repeated
                last = m.loop_s.get(rnd - 1)
                none_s = phase.modes["none"].loop_s.get(rnd, phase.modes["none"].loop_s.get(0))
                predicted = last or (none_s or spec.steps * step_s) * expected_fraction(modes[key], spec)
                # the phase's own minimum comes first; its other loops leave the later phases theirs
                keep = 0.0 if rnd == 0 and key in MINIMUM_MODES else reserve()
                if self.left() - keep < predicted:
                    if rnd == 0:
                        m.status = f"skipped: budget (~{predicted:.0f} s)"
                    self.log(f"{phase.title} round {rnd + 1} {key}: skipped (budget, ~{predicted:.0f} s)")
                    continue
                try:
                    self.measure(driver, modes[key], m, rnd, count=count_syncs and rnd == 0)
                except Exception as exc:  # noqa: BLE001 - an OOM or a bug in one mode must not lose the rest
                    m.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                    traceback.print_exc()
                    release_cache(driver.transformer)
                    self.free()
                else:
                    ms = 1000 * m.loop_s[rnd] / spec.steps
                    self.log(
                        f"{phase.title} round {rnd + 1} {key}: {ms:.1f} ms/step"
                        + ("" if m.syncs is None else f", syncs/step {m.syncs / max(m.calls, 1):.2f}")
                    )
                self.write()

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def choose_wan_size(bench: Bench, args: argparse.Namespace, variants: list[str]) -> tuple[str, str]:
    """`--wan-size auto`: the 14B shape when its minimum (build, scout, the uncached and fixed-2x loops of the
    first variant) fits in the budget left and its weights fit in memory; else 1.3B. Returns (size, why)."""
    if args.tiny:
        return "tiny", "tiny config"
    if args.wan_size != "auto":
        return args.wan_size, "given by --wan-size"
    big = wan_spec("14b")
    need = bench.minimum(big, variants[0], first=True)
    nbytes = param_bytes(build_on_meta(big), bench.dtype)
    free = torch.cuda.mem_get_info(bench.device)[0] if bench.cuda else 0
    fits_memory = nbytes * 1.3 < free
    if need <= bench.left() and fits_memory:
        return "14b", f"auto: its minimum (~{need:.0f} s) fits the budget left and its weights fit in memory"
    why = [] if fits_memory else [f"weights {nbytes / 2**30:.0f} GiB vs {free / 2**30:.0f} GiB free"]
    if need > bench.left():
        why.append(f"its minimum ~{need:.0f} s > {bench.left():.0f} s of budget left")
    return "1.3b", "auto: 14B shape skipped (" + "; ".join(why) + ")"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--tiny", action="store_true", help="tiny configs on the CPU: the smoke run of the same code"
    )
    p.add_argument("--device", default=None, help="default: cuda; with --tiny: cpu")
    p.add_argument("--models", default="flux,wan", help="comma list of flux, wan (default both)")
    p.add_argument(
        "--variants", default="eager,regional", help="comma list of eager, regional (default both)"
    )
    p.add_argument("--modes", default=",".join(MODE_KEYS), help=f"comma list of {', '.join(MODE_KEYS)}")
    p.add_argument("--wan-size", default="auto", help="auto (default), 14b or 1.3b")
    p.add_argument(
        "--repeats", type=int, default=2, help="rounds per variant (default 2; the budget may cut)"
    )
    p.add_argument("--budget-s", type=float, default=270.0, help="seconds of measuring (default 270)")
    p.add_argument(
        "--compile-backend", default=None, help="torch.compile backend (inductor; tiny: eager, which traces the "
        "same dynamo path around the cache's boundaries without inductor's minutes of CPU codegen)"
    )  # fmt: skip
    p.add_argument(
        "--compile-estimate-s", type=float, default=None, help="planning: compile s (60; tiny: 10)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; tiny: 1)")
    p.add_argument("--assumed-tflops", type=float, default=400.0, help="planning before the first scout")
    p.add_argument("--dtype", default=None, help="bfloat16 (default) or float32")
    p.add_argument("--out", default=None, help="RESULTS.md to write the section into (default: bench/RESULTS.md; "
                   "with --tiny: none, the section is printed)")  # fmt: skip
    p.add_argument("--json", default=None, help="also write the raw results as JSON here")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    def listed(name: str, value: str, allowed: tuple[str, ...]) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            p.error(f"--{name}: {', '.join(bad) or 'empty'} not in {', '.join(allowed)}")
        return items

    args.models = listed("models", args.models, ("flux", "wan"))
    args.variants = listed("variants", args.variants, ("eager", "regional"))
    args.modes = listed("modes", args.modes, MODE_KEYS)
    if "none" not in args.modes:
        p.error("--modes must include none (the uncached loop every speedup is measured against)")
    if args.wan_size not in ("auto", "14b", "1.3b"):
        p.error(f"--wan-size: {args.wan_size!r} not in auto, 14b, 1.3b")
    tiny = args.tiny
    args.compile_backend = args.compile_backend or ("eager" if tiny else "inductor")
    if args.compile_estimate_s is None:
        args.compile_estimate_s = 10.0 if tiny else 60.0
    if args.threads is None and tiny:
        args.threads = 1  # tiny models are per-op overhead; on a shared CPU one thread is also the steadiest
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if not args.budget_s > 0:
        p.error(f"--budget-s must be > 0, got {args.budget_s}")
    args.dtype = args.dtype or "bfloat16"
    if args.dtype not in ("bfloat16", "float32", "float16"):
        p.error(f"--dtype: {args.dtype!r} not in bfloat16, float32, float16")
    if args.device is None:
        args.device = "cpu" if args.tiny else "cuda"
    if args.out is None and not args.tiny:
        args.out = str(HERE / "RESULTS.md")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        print(f"gpu_bench: --device {args.device!r}: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_bench: --device cuda, but no CUDA GPU is available (torch.cuda.is_available() is False); "
            "run `python bench/gpu_bench.py --tiny` for the CPU smoke run",
            file=sys.stderr,
        )
        return 2
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    bench = Bench(args, device)
    bench.log(
        f"{bench.device_name()}, budget {args.budget_s:.0f} s, models {args.models}, variants {args.variants}"
    )
    specs: dict[str, ModelSpec | None] = {"flux": flux_spec(args.tiny), "wan": None}
    phases = [(model, variant) for model in args.models for variant in args.variants]

    def spec_of(model: str) -> ModelSpec:
        """The spec, or (Wan, before its size is chosen) the one auto would fall back to."""
        found = specs[model]
        if found is None:
            found = wan_spec("tiny" if args.tiny else ("1.3b" if args.wan_size == "auto" else args.wan_size))
        return found

    def reserve_for(model: str, variant: str) -> Callable[[], float]:
        """Seconds a phase's loops beyond its own minimum must leave for the later phases it must not starve:
        this model's later variants and each later model's first one (a later model's other variants get what
        is left), each with its minimum (`Bench.minimum`), in order, as long as they fit in what is left now
        (one that cannot fit anyway takes nothing)."""
        later = [
            (m, v)
            for m, v in phases[phases.index((model, variant)) + 1 :]
            if m == model or v == args.variants[0]
        ]

        def reserve() -> float:
            total, room = 0.0, bench.left()
            for m, v in later:
                need = bench.minimum(spec_of(m), v, first=m != model)
                if total + need <= room:
                    total += need
            return total

        return reserve

    try:
        for key in args.models:
            if key == "wan" and specs["wan"] is None:
                size, why = choose_wan_size(bench, args, args.variants)
                specs["wan"] = wan_spec(size)
                bench.notes.append(f"Wan size: {size} ({why}).")
            bench.run_model(spec_of(key), args.variants, lambda variant, key=key: reserve_for(key, variant))
    except KeyboardInterrupt:
        bench.notes.append("Interrupted (Ctrl-C): partial results.")
        bench.write(final=True)
        raise
    bench.write(final=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
