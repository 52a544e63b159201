"""DUDA gradual distillation weight λ(t) (method.md C, stage 1).

λ ramps from 0 to 1 over the first ``ramp`` fraction of stage 1 and stays 1 afterwards.
With ``x = clamp(step / (ramp · total_steps), 0, 1)``:
- ``linear``:   λ = x
- ``sigmoid``:  λ = (σ(k(x − ½)) − σ(−k/2)) / (σ(k/2) − σ(−k/2)), k = 10 — a logistic curve
  rescaled to start exactly at 0 and end exactly at 1 (slow start, fast middle, slow finish);
- ``constant``: λ = 1 at every step (no ramp).
"""

from __future__ import annotations

import math
from typing import Literal

from ._checks import UdaInputError

RampKind = Literal["linear", "sigmoid", "constant"]
SIGMOID_STEEPNESS = 10.0


def _logistic(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def ramp_progress(step: int, total_steps: int, ramp: float = 0.5) -> float:
    """Position ``x`` in [0, 1] inside the ramp window; 1 when there is no window."""
    if total_steps < 1:
        raise UdaInputError(f"distill total_steps: expected >= 1, got {total_steps}")
    if not 0.0 <= ramp <= 1.0:
        raise UdaInputError(f"distill ramp: expected a fraction in [0, 1], got {ramp}")
    window = ramp * total_steps
    if window <= 0:
        return 1.0
    return min(max(step / window, 0.0), 1.0)


def distill_weight(step: int, total_steps: int, ramp: float = 0.5, kind: RampKind = "linear") -> float:
    """λ(step) for the given ramp ``kind`` (see the module docstring for the formulas)."""
    if kind == "constant":
        return 1.0
    x = ramp_progress(step, total_steps, ramp)
    if kind == "linear":
        return x
    if kind == "sigmoid":
        k = SIGMOID_STEEPNESS
        low, high = _logistic(-k / 2), _logistic(k / 2)
        return (_logistic(k * (x - 0.5)) - low) / (high - low)
    raise UdaInputError(f"distill ramp kind: expected 'linear', 'sigmoid' or 'constant', got {kind!r}")
