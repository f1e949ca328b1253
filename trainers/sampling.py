"""Which rollouts make a batch: DAPO dynamic sampling and overlong shaping, MT-GRPO task balance.

Formulas: ``docs/algorithms.md`` (DAPO under section 2, MT-GRPO section 6). Pure functions
over numpy arrays, plus two small refill loops that call back into the rollout code:

- :func:`fill_batch` (DAPO dynamic sampling): keep generating groups until ``batch_size``
  informative groups (reward std > 0, or a single rollout) are collected or
  ``max_refill_rounds`` refills have run.
- :func:`fill_to_targets` (MT-GRPO ratio-preserving sampler): the same per task, towards target
  counts ``n ~ Multinomial(B, z)`` (:func:`target_counts`), over-generating task k by its
  multiplier m_k = min(1/(1 - rho_k), 5) (:func:`sampler_multipliers`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = [
    "FillResult",
    "fill_batch",
    "fill_to_targets",
    "generation_weights",
    "informative_group_mask",
    "is_informative",
    "overlong_penalty",
    "sampler_multipliers",
    "target_counts",
    "task_weight_gradient",
    "task_weights",
    "update_task_logits",
    "update_zero_gradient_rate",
]

G = TypeVar("G")
K = TypeVar("K", bound=Hashable)


# --------------------------------------------------------------------------------------------
# DAPO: dynamic sampling and overlong shaping
# --------------------------------------------------------------------------------------------


def is_informative(rewards: Sequence[float] | np.ndarray) -> bool:
    """A group gives a gradient unless all its rewards are equal; a single rollout is kept."""
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    return len(r) <= 1 or bool(r.max() > r.min())


def informative_group_mask(rewards: Any, group_ids: Any) -> np.ndarray:
    """Per entry (one reward per trajectory): True if its group is kept by dynamic sampling.

    Vectorised form of :func:`is_informative` over a flat batch: a group is dropped when it has
    more than one member and zero reward spread.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if len(r) == 0:
        return np.zeros(0, dtype=bool)
    _, codes = np.unique(np.asarray(group_ids), return_inverse=True)
    codes = codes.reshape(-1)
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    spread = np.maximum.reduceat(r[order], starts) - np.minimum.reduceat(r[order], starts)
    count = np.diff(np.r_[starts, len(r)])
    keep = (count == 1) | (spread > 0)
    return keep[codes]


def overlong_penalty(lengths: Any, max_length: int, cache_length: int) -> np.ndarray:
    """DAPO soft overlong punishment, added to the task reward.

    0 if len <= Lmax - Lcache; ((Lmax - Lcache) - len)/Lcache if len <= Lmax; -1 beyond.
    """
    if not 0 < cache_length <= max_length:
        raise ValueError(
            f"need 0 < cache_length <= max_length, got {cache_length} and {max_length}"
        )
    length = np.asarray(lengths, dtype=np.float64)
    soft_start = max_length - cache_length
    ramp = (soft_start - length) / cache_length
    return np.where(length <= soft_start, 0.0, np.where(length <= max_length, ramp, -1.0))


@dataclass
class FillResult(Generic[K, G]):
    """What a refill loop collected.

    ``groups``: kept groups per key (at most the target each); ``rounds``: refill rounds run
    after the first generation; ``generated``/``dropped``: groups produced / filtered out;
    ``full``: every target was met (False when ``max_refill_rounds`` ran out first).
    """

    groups: dict[K, list[G]] = field(default_factory=dict)
    rounds: int = 0
    generated: int = 0
    dropped: int = 0
    full: bool = False

    def all_groups(self) -> list[G]:
        return [g for gs in self.groups.values() for g in gs]


def fill_to_targets(
    produce: Callable[[dict[K, int]], Iterable[tuple[K, G]]],
    targets: Mapping[K, int],
    rewards_of: Callable[[G], Sequence[float]],
    *,
    max_refill_rounds: int = 10,
    multipliers: Mapping[K, float] | None = None,
) -> FillResult[K, G]:
    """Collect ``targets[k]`` informative groups for each key k (a task), refilling deficits.

    ``produce(requests)`` generates ``requests[k]`` new groups for each key and returns
    ``(key, group)`` pairs; ``rewards_of(group)`` gives the group's trajectory rewards. Each
    request is ``ceil(deficit_k * m_k)`` with m_k from ``multipliers`` (default 1), so tasks
    whose groups are often all-equal are over-generated. Surplus groups are discarded.
    """
    if max_refill_rounds < 0:
        raise ValueError(f"max_refill_rounds must be >= 0, got {max_refill_rounds}")
    result: FillResult[K, G] = FillResult(groups={k: [] for k in targets})
    for round_index in range(max_refill_rounds + 1):
        deficits = {k: n - len(result.groups[k]) for k, n in targets.items()}
        requests = {
            k: math.ceil(d * (multipliers.get(k, 1.0) if multipliers else 1.0))
            for k, d in deficits.items()
            if d > 0
        }
        if not requests:
            break
        result.rounds = round_index
        for key, group in produce(requests):
            result.generated += 1
            if not is_informative(rewards_of(group)):
                result.dropped += 1
                continue
            kept = result.groups.get(key)
            if kept is not None and len(kept) < targets[key]:
                kept.append(group)  # surplus groups and unrequested keys are discarded
    result.full = all(len(result.groups[k]) >= n for k, n in targets.items())
    return result


