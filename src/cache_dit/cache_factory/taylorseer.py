"""TaylorSeer: forecast a tensor at a future step from the values stored at fully computed steps.

For the last computed step s0 (previous computed step s1) it keeps divided differences
`d_0 = F(s0)`, `d_i = (d_{i-1}(s0) - d_{i-1}(s1)) / (s0 - s1)` for i = 1..m, and forecasts
`F(s0 + k) ~= sum_i d_i * k**i / i!`. Orders that do not exist yet (too few computed steps) are left out.
Memory: m + 1 tensors.
"""

from __future__ import annotations

import math

import torch


class TaylorSeer:
    """Pure forecast state for one stream: `update(value, step)` at computed steps, `predict(step)` after."""

    def __init__(self, n_derivatives: int = 2) -> None:
        if isinstance(n_derivatives, bool) or not isinstance(n_derivatives, int) or n_derivatives < 0:
            raise ValueError(f"n_derivatives must be an int >= 0, got {n_derivatives!r}")
        self.n_derivatives = n_derivatives
        self.reset()

    def reset(self) -> None:
        self.factors: list[torch.Tensor] = []  # d_0 .. d_j, j <= m
        self.last_step: int | None = None

    @property
    def order(self) -> int:
        """The order the next forecast uses (-1: nothing stored yet)."""
        return len(self.factors) - 1

    def update(self, value: torch.Tensor, step: int) -> None:
        """Store the value computed at `step`. A shape/dtype/device change or a non-increasing step restarts."""
        if self.factors:
            ref = self.factors[0]
            stale = (
                ref.shape != value.shape
                or ref.dtype != value.dtype
                or ref.device != value.device
                or self.last_step is None
                or step <= self.last_step
            )
            if stale:
                self.reset()
        if not self.factors:
            self.factors = [value]
            self.last_step = step
            return
        distance = float(step - self.last_step)
        new = [value]
        for i in range(min(self.n_derivatives, len(self.factors))):
            new.append((new[i] - self.factors[i]) / distance)
        self.factors = new
        self.last_step = step

    def predict(self, step: int) -> torch.Tensor:
        """Forecast at `step` (k = step - last computed step)."""
        if not self.factors:
            raise RuntimeError("TaylorSeer.predict called before any update")
        k = float(step - self.last_step)
        out = self.factors[0]
        for i in range(1, len(self.factors)):
            out = out + self.factors[i] * (k**i / math.factorial(i))
        return out
