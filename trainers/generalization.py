"""Is the policy learning the task, or its training tasks? Training-rollout success next to
held-out success.

A rise in training reward is not learning: a policy that memorises a frozen set of training
tasks gets better at those while held-out success stays flat or falls. The trainer logs both
curves on one plot, and at every evaluation asks :func:`memorisation_warning` whether training
success has climbed while held-out success has not; if so the run's log says so.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["window_mean", "memorisation_warning"]

MIN_TRAIN_RISE = 0.10
"""Training success must have risen at least this much (absolute) before a warning."""


def window_mean(points: Sequence[tuple[int, float]], first: int, last: int) -> float | None:
    """Mean of the values whose step lies in ``[first, last]`` (None when there are none)."""
    values = [v for s, v in points if first <= s <= last]
    return sum(values) / len(values) if values else None


def memorisation_warning(train_start: float, train_now: float, held_out_start: float, held_out_now: float,
                         held_out_high_now: float | None = None) -> str | None:
    """A one-sentence warning when training success climbed while held-out success did not.

    Fires when training-rollout success rose by at least ``MIN_TRAIN_RISE`` and held-out success
    rose by less than a third of that rise (or, when its CI is given, the upper end of the
    held-out interval does not reach the starting held-out success plus that third). Returns
    None otherwise.
    """
    train_rise = train_now - train_start
    if train_rise < MIN_TRAIN_RISE:
        return None
    needed = held_out_start + train_rise / 3
    reached = held_out_now if held_out_high_now is None else held_out_high_now
    if reached >= needed:
        return None
    return (f"training-rollout success rose {train_start:.0%} -> {train_now:.0%} while held-out success went "
            f"{held_out_start:.0%} -> {held_out_now:.0%}: the policy is learning its training tasks, not the task "
            "(memorisation); train on generated tasks (env.train_tasks=generated) or a larger split")
