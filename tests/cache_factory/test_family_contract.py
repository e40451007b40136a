"""The cache contract on every registered transformer family of the installed diffusers (tiny zoo models,
3 steps, bare transformer): threshold 0 bit-exact, identical-input replay through a cached step exact,
forced caching caches, disable restores, FBCache/DBPrune/TaylorSeer run, CFG branches kept apart.
The README's support matrix is generated from the same verdicts and must match them."""

from __future__ import annotations

from pathlib import Path

import pytest

import cache_dit
from cache_dit.testing import support_matrix
from cache_dit.testing.contract import CAPABILITIES, check_family
from cache_dit.testing.families import FAMILIES

CLASSES = support_matrix.registered_classes()
CACHED = [name for name, reason in CLASSES.items() if reason is None]
REJECTED = [name for name, reason in CLASSES.items() if reason is not None]
_VERDICTS: dict[str, dict[str, str]] = {}


def verdicts(name: str) -> dict[str, str]:
    if name not in _VERDICTS:
        _VERDICTS[name] = check_family(FAMILIES[name])
    return _VERDICTS[name]


def test_every_registered_family_has_a_tiny_model_to_test():
    assert support_matrix.untested(CLASSES) == []
    assert len(CACHED) >= 60


@pytest.mark.parametrize("name", CACHED)
def test_family_keeps_the_contract(name):
    got = verdicts(name)
    assert {k: v for k, v in got.items() if k != "blocks"} == dict.fromkeys(
        (*CAPABILITIES, "exact", "disable"), "yes"
    )


@pytest.mark.parametrize("name", REJECTED)
def test_rejected_family_says_why(name):
    model = FAMILIES[name].build(seed=0)
    with pytest.raises(ValueError, match=f"{name} is not supported by cache-dit: .{{20,}}"):
        cache_dit.apply_cache_on_transformer(
            model, cache_type="DBCache", Fn_compute_blocks=1, Bn_compute_blocks=0
        )
    assert "forward" not in model.__dict__


def test_readme_support_matrix_is_generated_from_these_results():
    results = {
        name: verdicts(name) if reason is None else support_matrix.collect_rejected(name, reason)
        for name, reason in CLASSES.items()
    }
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    expected = support_matrix.replace_section(readme, support_matrix.render(results))
    assert readme == expected, "run: python -m cache_dit.testing.support_matrix --write README.md"
