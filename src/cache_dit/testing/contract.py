"""The cache contract, checked on one transformer family of the zoo (`families.FAMILIES`) at a time.

`check_family(family)` runs a few denoising steps of the tiny model, uncached and cached, directly on the
transformer (the `apply_cache_on_transformer` path; no pipeline), and returns one verdict per capability:
"yes", or "no: why". The test suite asserts the verdicts and `support_matrix` renders them for the README, so
the matrix always says what was measured.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import torch

import cache_dit
from cache_dit.cache_factory import apply_cache_on_transformer
from cache_dit.cache_factory.policies.output import first_tensor as _first_tensor
from cache_dit.cache_factory.runner import get_runner

from .families import Family

STEPS = 3
CAPABILITIES = ("FBCache", "DBCache", "DBPrune", "TaylorSeer", "CFG")
REPLAY_TOLERANCE = 1e-4  # relative to the output's largest magnitude


@torch.no_grad()
def _run(model: torch.nn.Module, family: Family, steps: int = STEPS, branches: tuple[str, ...] = ()) -> list:
    """Outputs of `steps` denoising steps (inputs of the family's trajectory), each branch marked if asked."""
    outs = []
    prepared = family.prepare(model, seed=0)  # e.g. a kv "extract" pass: not a denoising step
    for step in range(steps):
        inputs = {**family.inputs(seed=0, step=step), **prepared}
        for name in branches or (None,):
            with model.cache_context(name) if name is not None else contextlib.nullcontext():
                outs.append(_first_tensor(model(**inputs)).clone())
    return outs


class _Loop:
    """A minimal pipeline around a bare model: unmarked CFG, two calls per step (cond, then uncond)."""

    def __init__(self, model: torch.nn.Module, family: Family) -> None:
        self.transformer, self.family = model, family

    def __call__(self) -> list:
        outs = []
        prepared = self.family.prepare(self.transformer, seed=0)
        with torch.no_grad():
            for step in range(STEPS):
                inputs = {**self.family.inputs(seed=0, step=step), **prepared}
                outs += [_first_tensor(self.transformer(**inputs)) for _ in range(2)]
        return outs


def _split(num_blocks: int) -> dict[str, int]:
    """F1B1 where the model has room for a middle, else F1B0."""
    return {"Fn_compute_blocks": 1, "Bn_compute_blocks": 1 if num_blocks >= 3 else 0}


def _forced(num_blocks: int, **extra: Any) -> dict[str, Any]:
    return {
        "cache_type": "DBCache",
        **_split(num_blocks),
        "residual_diff_threshold": 100.0,
        "warmup_steps": 1,
        "do_separate_classifier_free_guidance": False,  # a bare loop: one call per step
        **extra,
    }


def _check(verdicts: dict[str, str], key: str, fn: Callable[[], str | None]) -> None:
    try:
        problem = fn()
    except Exception as error:  # a verdict, not a crash: the matrix says what failed
        problem = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    verdicts[key] = "yes" if problem is None else f"no: {problem}"


def check_family(family: Family) -> dict[str, str]:
    """Verdict per capability (and the contract's parts: exact, replay, disable) for one zoo family."""
    warnings.simplefilter("ignore")
    model = family.build(seed=0)
    ref = _run(model, family)
    verdicts: dict[str, str] = {}
    info: dict[str, Any] = {}

    def exact() -> str | None:
        apply_cache_on_transformer(model, **_forced(1, residual_diff_threshold=0.0))
        runner = get_runner(model)
        info["num_blocks"] = runner.num_blocks
        if not all(torch.equal(a, b) for a, b in zip(_run(model, family), ref)):
            return "threshold 0 is not bit-exact"
        return None

    def dbcache() -> str | None:
        apply_cache_on_transformer(model, **_forced(info["num_blocks"]), validate=True)
        outs = _run(model, family)
        runner, stats = get_runner(model), cache_dit.summary(model)
        diff = runner.last_validation_diff
        scale = float(ref[0].abs().max())
        if diff is None or diff > REPLAY_TOLERANCE * scale:
            return f"identical-input replay differs by {diff} (scale {scale:.3g})"
        if stats.cached_steps != list(range(1, STEPS)):
            return f"forced caching cached {stats.cached_steps}, expected {list(range(1, STEPS))}"
        if torch.equal(outs[-1], ref[-1]) or not torch.isfinite(outs[-1]).all():
            return "a cached step did not change the output, or made it non-finite"
        return None

    def fbcache() -> str | None:
        apply_cache_on_transformer(
            model,
            cache_type="FBCache",
            residual_diff_threshold=100.0,
            warmup_steps=1,
            do_separate_classifier_free_guidance=False,
        )
        outs = _run(model, family)
        if (
            cache_dit.summary(model).cached_steps != list(range(1, STEPS))
            or not torch.isfinite(outs[-1]).all()
        ):
            return f"cached steps {cache_dit.summary(model).cached_steps}"
        return None

    def dbprune() -> str | None:
        options = {**_forced(info["num_blocks"]), "cache_type": "DBPrune"}
        apply_cache_on_transformer(model, **options)
        outs = _run(model, family)
        stats = cache_dit.summary(model)
        if not stats.pruned_steps or not torch.isfinite(outs[-1]).all():
            return f"pruned {stats.pruned_blocks} blocks per step"
        return None

    def taylorseer() -> str | None:
        options = _forced(info["num_blocks"], enable_taylorseer=True, taylorseer_kwargs={"n_derivatives": 1})
        apply_cache_on_transformer(model, **options)
        outs = _run(model, family, steps=STEPS + 1)  # two computed steps, then a forecast from both
        if not cache_dit.summary(model).cached_steps or not torch.isfinite(outs[-1]).all():
            return "nothing was forecast"
        return None

    def cfg() -> str | None:
        """Two calls per step are two branches: marked with cache_context where the model has one, else
        told apart by their shared timestep inside a pipeline call."""
        options = {**_forced(info["num_blocks"]), "do_separate_classifier_free_guidance": None}
        if callable(getattr(model, "cache_context", None)):
            apply_cache_on_transformer(model, **options)
            _run(model, family, branches=("cond", "uncond"))
            stats = cache_dit.summary(model)
        else:
            loop = _Loop(model, family)
            cache_dit.apply_cache_on_pipe(loop, **options)
            loop()
            stats = cache_dit.summary(loop)
            cache_dit.disable_cache(loop)
        expected = list(range(1, STEPS))
        if (stats.cached_steps, stats.cfg_cached_steps) != (expected, expected):
            return f"cond/uncond cached {stats.cached_steps} / {stats.cfg_cached_steps}"
        return None

    def disable() -> str | None:
        cache_dit.disable_cache(model)
        if "forward" in model.__dict__ or not all(
            torch.equal(a, b) for a, b in zip(_run(model, family), ref)
        ):
            return "disable_cache did not restore the uncached output"
        return None

    _check(verdicts, "exact", exact)
    if verdicts["exact"] != "yes":
        return {**{c: verdicts["exact"] for c in CAPABILITIES}, **verdicts}
    for key, fn in (
        ("DBCache", dbcache),
        ("FBCache", fbcache),
        ("DBPrune", dbprune),
        ("TaylorSeer", taylorseer),
        ("CFG", cfg),
        ("disable", disable),
    ):
        _check(verdicts, key, fn)
    verdicts["blocks"] = str(info["num_blocks"])
    return verdicts
