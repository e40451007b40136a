"""TaylorSeer: forecast a tensor at a future step from the values stored at fully computed steps.

For the last computed step s0 (previous computed step s1) it keeps divided differences
`d_0 = F(s0)`, `d_i = (d_{i-1}(s0) - d_{i-1}(s1)) / (s0 - s1)` for i = 1..m, and forecasts
`F(s0 + k) ~= sum_i d_i * k**i / i!`. Orders that do not exist yet (too few computed steps) are left out.
Memory: m + 1 tensors.

With `mix_orders=True` the forecast is a mixture of the order-0..m forecasts (all read from the same factors),
weighted by how well each order forecast the value just computed: at every update, order j's forecast of the new
value has error e_j = mean|forecast_j - value|, and the next forecasts use weights w_j = (1/e_j) / sum(1/e). As a
formula: `F(s0 + k) ~= sum_i c_i * d_i * k**i / i!` with `c_i = sum_(j >= i) w_j` (a damped expansion; c_0 = 1).
The weights stay on the device (no host sync); memory: m + 1 tensors and m + 1 scalars.
"""

from __future__ import annotations

import math

import torch


class TaylorSeer:
    """Pure forecast state for one stream: `update(value, step)` at computed steps, `predict(step)` after."""

    def __init__(self, n_derivatives: int = 2, mix_orders: bool = False) -> None:
        if isinstance(n_derivatives, bool) or not isinstance(n_derivatives, int) or n_derivatives < 0:
            raise ValueError(f"n_derivatives must be an int >= 0, got {n_derivatives!r}")
        self.n_derivatives = n_derivatives
        self.mix_orders = mix_orders
        self.reset()

    def reset(self) -> None:
        self.factors: list[torch.Tensor] = []  # d_0 .. d_j, j <= m
        self.last_step: int | None = None
        self.coefficients: torch.Tensor | None = None  # mix_orders: c_0 .. c_j (None: all 1)

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
        if self.mix_orders and len(self.factors) > 1:
            self.coefficients = self._mixture(value, step)
        distance = float(step - self.last_step)
        new = [value]
        for i in range(min(self.n_derivatives, len(self.factors))):
            new.append((new[i] - self.factors[i]) / distance)
        self.factors = new
        self.last_step = step

    def _mixture(self, value: torch.Tensor, step: int) -> torch.Tensor:
        """c_i for the next forecasts, from each order's error on `value` (forecast with the current factors)."""
        k = float(step - self.last_step)
        forecast = self.factors[0]
        errors = [(forecast - value).float().abs().mean()]
        for i in range(1, len(self.factors)):
            forecast = forecast + self.factors[i] * (k**i / math.factorial(i))
            errors.append((forecast - value).float().abs().mean())
        # a floor relative to the value keeps exact orders (error 0) finite and equally weighted
        floor = 1e-7 * value.float().abs().mean() + 1e-30
        inverse = 1.0 / (torch.stack(errors) + floor)
        weights = inverse / inverse.sum()  # (j+1,) order weights w_0 .. w_j
        return weights.flip(0).cumsum(0).flip(0)  # c_i = sum_(j >= i) w_j; c_0 = 1

    def predict(self, step: int) -> torch.Tensor:
        """Forecast at `step` (k = step - last computed step)."""
        if not self.factors:
            raise RuntimeError("TaylorSeer.predict called before any update")
        k = float(step - self.last_step)
        c = self.coefficients
        out = self.factors[0]
        for i in range(1, len(self.factors)):
            term = self.factors[i] * (k**i / math.factorial(i))
            if c is not None:  # orders not measured yet (i >= len(c)) get weight 0
                term = term * (c[i] if i < len(c) else 0.0)
            out = out + term
        return out
