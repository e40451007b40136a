"""A cached pipeline under context parallelism: every rank shards the sequence and takes the same decisions.

    torchrun --nproc_per_node=2 examples/parallel_cache.py --tiny             # CPU (gloo), tiny FLUX, seconds
    torchrun --nproc_per_node=4 examples/parallel_cache.py --model-path black-forest-labs/FLUX.1-dev  # GPUs (nccl)

diffusers' Ulysses context parallelism (`transformer.enable_parallelism`) splits the sequence over the ranks;
the cache finds that group by itself and reduces each decision's statistics over it (one all-reduce of two
numbers per decision), so all ranks cache the same steps. The script runs uncached, then cached, and prints the
cached steps gathered from every rank, the speedup and the difference to the uncached image.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

import cache_dit
from cache_dit.cache_factory import build_config
from cache_dit.cli_common import UsageError, build_parser, cache_options
from cache_dit.parallel import enable_context_parallel

# FBCache-style DBCache on the tiny FLUX (2 dual + 4 single blocks): the decision after block 0, every step after
# the first may be cached. Importable, so that tests can run the same configuration in one process.
TINY_OPTIONS: dict[str, Any] = {
    "cache_type": "DBCache",
    "Fn_compute_blocks": 1,
    "Bn_compute_blocks": 0,
    "residual_diff_threshold": 0.3,
    "warmup_steps": 1,
}
TINY_STEPS = 8


def tiny_pipe_and_call(seed: int = 0) -> tuple[Any, Any]:
    from cache_dit.testing.tiny import flux_prompt_embeds, tiny_flux_pipeline

    pipe = tiny_flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    embeds, pooled = flux_prompt_embeds()

    def call(steps: int) -> torch.Tensor:
        return pipe(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            height=32,
            width=32,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images

    return pipe, call


def real_pipe_and_call(model: str, prompt: str, device: torch.device, seed: int = 0) -> tuple[Any, Any]:
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(model, torch_dtype=torch.bfloat16).to(device)
    pipe.set_progress_bar_config(disable=dist.get_rank() != 0)

    def call(steps: int) -> torch.Tensor:
        return pipe(
            prompt,
            num_inference_steps=steps,
            generator=torch.Generator("cpu").manual_seed(seed),  # same noise on every rank
            output_type="pt",
        ).images

    return pipe, call


ONLY = {  # the shared flags this script uses (the others: see cache-dit-generate)
    "model_path", "tiny", "prompt", "steps", "seed", "cache", "Fn", "Bn", "rdt", "warmup_steps",
    "max_cached_steps", "max_continuous_cached_steps", "taylorseer", "order",
}  # fmt: skip
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser(
        "parallel_cache.py",
        "A cached FLUX pipeline under context parallelism (run it under torchrun).",
        default_model="black-forest-labs/FLUX.1-dev",
        tiny_cases=("flux",),
        only=ONLY,
    )
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    """The cache options: TINY_OPTIONS (--tiny) or DBCache's defaults, with the cache flags given on top."""
    base = dict(TINY_OPTIONS) if args.tiny else {"cache_type": "DBCache"}
    flags = cache_options(args)
    if args.cache is None:
        flags.pop("cache_type")
    return {**base, **flags}


def main() -> None:
    args = parse_args()
    missing = [name for name in TORCHRUN_VARS if name not in os.environ]
    if missing:
        print(
            f"parallel_cache.py: error: run it under torchrun (no {', '.join(missing)} in the environment), "
            "e.g. torchrun --nproc_per_node=2 examples/parallel_cache.py --tiny",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        options = options_from(args)
        build_config(**options)
    except (UsageError, TypeError, ValueError) as error:
        print(f"parallel_cache.py: error: {error}", file=sys.stderr)
        sys.exit(2)

    use_cuda = torch.cuda.is_available() and not args.tiny
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
        device = torch.device("cpu")

    if args.tiny:
        pipe, call = tiny_pipe_and_call(args.seed)
        steps = args.steps or TINY_STEPS
    else:
        prompt = args.prompt or "A cat holding a sign that says hello world"
        pipe, call = real_pipe_and_call(args.model_path, prompt, device, args.seed)
        steps = args.steps or 28

    enable_context_parallel(pipe.transformer, ulysses_degree=world)  # shard the sequence over all ranks

    def timed() -> tuple[torch.Tensor, float]:
        dist.barrier()
        start = time.perf_counter()
        out = call(steps)
        dist.barrier()
        return out, time.perf_counter() - start

    uncached, base_time = timed()
    cache_dit.apply_cache_on_pipe(pipe, **options)  # finds the context-parallel group by itself
    cached, cached_time = timed()
    stats = cache_dit.summary(pipe)

    per_rank: list[Any] = [None] * world
    dist.all_gather_object(per_rank, stats.cached_steps)
    diff = (cached.float() - uncached.float()).abs().max().item()
    if rank == 0:
        print(stats)
        print(f"cached steps per rank: {per_rank}", flush=True)
        print(f"ranks agree: {all(s == per_rank[0] for s in per_rank)}", flush=True)
        print(
            f"uncached {base_time:.3f}s, cached {cached_time:.3f}s ({base_time / cached_time:.2f}x) on "
            f"{world} ranks; max |cached - uncached| = {diff:.4f}"
        )
    dist.barrier()  # both ranks tear gloo down together (one leaving early can abort the other at exit)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Leave without the interpreter's teardown: gloo's background threads can still be joinable then, and their
    # C++ destructors abort the process ("terminate called without an active exception") after the work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
