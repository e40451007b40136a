"""bench/gpu_bench.py: the `--tiny` smoke run (the GPU run's code path on the CPU) and its parts.

The smoke run's timings are noise on a shared CPU and are not asserted; its structure is: every phase and mode,
the block-count bounds (exact: they follow from the schedules and the cache's stats), the host syncs per step,
and a RESULTS.md section that replaces its old self and leaves the other sections alone.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_bench.py"


def _load_bench():
    if "gpu_bench" not in sys.modules:  # tests/cache_factory/test_host_syncs.py loads it too
        spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["gpu_bench"]


gb = _load_bench()

MODES = ["none", "thr0", "fixed2x", "fixed2x-out", "fixed4x", "fixed4x-out", "F8B0", "DBPrune"]
HEADER = (
    "| mode | ms/step (min-max) | speedup | bound | realized/bound | cached steps | peak GiB | extra MiB "
    "| held MiB | syncs/step | rounds |"
)
OTHER = "<!-- other:start -->\n## Another bench\n\nkeep me | 1 | 2\n<!-- other:end -->"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("gpu_bench")
    results = tmp / "RESULTS.md"
    results.write_text(f"# Benchmark results\n\n{OTHER}\n\n{gb.START}\nold numbers\n{gb.END}\n\ntail line\n")
    out = tmp / "r.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(results), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), results.read_text(), proc


def test_tiny_run_writes_its_section_only(tiny_run) -> None:
    _, text, proc = tiny_run
    assert text.startswith(f"# Benchmark results\n\n{OTHER}\n\n{gb.START}\n## GPU timing: CPU (")
    assert text.endswith(f"{gb.END}\n\ntail line\n")
    assert text.count(gb.START) == 1 and text.count(gb.END) == 1 and "old numbers" not in text
    section = text.split(gb.START)[1].split(gb.END)[0]
    assert "(tiny smoke run)" in section and "IN PROGRESS" not in section
    assert section.count(HEADER) == 4  # FLUX and Wan, eager and regional
    for key in MODES:  # one row per mode and phase, each measured
        rows = [line for line in section.splitlines() if line.startswith(f"| {key}: ")]
        assert len(rows) == 4 and all("skipped" not in r and "error" not in r for r in rows), rows
    assert section in proc.stdout  # the final section is printed too


def test_tiny_run_phases_modes_and_exact_bounds(tiny_run) -> None:
    data, _, _ = tiny_run
    assert data["tiny"] is True and data["final"] is True
    assert [(p["model"], p["variant"]) for p in data["phases"]] == [
        ("flux", "eager"),
        ("flux", "regional"),
        ("wan", "eager"),
        ("wan", "regional"),
    ]
    for phase in data["phases"]:
        steps, blocks = phase["steps"], phase["blocks"]
        assert (steps, blocks) == (6, 12)
        assert (phase["compile_s"] is not None) == (phase["variant"] == "regional")
        modes = phase["modes"]
        assert list(modes) == MODES
        total = steps * blocks
        for key, m in modes.items():
            assert m["status"] == "ok", (key, m["status"])
            assert len(m["loop_s"]) == 2 and m["ms_per_step"] > 0 and m["speedup"] > 0
            assert m["total_blocks"] == total
        assert modes["none"]["bound"] == modes["thr0"]["bound"] == 1.0
        assert modes["thr0"]["cached_steps"] == []
        for interval in (2, 4):
            schedule = gb.uniform_schedule(steps, warmup_steps=1, interval=interval)
            for key in (f"fixed{interval}x", f"fixed{interval}x-out"):
                assert modes[key]["cached_steps"] == [s for s in range(steps) if s not in schedule]
                # Fn = Bn = 0: a cached step runs no block
                assert modes[key]["computed_blocks"] == len(schedule) * blocks
                assert modes[key]["bound"] == steps / len(schedule)  # 6 steps: 2.0 and 3.0
        assert modes["fixed2x"]["bound"] == 2.0 and modes["fixed4x"]["bound"] == 3.0
        f8 = modes["F8B0"]
        assert f8["cached_steps"] and min(f8["cached_steps"]) >= 2  # warmup 2
        assert f8["computed_blocks"] == total - len(f8["cached_steps"]) * (blocks - 8)
        assert f8["bound"] == total / f8["computed_blocks"]
        prune = modes["DBPrune"]
        assert 0 < total - prune["computed_blocks"] <= (steps - 2) * (blocks - 4)  # F2B2, warmup 2
        assert prune["bound"] == total / prune["computed_blocks"]


def test_tiny_run_host_syncs_per_step(tiny_run) -> None:
    """Counted in the eager phases (CPU: a TorchFunctionMode; not around compiled blocks)."""
    data, _, _ = tiny_run
    for phase in data["phases"]:
        modes = phase["modes"]
        if phase["variant"] == "regional":
            assert all(m["syncs"] is None for m in modes.values())
            continue
        steps = phase["steps"]
        assert all(m["calls"] == steps for m in modes.values())
        for key in ("none", "fixed2x", "fixed2x-out", "fixed4x", "fixed4x-out"):
            assert modes[key]["syncs"] == 0, (phase["model"], key, modes[key]["sync_sites"])
        # the threshold gate: one per step where the diff can change the decision, none at threshold 0 nor on
        # the warm-up steps 0 and 1
        assert modes["thr0"]["syncs"] == 0, modes["thr0"]["sync_sites"]
        assert modes["F8B0"]["max_syncs_per_call"] == 1 and modes["F8B0"]["syncs"] == steps - 2
        # DBPrune: one per prunable block (F2B2 of 12: 8) and step from warm-up step 2 on
        assert modes["DBPrune"]["syncs"] == 8 * (steps - 2)
        assert modes["DBPrune"]["max_syncs_per_call"] == 8


def test_cuda_without_a_gpu_fails_with_one_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(
        "gpu_bench: --device cuda, but no CUDA GPU"
    )
    assert proc.stdout == ""


def test_bad_options_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        gb.parse_args(["--tiny", "--models", "flux,sd3"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        gb.parse_args(["--tiny", "--modes", "F8B0"])  # no uncached loop to compare with
    assert exc.value.code == 2


def test_real_configs_build_on_meta_at_their_published_sizes() -> None:
    """FLUX.1-dev 11.9B, Wan 2.1 1.3B and 14B parameters; no memory is taken (meta)."""
    expected = {"flux": 11_901_408_320, "1.3b": 1_418_996_800, "14b": 14_288_491_584}
    for key, spec in (
        ("flux", gb.flux_spec(False)),
        ("1.3b", gb.wan_spec("1.3b")),
        ("14b", gb.wan_spec("14b")),
    ):
        model = gb.build_on_meta(spec)
        assert sum(p.numel() for p in model.parameters()) == expected[key]
        assert all(p.is_meta for p in model.parameters())
        assert all(not b.is_meta for b in model.buffers())  # Wan's rotary tables are real
    flux, wan = gb.flux_spec(False), gb.wan_spec("1.3b")
    assert (flux.tokens, flux.num_blocks, flux.steps) == (4096, 57, 28)
    assert (wan.tokens, wan.num_blocks, wan.steps) == (21 * 30 * 52, 30, 50)


def test_materialize_from_meta_matches_a_cpu_build() -> None:
    """to_empty + init: no meta tensor left, buffers equal to a CPU build's, dtypes as from_pretrained loads."""
    spec = gb.wan_spec("tiny")
    model = gb.materialize(gb.build_on_meta(spec), torch.device("cpu"), torch.bfloat16)
    reference = spec.cls(**spec.config)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    for (name, b), (ref_name, ref) in zip(model.named_buffers(), reference.named_buffers()):
        assert name == ref_name and torch.equal(b, ref)
    keep = set(spec.cls._keep_in_fp32_modules)
    for name, p in model.named_parameters():
        kept = bool(keep & set(name.split(".")))
        assert p.dtype == (torch.float32 if kept else torch.bfloat16), name
        if p.ndim >= 2:
            assert p.float().std() > 0
        elif name.endswith("bias"):
            assert torch.count_nonzero(p) == 0
        else:
            assert torch.all(p == 1)
    assert any(p.dtype == torch.float32 for p in model.parameters())


