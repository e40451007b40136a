"""Two CPU ranks (gloo) under diffusers' Ulysses context parallelism: every rank decides like one process.

One 2-process job (`cp_worker.py`) runs every scenario; the tests read its results. The job has a hard
timeout: a hang fails the test instead of stalling CI. Meanwhile this process computes the single-process
references with the same code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from cp_worker import SCENARIOS, STEPS, THRESHOLD_SKEW, run_scenario

import cache_dit
from cache_dit.testing.cases import CASES

WORKER = Path(__file__).with_name("cp_worker.py")
TIMEOUT_S = 300  # generous for busy CI cores; a healthy run takes ~30 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def launch(out_dir: Path, script: Path, args: list[str], world: int = 2) -> list[subprocess.Popen]:
    """Start `world` ranks of `script` on CPU (gloo), each in its own process group (so a kill gets all)."""
    src = str(Path(cache_dit.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(world),
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    procs = []
    for rank in range(world):
        rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        log = open(out_dir / f"log{rank}.txt", "w")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), *args],
                env=rank_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def wait_all(procs: list[subprocess.Popen], out_dir: Path, deadline: float, what: str) -> None:
    """Wait for every rank until `deadline`; on timeout kill them all and FAIL (never hang)."""
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        logs = "\n".join(f"--- rank {r}:\n{_tail(out_dir / f'log{r}.txt')}" for r in range(len(procs)))
        pytest.fail(f"{what} did not finish within {TIMEOUT_S} s (a rank hung); killed.\n{logs}")
    failed = [r for r, p in enumerate(procs) if p.returncode != 0]
    if failed:
        logs = "\n".join(f"--- rank {r}:\n{_tail(out_dir / f'log{r}.txt')}" for r in failed)
        pytest.fail(f"{what}: ranks {failed} exited with an error.\n{logs}")


@pytest.fixture(scope="module")
def cp_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out_dir = tmp_path_factory.mktemp("cp")
    deadline = time.monotonic() + TIMEOUT_S
    procs = launch(out_dir, WORKER, [str(out_dir)])
    try:
        refs = {name: run_scenario(name, parallel=False) for name in SCENARIOS}  # while the ranks run
        uncached = {
            c: CASES[c].run(CASES[c].build(), steps=STEPS) for c in {v[0] for v in SCENARIOS.values()}
        }
    finally:
        wait_all(procs, out_dir, deadline, "the 2-rank context-parallel job")
    ranks = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]
    outputs = [{n: torch.load(out_dir / f"rank{r}_{n}.pt") for n in SCENARIOS} for r in range(2)]
    return {"ranks": ranks, "outputs": outputs, "refs": refs, "uncached": uncached}


def test_skewed_shards_take_one_decision(cp_run):
    r0, r1 = (r["sync"] for r in cp_run["ranks"])
    # alone, rank 0 (diff 0.01) would cache at threshold 0.3 and rank 1 (diff 1.0) would not
    assert r0["local"] == pytest.approx(0.01, rel=1e-5) and r1["local"] == pytest.approx(1.0)
    assert r0["local"] < THRESHOLD_SKEW < r1["local"]
    # reduced: (256 * 0.01 + 256 * 1.0) / 512 on both ranks, bit-identical, = one process on the whole tensor
    assert r0["synced"] == r1["synced"] == pytest.approx(0.505, rel=1e-6)
    assert r0["synced"] == pytest.approx(r0["single"], rel=1e-6)
    for key in (
        "via_runner_sync",
        "via_mesh",
    ):  # the runner's DecisionSync, with a ProcessGroup or a DeviceMesh
        assert r0[key] == r1[key] == r0["synced"]


def test_sync_keeps_the_zero_conventions(cp_run):
    for r in cp_run["ranks"]:
        assert r["sync"]["both_zero"] == 0.0
        assert r["sync"]["prev_zero"] == float(
            "inf"
        )  # previous zero on every rank, current not: never similar
        assert r["sync"]["one_rank_zero"] == 1.0  # rank 0's all-zero shard (0/0 alone) adds nothing


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_ranks_decide_like_one_process(cp_run, name):
    ref_info = cp_run["refs"][name][0]
    r0, r1 = (r["scenarios"][name] for r in cp_run["ranks"])
    assert r0["stats"] == r1["stats"] == ref_info["stats"]  # cached steps, pruned blocks, every block's calls
    for key in ("residual_diffs", "cfg_residual_diffs"):
        assert r0[key] == r1[key]  # the very same floats on both ranks
        assert r0[key].keys() == ref_info[key].keys()
        for step, value in ref_info[key].items():
            assert r0[key][step] == pytest.approx(value, rel=1e-4, abs=1e-7)
    # not vacuous: both outcomes occur after warmup (a cached/pruned step and a computed one)
    stats = ref_info["stats"]
    options = SCENARIOS[name][1]
    if (
        options.get("compute_steps") is not None
    ):  # a fixed schedule: exactly the steps it leaves out are cached
        assert stats["cached_steps"] == sorted(set(range(STEPS)) - set(options["compute_steps"]))
        return
    if options["cache_type"] == "DBCache":
        branches = [stats["cached_steps"]] + (
            [stats["cfg_cached_steps"]] if CASES[SCENARIOS[name][0]].separate_cfg else []
        )
        decided = [s in cached for cached in branches for s in range(1, STEPS)]
        assert stats["block_calls"]["4"] < stats["block_calls"]["5"]  # Bn_compute_blocks_ids: block 4 reused
    else:
        decided = [n > 0 for n in stats["pruned_blocks"][1:]]
    assert any(decided) and not all(decided)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_outputs_match_single_process(cp_run, name):
    ref_out = cp_run["refs"][name][1]
    uncached = cp_run["uncached"][SCENARIOS[name][0]]
    for rank_outputs in cp_run["outputs"]:
        torch.testing.assert_close(rank_outputs[name]["cached"], ref_out, rtol=1e-4, atol=1e-5)
        # after disable_cache the parallel pipeline computes every step again
        torch.testing.assert_close(rank_outputs[name]["disabled"], uncached, rtol=1e-4, atol=1e-5)
    assert not torch.equal(ref_out, uncached)  # the cache did change the result (it skipped work)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_disable_keeps_parallelism_and_removes_the_cache(cp_run, name):
    """Either order: disable_cache leaves diffusers' split/gather hooks and no cache wrapper, silently."""
    plan = type(CASES[SCENARIOS[name][0]].build().transformer)._cp_plan
    for r in cp_run["ranks"]:
        info = r["scenarios"][name]
        assert info["cache_wrappers_left"] == 0 and info["disable_warnings"] == []
        hooks = [h for names in info["hook_names"] for h in names if h.startswith("cp_")]
        assert len(hooks) == len(plan)


def test_para_attn_is_refused_with_the_versions_named(cp_run):
    result = cp_run["ranks"][0]["para_attn"]
    if not result["installed"]:
        pytest.skip("para-attn is not installed (optional; see README: Context parallelism)")
    assert result["error"] is not None and "para-attn 0.3.38" in result["error"]
    assert "enable_parallelism" in result["error"] and not result["runner_left"]
    assert cp_run["ranks"][1]["para_attn"] == result
