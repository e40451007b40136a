"""Every Python block of README.md runs as written.

The blocks run in README order as one session (one namespace, like a notebook), in a fresh interpreter in a
temporary folder. A block whose first line has a comment containing `GPU` (it needs a GPU or real weights) is
skipped; say why in that comment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)

RUNNER = r"""
import json, sys, traceback
import torch
torch.set_num_threads(1)
blocks = json.loads(sys.stdin.read())
namespace = {"__name__": "__readme__"}
for line, source in blocks:
    print(f"--- README.md block at line {line}", flush=True)
    try:
        exec(compile("\n" * (line - 1) + source, "README.md", "exec"), namespace)  # README line numbers
    except BaseException:
        traceback.print_exc()
        print(f"README.md block at line {line} failed", file=sys.stderr)
        sys.exit(1)
"""


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(first line number of the code, code, skipped) for each ```python block."""
    blocks = []
    for match in FENCE.finditer(text):
        code = match.group(1)
        line = text.count("\n", 0, match.start(1)) + 1
        first = code.lstrip("\n").splitlines()[0].strip() if code.strip() else ""
        skipped = "#" in first and "GPU" in first.split("#", 1)[1]
        blocks.append((line, code, skipped))
    return blocks


def test_python_blocks_are_found_and_the_gpu_rule_is_exact():
    text = (
        "a\n```python\nx = 1\n```\n```bash\nls\n```\n"
        "```python\n# GPU: FLUX weights\ny = 2\n```\n```python\nz = 3  # GPU only\n```\n"
        "```python\nw = 4\n# GPU on a later line does not count\n```\n"
    )
    blocks = python_blocks(text)
    assert [(line, skipped) for line, _, skipped in blocks] == [
        (3, False),
        (9, True),
        (13, True),
        (16, False),
    ]
    assert blocks[0][1] == "x = 1\n" and blocks[3][1].startswith("w = 4")


def test_readme_python_blocks_run(tmp_path):
    blocks = python_blocks(README.read_text())
    runnable = [(line, code) for line, code, skipped in blocks if not skipped]
    assert len(runnable) >= 3, "the README should show runnable examples"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(runnable),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    ran = [line for line in result.stdout.splitlines() if line.startswith("--- README.md block")]
    assert len(ran) == len(runnable)