def test_flux_helpers_match_flux_pipeline() -> None:
    from diffusers import FluxPipeline

    ids = gb.flux_image_ids(3, 5, torch.device("cpu"), torch.float32)
    assert torch.equal(
        ids, FluxPipeline._prepare_latent_image_ids(1, 3, 5, torch.device("cpu"), torch.float32)
    )
    x = torch.randn(2, 4, 6, 10)
    assert torch.equal(gb.flux_pack(x), FluxPipeline._pack_latents(x, 2, 4, 6, 10))


def test_sync_counter_counts_host_reads_only() -> None:
    counter = gb.SyncCounter()
    t = torch.tensor([1.0, -2.0, 3.0])
    with counter.counting():
        s = t.sum()  # not counted: device ops
        t.abs().mean()
        t.to(t.device)
        s.item()
        bool(s > 0)
        float(s)
        int(s)
        t.tolist()
        t.cpu()
        t.nonzero()
        torch.equal(t, t)
        t[t > 0]
        torch.where(t > 0)
        f"{s:.1f}"
    with counter.counting():
        t * 2
    assert counter.per_call == [11, 0]
    assert counter.sites["item at tests/bench/test_gpu_bench.py:" + str(_line_of("s.item()"))] == 1
    with pytest.raises(ValueError, match="'function' or 'cuda'"):
        gb.SyncCounter("nvtx")


