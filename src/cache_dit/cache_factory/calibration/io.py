"""The calibration file: JSON keyed by "<denoiser classes>@<steps>", each entry `{"options": {...}, ...}`.

Every read checks the file's structure and raises a ValueError naming the file and what is wrong;
`check_save_path` runs the same checks (and that the folder exists) before calibrate spends any run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..apply import _denoisers_of


class CalibratedOptions(dict):
    """The options dict `calibrate` returns (pass it as `apply_cache_on_pipe(pipe, **options)`), with what the
    calibration measured: `speedup` (block count), `psnr` (dB, on the pipeline's float output: the mean over every
    sample of every calibration input), `psnrs` (per input, the mean over its samples), `psnr_worst` (the worst
    sample), `cross_fitted_psnr` (with several inputs, where the pick is a schedule fitted to the inputs: the mean
    PSNR of the same fit made without each input, on that input; else None), `loo_psnr` (leave-one-out estimate
    for unseen samples; None with one sample), `loo_psnrs` (per sample left out), `inputs` (how many), `num_inference_steps`, `model` (transformer classes), `runs` (pipeline
    runs spent) and `table` (the rows printed: every verified candidate, with its PSNRs per input and sample)."""

    speedup: float
    psnr: float
    psnrs: list[float]
    psnr_worst: float
    cross_fitted_psnr: float | None
    loo_psnr: float | None
    loo_psnrs: list[float] | None
    inputs: int
    num_inference_steps: int
    model: str
    runs: int
    table: list[dict[str, Any]]


def model_name(denoisers: Mapping[str, Any]) -> str:
    """The denoisers' classes ("module.Class", joined by "+" for several, e.g. Wan 2.2's two)."""
    return "+".join(f"{type(m).__module__}.{type(m).__qualname__}" for m in denoisers.values())


def _key(model: str, num_steps: int) -> str:
    return f"{model}@{num_steps}"


def read_calibration_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file's entries, after checking its structure: a JSON object whose every value is an object with an
    "options" object (what `save_calibration` writes; older files with fewer fields load too)."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a calibration file: it is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} is not a calibration file: the top level is a {type(data).__name__}, expected an object "
            "keyed by '<transformer class>@<steps>'"
        )
    for key, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("options"), dict):
            what = "has no 'options' object" if isinstance(entry, dict) else f"is a {type(entry).__name__}"
            raise ValueError(
                f'{path} is not a calibration file: entry {key!r} {what}, expected {{"options": {{...}}, ...}}'
            )
    return data


def check_save_path(path: Any) -> Path:
    """`save_to` checked before any run: a path whose folder exists, and where a file is there already, a
    calibration file (it is merged into, so it must be readable as one)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save_to must be a path (str or os.PathLike), got {type(path).__name__}: {path!r}")
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"save_to={str(path)!r}: the folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"save_to={str(path)!r} is a folder; give a JSON file's path")
    if path.exists():
        try:
            read_calibration_file(path)
        except OSError as error:
            raise ValueError(f"save_to={str(path)!r}: cannot read it: {error}") from None
        except ValueError as error:
            raise ValueError(f"save_to: {error}; move it or choose another file") from None
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise ValueError(f"save_to={str(path)!r}: not writable")
    return path


def save_calibration(path: str | os.PathLike[str], result: CalibratedOptions) -> Path:
    """Store `result` in the JSON file at `path` under "<transformer class>@<steps>" (other entries are kept)."""
    path = Path(path)
    data = read_calibration_file(path) if path.exists() else {}
    entry: dict[str, Any] = {
        "options": dict(result),
        "speedup": result.speedup,
        "psnr": result.psnr,
        "runs": result.runs,
    }
    for name in ("psnrs", "psnr_worst", "loo_psnr", "loo_psnrs", "inputs"):
        if hasattr(result, name):
            entry[name] = getattr(result, name)
    data[_key(result.model, result.num_inference_steps)] = entry
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def load_calibration(path: str | os.PathLike[str], pipe: Any, num_inference_steps: int) -> dict[str, Any]:
    """The options `calibrate(..., save_to=path)` stored for this pipeline's transformer class and step count.
    Raises ValueError (naming the file) when it is not a calibration file or holds none for them."""
    data = read_calibration_file(path)
    key = _key(model_name(_denoisers_of(pipe)), num_inference_steps)
    if key not in data:
        raise ValueError(
            f"{path} holds no calibration for {key}; it holds: {', '.join(sorted(data)) or 'nothing'}"
        )
    return dict(data[key]["options"])
