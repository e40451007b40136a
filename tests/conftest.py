"""Shared fixtures: `case` runs a test once per supported model (see `cache_dit.testing.cases`)."""

from __future__ import annotations

import pytest
import torch

from cache_dit.testing.cases import MODEL_CASES, ModelCase

# The tiny models are dominated by per-op overhead; one thread is fastest and keeps runs reproducible.
torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "variant: a model case sharing its adapter with another (see ModelCase)"
    )


@pytest.fixture(
    params=[pytest.param(c, marks=[pytest.mark.variant] if c.variant_of else []) for c in MODEL_CASES],
    ids=[c.name for c in MODEL_CASES],
)
def case(request: pytest.FixtureRequest) -> ModelCase:
    return request.param


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