def fill_batch(
    produce: Callable[[int], Iterable[G]],
    batch_size: int,
    rewards_of: Callable[[G], Sequence[float]],
    *,
    max_refill_rounds: int = 10,
) -> FillResult[None, G]:
    """DAPO dynamic sampling: ``batch_size`` informative groups from ``produce(n)`` calls.

    Groups with all-equal rewards ([1,1,1,1], [0,0,0,0]) are dropped, singletons kept; the
    batch is refilled until full or ``max_refill_rounds`` refills have run. The kept groups
    are ``result.all_groups()``.
    """
    return fill_to_targets(
        lambda requests: ((None, g) for g in produce(requests[None])),
        {None: batch_size},
        rewards_of,
        max_refill_rounds=max_refill_rounds,
    )


# --------------------------------------------------------------------------------------------
# MT-GRPO: task weights and the ratio-preserving sampler
# --------------------------------------------------------------------------------------------


def task_weights(xi: Any) -> np.ndarray:
    """z = softmax(xi) (MT-GRPO task weights; xi starts at 0, so z starts uniform)."""
    xi = np.asarray(xi, dtype=np.float64)
    e = np.exp(xi - xi.max())
    return e / e.sum()


def task_weight_gradient(
    xi: Any, task_reward: Any, task_improvement: Any, lam: float
) -> np.ndarray:
    """Improvement-aware gradient: s_k = I_k + lambda*J_k, g_k = z_k (s_k - sum_j z_j s_j).

    J_k is the mean reward of task k in the batch and I_k = J_k(after) - J_k(before) its
    improvement across the update. g is the gradient of sum_k z_k s_k with respect to xi.
    """
    z = task_weights(xi)
    s = np.asarray(task_improvement, dtype=np.float64) + lam * np.asarray(
        task_reward, dtype=np.float64
    )
    return z * (s - np.dot(z, s))


def update_task_logits(
    xi: Any, task_reward: Any, task_improvement: Any, lam: float, beta: float = 0.025
) -> np.ndarray:
    """One plain gradient step xi <- xi - beta*g, moving weight towards lagging tasks.

    (The paper steps xi with AdamW at lr 0.025; a trainer that wants that feeds
    :func:`task_weight_gradient` to its own optimizer.)
    """
    return np.asarray(xi, dtype=np.float64) - beta * task_weight_gradient(
        xi, task_reward, task_improvement, lam
    )


def sampler_multipliers(zero_gradient_rate: Any, cap: float = 5.0) -> np.ndarray:
    """m_k = min(1/(1 - rho_k), cap): expected over-generation to keep task k's share."""
    rho = np.asarray(zero_gradient_rate, dtype=np.float64)
    if np.any((rho < 0) | (rho > 1)):
        raise ValueError("zero-gradient rates must be in [0, 1]")
    with np.errstate(divide="ignore"):
        return np.minimum(1.0 / (1.0 - rho), cap)


def generation_weights(z: Any, zero_gradient_rate: Any, cap: float = 5.0) -> np.ndarray:
    """Normalised z_k*m_k: the share of generation spent on each task."""
    w = np.asarray(z, dtype=np.float64) * sampler_multipliers(zero_gradient_rate, cap)
    return w / w.sum()


def update_zero_gradient_rate(rho: Any, observed_rate: Any, momentum: float = 0.9) -> np.ndarray:
    """EMA of each task's zero-gradient (all-equal group) rate: rho <- m*rho + (1-m)*observed.

    (unverified: the paper's EMA momentum; 0.9 is this implementation's default.)
    """
    return momentum * np.asarray(rho, dtype=np.float64) + (1.0 - momentum) * np.asarray(
        observed_rate, dtype=np.float64
    )


def target_counts(batch_size: int, z: Any, rng: np.random.Generator) -> np.ndarray:
    """Per-task group counts of the next batch, n ~ Multinomial(B, z)."""
    z = np.asarray(z, dtype=np.float64)
    return rng.multinomial(batch_size, z / z.sum())
