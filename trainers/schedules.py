"""Learning-rate schedules: the rate of the update at each training step, as a pure function.

The trainer sets the rate from the step counter before every update instead of keeping a
scheduler object, so a resumed run continues the schedule exactly with nothing extra saved.
"""

from __future__ import annotations

import math
from typing import Literal

__all__ = ["Schedule", "lr_at"]

Schedule = Literal["constant", "linear", "cosine"]


def lr_at(step: int, total_steps: int, base_lr: float, schedule: Schedule = "constant", warmup_steps: int = 0) -> float:
    """The learning rate of update ``step`` (0-based) of ``total_steps``.

    A linear warm-up from ``base_lr / (warmup_steps + 1)`` over the first ``warmup_steps``,
    then ``constant``, or a ``linear`` / ``cosine`` decay that reaches 0 after the last step
    (the last update still moves: it gets ``base_lr / (decay steps)`` or its cosine analogue).
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return base_lr
    decay_steps = max(1, total_steps - warmup_steps)
    remaining = min(1.0, max(0.0, (decay_steps - (step - warmup_steps)) / decay_steps))  # 1 -> 1/decay_steps
    if schedule == "linear":
        return base_lr * remaining
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 - math.cos(math.pi * remaining))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}: choose constant, linear or cosine")
