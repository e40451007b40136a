"""The calibration inputs and how a candidate is judged on them.

`Inputs` runs the pipeline on each input with the same noise every time (and leaves the caller's generators as
they were); `sample_psnrs` scores each sample of a run against the input's recorded uncached run on the pipeline's
float output; `pick_robust` is the selection rule over those scores and `leave_one_out` its estimate for samples it
did not see.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio

MAX_PSNR = 100.0  # identical outputs count as this many dB


GUARD_TRIM = 0.1  # the share of the lowest samples the guard sets aside (rounded down: none below 10 samples)


def guard_sample(row: Sequence[float]) -> float:
    """The sample score the rule's guard looks at: the worst sample, or from 10 samples on the lowest after setting
    aside the worst 10 % (rounded down). One sample that nearly every candidate ruins (an image whose content
    flips under any cache, as happens on multimodal flows) otherwise decides the pick alone."""
    return sorted(row)[int(len(row) * GUARD_TRIM)]


def pick_robust(scores: Sequence[Sequence[float]], worst_margin: float) -> int:
    """The selection rule: `scores[c][i]` is candidate c's PSNR on sample i. Among the candidates whose guard
    sample (`guard_sample`: the worst sample; from 10 samples on, the worst after setting aside the lowest 10 %)
    is within `worst_margin` dB of the best guard sample, the one with the best mean; ties go to the earlier
    candidate (the better predicted). With one sample this is the best score."""
    if not scores:
        raise ValueError("pick_robust needs at least one candidate")
    guard = [guard_sample(row) for row in scores]
    floor = max(guard) - worst_margin
    means = [float(np.mean(row)) for row in scores]
    return max((c for c in range(len(scores)) if guard[c] >= floor), key=lambda c: (means[c], -c))


def leave_one_out(scores: Sequence[Sequence[float]], worst_margin: float) -> list[float] | None:
    """For each sample i: the rule applied to the other samples' scores picks a candidate; its score on sample i.
    The mean of these estimates what the pick gives on a sample it was not chosen on (optimistic where the
    candidates' scores come from schedules fitted to every sample; calibrate cross-fits them over several inputs).
    None with fewer than 2 samples."""
    count = len(scores[0]) if scores else 0
    if count < 2:
        return None
    held_out = []
    for i in range(count):
        others = [[s for j, s in enumerate(row) if j != i] for row in scores]
        held_out.append(float(scores[pick_robust(others, worst_margin)][i]))
    return held_out


def output_array(out: Any) -> np.ndarray:
    """The pipeline's images/frames (or first output) as a float64 array, first axis = samples."""
    for name in ("images", "frames"):
        if hasattr(out, name):
            out = getattr(out, name)
            break
    else:
        out = out[0] if isinstance(out, (tuple, list)) else out
    if isinstance(out, torch.Tensor):
        return out.detach().float().cpu().numpy().astype(np.float64)
    if isinstance(out, list) and out and not isinstance(out[0], (np.ndarray, torch.Tensor)):
        out = [np.asarray(item) for item in out]  # PIL images (or lists of frames)
    if isinstance(out, list):
        out = np.stack([np.asarray(o.detach().cpu() if isinstance(o, torch.Tensor) else o) for o in out])
    return np.asarray(out).astype(np.float64)


def data_range(reference: np.ndarray) -> float:
    """The value range PSNR is taken over: 1 for images in [0, 1], 255 for 8-bit images, else (latents) the
    reference's own range."""
    low, high = float(reference.min()), float(reference.max())
    if low >= 0.0 and high <= 1.0:
        return 1.0
    if low >= 0.0 and high <= 255.0 and np.array_equal(reference, np.round(reference)):
        return 255.0
    return max(high - low, 1e-12)


def sample_psnrs(reference: np.ndarray, test: np.ndarray) -> list[float]:
    """PSNR (dB) of each sample (first axis) of `test` against `reference`, on the float values as they are (no
    8-bit rounding), identical samples counting as MAX_PSNR."""
    value_range = data_range(reference)
    with np.errstate(divide="ignore"):
        return [
            min(MAX_PSNR, float(peak_signal_noise_ratio(ref, out, data_range=value_range)))
            for ref, out in zip(reference, test)
        ]


def _float_output_kwargs(pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """An `output_type` the pipeline returns floats for: "np" in place of "pil" (or of no output_type, where the
    pipeline's call takes one), so scores are not rounded to 8 bits."""
    if kwargs.get("output_type", "pil") != "pil":
        return kwargs
    try:
        takes = "output_type" in inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        takes = False
    return {**kwargs, "output_type": "np"} if takes else kwargs


class Inputs:
    """The calibration inputs: input i runs with its own generator(s) rewound to their state at construction,
    or, without one, a generator seeded with `seed + i`; so every run of an input shares its noise.
    `restore()` leaves every caller's generator as it was. `progress` (a tqdm bar or None) counts the runs."""

    def __init__(self, pipe: Any, call_kwargs: Sequence[Mapping[str, Any]], seed: int) -> None:
        self.pipe = pipe
        self.count = 0
        self.progress: Any = None
        self.kwargs: list[dict[str, Any]] = []
        self.generators: list[list[torch.Generator]] = []
        self.is_list: list[bool] = []
        self.states: list[tuple[torch.Generator, torch.Tensor]] = []
        for i, given in enumerate(call_kwargs):
            kwargs = dict(given)
            generator = kwargs.pop("generator", None)
            gens = generator if isinstance(generator, list) else [generator] if generator is not None else []
            for g in gens:
                if not isinstance(g, torch.Generator):
                    where = "call_kwargs" if len(call_kwargs) == 1 else f"call_kwargs[{i}]"
                    raise TypeError(
                        f"{where}['generator'] must be a torch.Generator or a list of them, got {g!r}"
                    )
            self.kwargs.append(_float_output_kwargs(pipe, kwargs))
            self.generators.append(gens)
            self.is_list.append(isinstance(generator, list))
        self.seed = seed
        # each generator's state once, even where inputs share a generator object
        seen: dict[int, torch.Generator] = {id(g): g for gens in self.generators for g in gens}
        self.states = [(g, g.get_state()) for g in seen.values()]
        self.initial = {id(g): state for g, state in self.states}

    def __len__(self) -> int:
        return len(self.kwargs)

    def run(self, i: int) -> np.ndarray:
        """Input i's output as a float64 array."""
        self.count += 1
        gens = self.generators[i]
        if gens:
            for g in gens:
                g.set_state(self.initial[id(g)])
            generator: Any = gens if self.is_list[i] else gens[0]
        else:
            generator = torch.Generator().manual_seed(self.seed + i)
        out = output_array(self.pipe(**self.kwargs[i], generator=generator))
        if self.progress is not None:
            self.progress.update(1)
        return out

    def restore(self) -> None:
        for g, state in self.states:
            g.set_state(state)
