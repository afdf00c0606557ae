"""The learning-rate schedule as a pure function of the step (no optimizer, no state).

Linear warmup from 0 to `peak` over `warmup_steps`, then decay to `final` at the last step:
cosine (half a cosine), linear, or constant (stays at `peak`). Because it is a function of the step,
resuming needs nothing but the step number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    peak: float
    final: float
    warmup_steps: int
    total_steps: int
    kind: str = "cosine"  # cosine | linear | constant

    @classmethod
    def from_spec(cls, spec, plan) -> "Schedule":
        lr = spec.training.learning_rate
        return cls(
            peak=lr.peak, final=lr.final, warmup_steps=plan.warmup_steps, total_steps=plan.total_steps, kind=lr.schedule
        )

    def state_dict(self) -> dict:
        return {
            "peak": self.peak,
            "final": self.final,
            "warmupSteps": self.warmup_steps,
            "totalSteps": self.total_steps,
            "kind": self.kind,
        }


def lr_at(step: int, s: Schedule) -> float:
    """Learning rate for optimizer step `step` (0-based; the first update uses lr_at(0))."""
    if s.warmup_steps > 0 and step < s.warmup_steps:
        return s.peak * (step + 1) / s.warmup_steps
    if s.kind == "constant":
        return s.peak
    decay_steps = s.total_steps - s.warmup_steps - 1
    if decay_steps <= 0:
        return s.final
    progress = min(1.0, (step - s.warmup_steps) / decay_steps)
    if s.kind == "linear":
        coeff = 1.0 - progress
    elif s.kind == "cosine":
        coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown learning-rate schedule '{s.kind}' (training.learningRate.schedule)")
    return s.final + coeff * (s.peak - s.final)
