"""`cache-dit-generate` end to end on the tiny pipelines and transformer families (no weights), hub ids from the
local Hugging Face cache, its errors (one line, exit code 2), its timing protocol and its start-up time."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import cache_dit
from cache_dit.cli_common import TINY_DEFAULTS
from cache_dit.generate import build_cli_parser, main, tiny_names
from cache_dit.metrics import compute_psnr, compute_ssim
from cache_dit.testing.cases import CASES
from cache_dit.testing.support_matrix import registered_classes

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY_FLUX = ["--tiny", "flux", "--quiet"]


def _run_main(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def test_help_is_fast_does_not_import_torch_and_states_each_default_once():
    code = (
        "import sys\nfrom cache_dit.generate import main\n"
        "main(['--help'])\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO TORCH")
    assert elapsed < 1.0, f"--help took {elapsed:.2f} s"
    text = " ".join(out.stdout.split())
    for flag in (
        "--model-path",
        "--tiny",
        "--compare",
        "--max-continuous-cached-steps",
        "--calibrate",
        "--version",
    ):
        assert flag in text
    assert "(default: None)" not in text and "(default: False)" not in text
    # no flag's help says its default twice (argparse's ArgumentDefaultsHelpFormatter used to append a second)
    for action in build_cli_parser()._actions:
        assert (action.help or "").count("default:") <= 1, action.help


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cache-dit-generate (cache-dit {cache_dit.__version__})"


def test_tiny_flux_end_to_end_with_compare(tmp_path, capsys):
    """Block counts are exact: 6 blocks x 6 steps uncached; F1B1 runs 2 blocks on each of the 4 cached steps."""
    out = tmp_path / "flux.png"
    argv = ["--tiny", "flux", "--steps", "6", "--Fn", "1", "--Bn", "1", "--rdt", "0.5", "--warmup-steps", "2"]
    code, stdout, err = _run_main([*argv, "--compare", "--quiet", "--out", str(out)], capsys)
    assert code == 0 and err == []
    assert "[cond] steps: 6, cached: 4 [2, 3, 4, 5]" in stdout
    assert re.search(r"time: \d+\.\d\d s cached \(one run, after a warm-up\)", stdout)
    line = next(line for line in stdout.splitlines() if line.startswith("uncached:"))
    wall, blocks, psnr, ssim = re.search(
        r"speedup (\d+\.\d\d)x wall-clock, (\d\.\d\d)x blocks \(36 -> 20 block calls\); PSNR (\d+\.\d\d) dB; "
        r"SSIM (\d\.\d{4}) \(8-bit frames, before encoding\)",
        line,
    ).groups()
    assert blocks == "1.80" and float(wall) > 0
    reference = tmp_path / "flux_uncached.png"
    assert np.asarray(Image.open(out)).shape == (32, 32, 3)
    # the printed quality is cache_dit.metrics on the 8-bit frames; PNG is lossless, so the files agree
    assert float(psnr) == pytest.approx(compute_psnr(str(reference), str(out))[0], abs=0.006)
    assert float(ssim) == pytest.approx(compute_ssim(str(reference), str(out))[0], abs=6e-5)
    assert float(psnr) < 60  # 4 of 6 steps cached on a random model: the images really differ


def test_warm_up_first_then_uncached_and_cached_runs_interleave(tmp_path, capsys, monkeypatch):
    """The run order: one short uncached warm-up, then (uncached, cached) per repeat; the median is reported."""
    from cache_dit import generate
    from cache_dit.cache_factory.runner import get_runner

    calls = []
    make = generate.tiny_case_source

    def recording(*args, **kwargs):
        source = make(*args, **kwargs)
        inner = source.call

        def call(seed, steps):
            cached = get_runner(source.pipe.transformer) is not None
            calls.append(("cached" if cached else "uncached", steps))
            return inner(seed, steps)

        source.call = call
        return source

    monkeypatch.setattr(generate, "tiny_case_source", recording)
    argv = [
        *TINY_FLUX,
        "--steps",
        "4",
        "--compare",
        "--repeats",
        "2",
        "--rdt",
        "0.5",
        "--out",
        str(tmp_path / "a.png"),
    ]
    code, out, err = _run_main(argv, capsys)
    assert code == 0, err
    assert calls == [("uncached", 2), ("uncached", 4), ("cached", 4), ("uncached", 4), ("cached", 4)]
    assert "(median of 2, after a warm-up)" in out


def test_tiny_defaults_apply_and_flags_win(tmp_path, capsys):
    code, out, _ = _run_main([*TINY_FLUX, "--rdt", "100", "--out", str(tmp_path / "a.png")], capsys)
    assert code == 0
    steps, fn, bn, warmup = (TINY_DEFAULTS[k] for k in ("steps", "Fn", "Bn", "warmup_steps"))
    assert f"{steps} steps; cache_type=DBCache, Fn_compute_blocks={fn}, Bn_compute_blocks={bn}" in out
    assert f"warmup_steps={warmup}" in out and f"cached: {steps - warmup} " in out
    code, out, _ = _run_main(
        [*TINY_FLUX, "--steps", "4", "--Fn", "2", "--out", str(tmp_path / "b.png")], capsys
    )
    assert code == 0 and "4 steps; cache_type=DBCache, Fn_compute_blocks=2, Bn_compute_blocks=1" in out
    code, out, _ = _run_main(
        [*TINY_FLUX, "--steps", "4", "--cache", "fb", "--out", str(tmp_path / "c.png")], capsys
    )
    assert code == 0  # FBCache keeps its F1B0; the tiny warmup applies
    assert (
        "cache_type=FBCache, Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.08, warmup_steps=2"
        in out
    )


def test_options_that_cache_nothing_warn_once_before_the_run(tmp_path, capsys):
    argv = [*TINY_FLUX, "--steps", "4", "--warmup-steps", "4", "--compare", "--out", str(tmp_path / "a.png")]
    code, out, err = _run_main(argv, capsys)
    assert code == 0
    assert err == [
        "cache-dit-generate: warning: these options cache no step of 4: warmup_steps=4 >= the 4 steps "
        "(lower --warmup-steps)"
    ]
    assert "speedup" in out and "1.00x blocks (24 -> 24 block calls); PSNR inf dB" in out


def test_a_threshold_below_every_diff_is_explained(tmp_path, capsys):
    code, out, err = _run_main([*TINY_FLUX, "--steps", "4", "--out", str(tmp_path / "a.png")], capsys)
    assert code == 0 and err == []
    stats_diffs = re.search(r"\[cond\] residual diffs: \{1: [\d.]+, 2: ([\d.]+), 3: ([\d.]+)\}", out).groups()
    assert (
        f"note: no step was cached: every residual diff after the warmup (min {min(stats_diffs)}) stayed above "
        "residual_diff_threshold=0.12; raise --rdt to cache more"
    ) in out


def test_tiny_wan_writes_a_video(tmp_path, capsys):
    out = tmp_path / "wan.mp4"
    argv = ["--tiny", "wan", "--steps", "4", "--rdt", "0.5", "--quiet", "--out", str(out)]
    code, stdout, _ = _run_main(argv, capsys)
    assert code == 0
    assert "[cond] steps: 4, cached: 2 [2, 3]" in stdout and "[uncond] steps: 4, cached: 2 [2, 3]" in stdout
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 5  # the tiny Wan case makes 5 frames


def test_bfloat16_on_the_cpu_runs_the_tiny_pipeline(tmp_path, capsys):
    code, out, err = _run_main(
        [*TINY_FLUX, "--steps", "2", "--dtype", "bfloat16", "--out", str(tmp_path / "a.png")], capsys
    )
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "a.png")).shape == (32, 32, 3)


def test_default_output_goes_under_outputs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run_main([*TINY_FLUX, "--steps", "2"], capsys)
    assert code == 0 and out.strip().endswith("wrote outputs/flux.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["flux.png"]


def test_tiny_list_shows_every_pipeline_and_every_family(capsys):
    assert main(["--tiny", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines if line.startswith("  ")]
    families = [name for name, reason in registered_classes().items() if reason is None]
    assert listed == [*CASES, *families]
    assert len(families) >= 60 and tiny_names() == (list(CASES), families)


def test_every_contract_family_generates_from_the_cli(tmp_path, capsys):
    """--tiny NAME for every transformer family the contract suite builds: 3 steps, forced caching caches steps
    1 and 2, and the last output is written as .npy (bit-equal to the same run on a fresh build)."""
    _, families = tiny_names()
    for name in families:
        out = tmp_path / f"{name}.npy"
        argv = ["--tiny", name.lower(), "--steps", "3", "--Fn", "1", "--Bn", "0", "--warmup-steps", "1",
                "--rdt", "100", "--quiet", "--out", str(out)]  # fmt: skip
        code, stdout, err = _run_main(argv, capsys)
        assert code == 0, (name, err)
        assert f"tiny {name} (bare transformer, random weights), {name}, 3 steps" in stdout, name
        assert "[cond] steps: 3, cached: 2 [1, 2]" in stdout, (name, stdout)
        assert np.isfinite(np.load(out)).all(), name


def test_a_family_compares_with_its_uncached_output(tmp_path, capsys):
    out = tmp_path / "sd3.npy"
    argv = ["--tiny", "SD3Transformer2DModel", "--steps", "3", "--warmup-steps", "1", "--rdt", "100", "--compare",
            "--quiet", "--out", str(out)]  # fmt: skip
    code, stdout, _ = _run_main(argv, capsys)
    assert code == 0
    cached, uncached = np.load(out), np.load(tmp_path / "sd3_uncached.npy")
    rel = float(np.abs(cached - uncached).mean() / np.abs(uncached).mean())
    assert rel > 0
    assert f"relative L1 {rel:.4g} (last step's output)" in stdout
    assert re.search(r"x wall-clock, \d\.\d\dx blocks \((\d+) -> (\d+) block calls\)", stdout)


def test_progress_bars_show_on_a_terminal_only(tmp_path, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    argv = ["--tiny", "flux", "--steps", "3", "--out", str(tmp_path / "a.png")]
    assert main(argv) == 0  # stderr is pytest's capture: not a terminal
    assert capsys.readouterr().err == ""
    for quiet, shown in (([], True), (["--quiet"], False)):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert main([*argv, *quiet]) == 0
        monkeypatch.undo()
        text = terminal.getvalue()
        # the run bar (warm-up + 1 timed run) and the pipeline's step bar (cleared when done)
        assert ("cache-dit-generate: 100%" in text and "2/2 [" in text and "0/3 [" in text) is shown, text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tiny", "flux", "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
        (["--steps", "4"], "one of the arguments --model-path --tiny is required"),
        (["--tiny", "flux", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--tiny", "nope"], "--tiny 'nope' is not a tiny pipeline or transformer family"),
        (["--tiny", "fluxx"], "did you mean flux"),
        (
            ["--tiny", "LatteTransformer3DModel"],
            "--tiny LatteTransformer3DModel: cache-dit does not cache it: its",
        ),
        (["--tiny", "flux", "--cache", "turbo"], "cache_type='turbo' is not a known cache type"),
        (["--tiny", "flux", "--order", "1"], "--order needs --taylorseer"),
        (["--tiny", "flux", "--rdt", "-1"], "--rdt/--residual-diff-threshold: expected a finite number >= 0"),
        (["--tiny", "flux", "--Fn", "5", "--Bn", "5"], "5 + 5 = 10 exceeds the 6 transformer blocks"),
        (
            ["--tiny", "flux", "--max-continuous-cached-steps", "0"],
            "max_continuous_cached_steps must be >= 1",
        ),
        (
            ["--model-path", "/nonexistent/pipe", "--prompt", "x"],
            "--model-path /nonexistent/pipe: no such folder (and not a hub id of the form org/name)",
        ),
        (["--model-path", "/nonexistent/pipe"], "--model-path needs --prompt"),
        (["--tiny", "flux", "--prompt", "a cat"], "--prompt apply to --model-path only"),
        (["--tiny", "SD3Transformer2DModel", "--height", "64"], "--height apply to --model-path only"),
        (["--tiny", "flux", "--out", "x.bmp"], "--out x.bmp: this run makes an image; use .png or .jpg"),
        (["--tiny", "wan", "--out", "x.png"], "--out x.png: this run makes a video; use .mp4 or .gif"),
        (["--tiny", "flux", "--out", "/etc/passwd/x.png"], "--out /etc/passwd/x.png: /etc/passwd is a file"),
        (["--tiny", "flux", "--calibrate", "1"], "--calibrate: expected a finite speedup > 1, got 1"),
        (["--tiny", "flux", "--calibrate", "2", "--Fn", "1"], "--Fn: with --calibrate / --calibration-file"),
        (["--tiny", "flux", "--calibrate", "2", "--taylorseer"], "--taylorseer: with --calibrate"),
        (["--tiny", "flux", "--calibration-file", "/nonexistent/c.json"], "no such file (add --calibrate"),
        (
            ["--tiny", "flux", "--steps", "4", "--calibrate", "9"],
            "--calibrate 9.0: out of reach, --steps 4 give at most 4x",
        ),
        (["--tiny", "SD3Transformer2DModel", "--calibrate", "2"], "need a pipeline"),
        (["--tiny", "flux", "--dtype", "float16", "--device", "cpu"], "--dtype float16 on the CPU"),
        (["--tiny", "flux", "--device", "nonsense"], "--device 'nonsense'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("cache-dit-generate: error: ") and message in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_one_line(capsys, tmp_path):
    code, _, err = _run_main(["--tiny", "flux", "--device", "cuda", "--out", str(tmp_path / "a.png")], capsys)
    assert code == 2
    assert err == ["cache-dit-generate: error: --device cuda: CUDA is not available here (no GPU or driver); "
                   "use --device cpu"]  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux's /proc (read-only, even for root)")
def test_an_unwritable_out_fails_before_the_run(capsys):
    start = time.perf_counter()
    code, out, err = _run_main(["--tiny", "flux", "--out", "/proc/cache-dit/x.png"], capsys)
    assert code == 2 and out == ""  # nothing ran
    assert len(err) == 1 and err[0].startswith(
        "cache-dit-generate: error: --out /proc/cache-dit/x.png: not writable"
    )
    assert time.perf_counter() - start < 5


def _ddpm(folder: Path) -> None:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        norm_num_groups=1,
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(folder)


def test_unsupported_pipeline_exits_2(tmp_path, capsys):
    _ddpm(tmp_path / "ddpm")
    capsys.readouterr()  # what building it printed
    code, _, err = _run_main(
        ["--model-path", str(tmp_path / "ddpm"), "--prompt", "x", "--device", "cpu"], capsys
    )
    assert code == 2
    assert err == [
        "cache-dit-generate: error: unsupported pipeline DDPMPipeline: it has no `transformer` (a DiT) to cache"
    ]


def test_hub_ids_load_from_the_local_cache_and_offline_misses_are_one_line(tmp_path):
    """A hub id goes through diffusers' from_pretrained: with HF_HUB_OFFLINE=1 a cached repo loads (this one is a
    DDPM pipeline, which the CLI then rejects by name), an uncached one is one line."""
    commit = "0" * 40
    repo = tmp_path / "hf" / "hub" / "models--tiny-org--ddpm"
    _ddpm(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = textwrap.dedent(
        """
        import json, sys, contextlib, io
        from cache_dit.generate import main
        results = []
        for model in ("tiny-org/ddpm", "tiny-org/not-cached"):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(["--model-path", model, "--prompt", "x", "--device", "cpu"])
            results.append([code, err.getvalue().strip().splitlines()])
        print(json.dumps(results))
        """
    )
    env = {**ENV, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    cached, missing = json.loads(done.stdout.splitlines()[-1])
    assert cached == [
        2,
        [
            "cache-dit-generate: error: unsupported pipeline DDPMPipeline: it has no `transformer` (a DiT) to cache"
        ],
    ]
    assert missing == [
        2,
        [
            "cache-dit-generate: error: --model-path tiny-org/not-cached: not in the local Hugging Face cache, and "
            "HF_HUB_OFFLINE=1 forbids downloading it (unset HF_HUB_OFFLINE, or fetch it first: hf download "
            "tiny-org/not-cached)"
        ],
    ]


def test_calibrate_then_reuse_the_stored_options(tmp_path, capsys):
    """--calibrate runs budget mode on this run's inputs and stores the options; the file alone reuses them (no
    new calibration) and gives the same image."""
    store, first, second = tmp_path / "cal.json", tmp_path / "a.png", tmp_path / "b.png"
    argv = ["--tiny", "flux", "--steps", "8", "--quiet", "--calibration-file", str(store)]
    assert main([*argv, "--calibrate", "2", "--out", str(first)]) == 0
    out = capsys.readouterr().out
    (entry,) = json.loads(store.read_text()).values()
    steps = entry["options"]["compute_steps"]
    assert entry["speedup"] == 2.0 and len(steps) == 4
    assert f"compute_steps={steps}" in out and "residual_diff_threshold" not in out
    assert f"cached: 4 {sorted(set(range(8)) - set(steps))}" in out
    assert main([*argv, "--out", str(second)]) == 0
    out = capsys.readouterr().out
    assert f"calibrated options for 8 steps read from {store}" in out
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    assert main([*argv[:4], "--calibration-file", str(store), "--steps", "6", "--out", str(second)]) == 2
    assert "holds no calibration for" in capsys.readouterr().err


@pytest.mark.parametrize(
    "progress, terminal, shown",
    [(None, True, True), (None, False, False), (False, True, False), (True, False, True)],
)
def test_fid_progress_bar_over_many_images(progress, terminal, shown, monkeypatch):
    """FID over many images shows a bar on a terminal (progress=None), always (True) or never (False)."""
    from cache_dit.metrics import FrechetInceptionDistance

    class Stderr(io.StringIO):
        def isatty(self):
            return terminal

    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    fid = FrechetInceptionDistance(
        device="cpu", dims=64, batch_size=2, weights_path="random", progress=progress
    )
    stderr = Stderr()
    monkeypatch.setattr(sys, "stderr", stderr)
    fid.image_statistics(images, warn=False)
    monkeypatch.undo()
    assert ("FID features:" in stderr.getvalue() and "0/5 [" in stderr.getvalue()) is shown, stderr.getvalue()
    with pytest.raises(TypeError, match="progress must be None, True or False, got 'yes'"):
        FrechetInceptionDistance(device="cpu", dims=64, weights_path="random", progress="yes")


# ----------------------------------------------------------------------------------------------------------
# README: the cache-dit-generate section and the figures it quotes
# ----------------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_shows_a_hub_id_a_local_folder_and_tiny():
    section = _readme_section("`cache-dit-generate`")
    commands = re.findall(r"^cache-dit-generate (.*)$", section, flags=re.MULTILINE)
    assert any("--model-path black-forest-labs/FLUX.1-dev" in c for c in commands)
    assert any("--model-path ./" in c for c in commands)
    assert any(c.startswith("--tiny flux") for c in commands) and any(
        c.startswith("--tiny list") for c in commands
    )
    assert "# GPU + weights: a hub id" in section and "# GPU + weights: a local pipeline folder" in section
    assert "on the 8-bit frames, before the file" in section  # which PSNR generate reports
    # every flag of the parser is in the section's table (documented once, here)
    for action in build_cli_parser()._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long and action.help != "==SUPPRESS==" and long[0] != "--help":
            assert f"`{long[0]}" in section, long[0]


def test_readme_memory_figures_are_bench_results_figures():
    """The README quotes bench/RESULTS.md's measured bytes (one source: RESULTS.md, written by the bench)."""
    results = (ROOT / "bench" / "RESULTS.md").read_text()
    memory = re.search(
        r"^- Extra memory after a call .*?(?=^- )", _readme_section("Results"), re.M | re.S
    ).group(0)
    memory = " ".join(memory.split())

    def fixed(label: str) -> str:  # the fixed-settings memory table: "| label | a - b |"
        return re.search(rf"^\| {re.escape(label)} \| ([\d.]+) - \1 \|$", results, re.M).group(1)

    expected = {
        "DBCache": fixed("DBCache F2B1"),
        "+ TaylorSeer(1)": fixed("DBCache F1B0 + TaylorSeer(1)"),
        "+ TaylorSeer(2)": fixed("DBCache F1B0 + TaylorSeer(2)"),
        "DBPrune": fixed("DBPrune F1B1"),
        # the Fn=0 fixed-schedule and output-forecast figures came from the tuned table, whose re-run kept no such
        # rows: the README marks them as from the earlier run until that table is measured again
    }
    for label, value in expected.items():
        assert f"{label} {value} MB" in memory, (label, value, memory)
    ratio = re.search(r"DBPrune [\d.]+ MB \(([\d.]+)x", memory).group(1)
    assert float(ratio) == round(float(expected["DBPrune"]) / float(expected["DBCache"]), 1)


def test_readme_results_cite_the_fixed_settings_section_beside_the_tuned_one():
    results_md = (ROOT / "bench" / "RESULTS.md").read_text()
    section = " ".join(_readme_section("Results").split())
    title = "Target: our best vs the best peer at equal wall-clock speedup"
    assert f"## {title}" in results_md and f'"{title}"' in section
    for speedup, spoken in (("1.5x", "1.5x"), ("2.0x", "2x")):
        row = re.search(rf"^\| {speedup} \| ([\d.]+) dB \(.*?\) \| ([\d.]+) dB \(", results_md, re.M)
        ours, peer = row.groups()
        assert f"{ours} dB against" in section and f"'s {peer} at {spoken}" in section
    assert section.index(title) < section.index("Tuned comparison")