def _line_of(snippet: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.strip() == snippet)


def test_a_failing_mode_and_the_budget_leave_the_rest_measured(monkeypatch, tmp_path) -> None:
    """An OOM in one mode is recorded and the round goes on; once the budget is spent the remaining loops and
    the compiled variant are skipped (and say so), and the run still ends normally with its section."""
    calls: list[tuple[str, int]] = []
    real_measure = gb.Bench.measure

    def measure(self, driver, mode, result, rnd, count):
        calls.append((mode.key, rnd))
        if mode.key == "F8B0":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_measure(self, driver, mode, result, rnd, count)

    monkeypatch.setattr(gb.Bench, "measure", measure)
    monkeypatch.setattr(gb.Bench, "left", lambda self: 1e9 if len(calls) < 4 else 0.0)
    out, js = tmp_path / "RESULTS.md", tmp_path / "r.json"
    argv = ["--tiny", "--models", "flux", "--out", str(out), "--json", str(js)]
    assert gb.main(argv) == 0
    eager, regional = json.loads(js.read_text())["phases"]
    assert calls == [("none", 0), ("fixed2x", 0), ("F8B0", 0), ("fixed4x-out", 0)]
    status = {key: m["status"] for key, m in eager["modes"].items()}
    assert status.pop("F8B0") == "error: OutOfMemoryError: CUDA out of memory (simulated)"
    assert [status.pop(k) for k in ("none", "fixed2x", "fixed4x-out")] == ["ok"] * 3
    assert all(s.startswith("skipped: budget (~") for s in status.values()), status
    assert all(m["status"] == "skipped: budget" for m in regional["modes"].values())
    assert eager["modes"]["none"]["ms_per_step"] > 0 and eager["modes"]["fixed2x"]["speedup"] > 0
    text = out.read_text()
    assert "| F8B0: DBCache F8B0, threshold" in text and "| error: OutOfMemoryError" in text
    assert "Skipped: budget (compile + one uncached loop" in text


