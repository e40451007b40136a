"""RSS over many cached pipeline calls: the cache must not grow with the number of calls (issue 21).

Runs the tiny FLUX pipeline `--calls` times (default 400) with a rotating set of options, sizes, step counts
and CFG, re-applying the cache every 50 calls, and prints the RSS (psutil-free: /proc/self/statm) at the
start, after a warm-up of 50 calls, and at the end. Exits 1 when the growth after the warm-up exceeds
`--max-growth-mb` (default 20). Part of `make soak`.
"""

from __future__ import annotations

import argparse
import os
import warnings

import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe
from cache_dit.testing import tiny

OPTIONS = [
    dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.2, enable_taylorseer=True),
    dict(Fn_compute_blocks=1, Bn_compute_blocks=0, compute_steps=[0, 2]),
    dict(cache_type="DBPrune", Fn_compute_blocks=1, Bn_compute_blocks=1, residual_diff_threshold=0.2),
]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--max-growth-mb", type=float, default=20.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    pipe = tiny.tiny_flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    start, warm = rss_mb(), None
    for i in range(args.calls):
        if i % 50 == 0:
            apply_cache_on_pipe(pipe, **OPTIONS[(i // 50) % len(OPTIONS)])
        prompt, pooled = tiny.flux_prompt_embeds(batch=1 + i % 2, seq_len=8 + 4 * (i % 3))
        pipe(
            prompt_embeds=prompt,
            pooled_prompt_embeds=pooled,
            height=32 + 16 * (i % 2),
            width=32,
            num_inference_steps=3 + i % 3,
            output_type="latent",
        )
        if i == 49:
            warm = rss_mb()
    cache_dit.disable_cache(pipe)
    end = rss_mb()
    growth = end - warm
    print(f"RSS: start {start:.1f} MB, after 50 calls {warm:.1f} MB, after {args.calls} calls {end:.1f} MB")
    print(f"growth after warm-up: {growth:+.1f} MB (limit {args.max_growth_mb} MB)")
    return 0 if growth <= args.max_growth_mb else 1


if __name__ == "__main__":
    raise SystemExit(main())
