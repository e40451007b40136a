"""`torchrun --nproc_per_node=2 examples/parallel_cache.py --tiny` runs on CPU and caches like one process."""

from __future__ import annotations

import ast
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cache_dit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "parallel_cache.py"
TIMEOUT_S = 300


def _load_example():
    spec = importlib.util.spec_from_file_location("parallel_cache_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_tiny_on_two_cpu_ranks(tmp_path):
    src = str(Path(cache_dit.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([*cmd, str(EXAMPLE), "--tiny"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            # meanwhile, the same configuration in this one process
            example = _load_example()
            pipe, call = example.tiny_pipe_and_call()
            cache_dit.apply_cache_on_pipe(pipe, **example.TINY_OPTIONS)
            call(example.TINY_STEPS)
            single = cache_dit.summary(pipe).cached_steps
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(
                f"the example did not finish within {TIMEOUT_S} s (hang); killed\n{log.read_text()[-3000:]}"
            )
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in text.splitlines() if ": " in line}
    assert "cached steps per rank" in lines, text[-3000:]
    per_rank = ast.literal_eval(lines["cached steps per rank"])
    assert lines["ranks agree"] == "True" and per_rank[0] == per_rank[1], text[-3000:]
    # every rank cached exactly the steps one process caches (and some, not all)
    assert per_rank[0] == single, (single, text[-3000:])
    assert 0 < len(single) < example.TINY_STEPS - 1