def test_no_budget_left_skips_the_model_without_building_it(tmp_path) -> None:
    js = tmp_path / "r.json"
    assert gb.main(["--tiny", "--models", "flux", "--budget-s", "1e-6", "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert data["phases"] == [] and data["notes"][0].startswith(
        "FLUX.1-dev architecture, tiny: skipped (budget"
    )


def test_planning_estimates() -> None:
    """The planner's share of block calls per mode and its minimum per phase, in closed form."""
    spec = gb.flux_spec(False)  # 28 steps, 57 blocks, warmup 8, DBPrune F8B8
    modes = gb.make_modes(spec, {"F8B0": 0.1, "DBPrune": 0.2})
    frac = {key: gb.expected_fraction(m, spec) for key, m in modes.items()}
    assert frac["none"] == frac["thr0"] == 1.0
    assert frac["fixed2x"] == frac["fixed2x-out"] == 14 / 28 and frac["fixed4x"] == 7 / 28
    assert frac["F8B0"] == pytest.approx(1 - 10 / 28 * 49 / 57)  # half of the 20 steps after warm-up
    assert frac["DBPrune"] == pytest.approx(1 - 10 / 28 * 41 / 57)
    assert modes["F8B0"].options["residual_diff_threshold"] == 0.1
    assert modes["DBPrune"].options == {
        "cache_type": "DBPrune",
        "Fn_compute_blocks": 8,
        "Bn_compute_blocks": 8,
        "residual_diff_threshold": 0.2,
        "warmup_steps": 8,
    }
    bench = gb.Bench(gb.parse_args([]), torch.device("cpu"))
    bench.rate = spec.flops_per_call() / 0.25  # FLUX at 0.25 s per step
    assert bench.step_estimate(spec) == pytest.approx(0.25)
    assert bench.minimum(spec, "eager", first=True) == pytest.approx(5 + 20 * 0.25 + 1.5 * 28 * 0.25)
    assert bench.minimum(spec, "regional", first=False) == pytest.approx(60 + 1.5 * 28 * 0.25)


def test_default_budget_plan_on_h100_like_timings(monkeypatch, tmp_path) -> None:
    """The planner against a timing model on a fake clock (nothing is computed): FLUX.1-dev 0.22 s per step
    eager, 0.18 compiled; Wan 2.1 1.3B 0.65 s eager, 0.55 compiled; a compile takes 45 s; a build 5 s. The
    default budget measures FLUX's eager and regional variants fully (2 rounds of every mode), then Wan's eager
    uncached, fixed-2x, F8B0 and fixed-4x output loops once, and ends within the budget."""
    clock = [0.0]
    step = {
        ("flux", "eager"): 0.22,
        ("flux", "regional"): 0.18,
        ("wan", "eager"): 0.65,
        ("wan", "regional"): 0.55,
    }
    ran: list[tuple[str, str, str, int]] = []
    compiled: set[str] = set()

    def advance(seconds: float) -> float:
        clock[0] += seconds
        return seconds

    def scout(self, driver):
        spec = driver.spec
        elapsed = advance(self.scout_steps(spec) * step[(spec.key, "eager")])
        self.rate = self.rate or spec.flops_per_call() * self.scout_steps(spec) / elapsed
        return {
            "F8B0": 0.1,
            "DBPrune": 0.1,
            "F8B0_served": 0.5,
            "DBPrune_served": 0.5,
            "step_s": elapsed / 20,
        }

    def compile_(self, driver):
        compiled.add(driver.spec.key)
        return advance(45.0)

    def measure(self, driver, mode, result, rnd, count):
        spec = driver.spec
        variant = "regional" if spec.key in compiled else "eager"
        result.loop_s[rnd] = advance(
            spec.steps * step[(spec.key, variant)] * gb.expected_fraction(mode, spec)
        )
        result.status = "ok"
        ran.append((spec.key, variant, mode.key, rnd))

    monkeypatch.setattr(gb, "now", lambda: clock[0])
    monkeypatch.setattr(gb, "build_on_meta", lambda spec: torch.nn.Linear(1, 1))
    monkeypatch.setattr(gb, "materialize", lambda model, *a, **k: (advance(5.0), model)[1])
    monkeypatch.setattr(gb.Bench, "scout", scout)
    monkeypatch.setattr(gb.Bench, "compile", compile_)
    monkeypatch.setattr(gb.Bench, "measure", measure)
    js = tmp_path / "r.json"
    assert gb.main(["--device", "cpu", "--out", str(tmp_path / "R.md"), "--json", str(js)]) == 0
    assert clock[0] <= 270.0  # the default budget
    flux = {(v, m, r) for k, v, m, r in ran if k == "flux"}
    assert flux == {(v, m, r) for v in ("eager", "regional") for m in MODES for r in (0, 1)}
    assert [(m, r) for k, v, m, r in ran if k == "wan"] == [
        ("none", 0),
        ("fixed2x", 0),
        ("F8B0", 0),
        ("fixed4x-out", 0),
    ]
    data = json.loads(js.read_text())
    assert [(p["model"], p["variant"]) for p in data["phases"]] == [
        ("flux", "eager"),
        ("flux", "regional"),
        ("wan", "eager"),
        ("wan", "regional"),
    ]
    assert data["notes"][0].startswith("Wan size: 1.3b (auto: 14B shape skipped (")
    assert all(m["status"] == "skipped: budget" for m in data["phases"][3]["modes"].values())


def test_thresholds_replay_the_gate_on_recorded_diffs() -> None:
    """A stream that drifts 0.1 per step: at 0.15 every step right after a computed one is served (half)."""
    drift = [[0.1 * (j - i) if j > i else 0.0 for j in range(6)] for i in range(6)]
    assert gb.replay_gate(drift, warmup=2, threshold=0.15) == (2, 4)  # steps 2 and 4 served, 3 and 5 computed
    assert gb.replay_gate(drift, warmup=2, threshold=0.25) == (3, 4)  # 2, 3 served against 1; 4 computed; 5
    assert gb.replay_gate(drift, warmup=2, threshold=0.1) == (0, 4)  # strictly below, as decision.is_similar
    assert gb.half_threshold([drift], warmup=2) == (pytest.approx(0.15), 0.5)
    # a flat stream (every step as far from every other): any threshold serves all or nothing
    flat = [[0.3 if j > i else 0.0 for j in range(6)] for i in range(6)]
    assert gb.half_threshold([flat], warmup=2) == (pytest.approx(0.45), 1.0)
    # two streams: 3 of 8 (at 0.25; above 0.3 the flat one serves all: 7 of 8)
    assert gb.half_threshold([flat, drift], warmup=2) == (pytest.approx(0.25), 0.375)
    assert gb.half_threshold([[[0.0]]], warmup=2) == (0.0, 0.0)  # nothing after warm-up
    table = gb.pairwise_relative_l1([torch.ones(3), 2 * torch.ones(3), torch.zeros(3)])
    assert table == [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
