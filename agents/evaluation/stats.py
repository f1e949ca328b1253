"""Evaluation statistics: pure, vectorised functions over per-run outcomes.

Everything here works on plain numbers — no trajectories, no files — so each formula can be
checked against hand-computed values.

Notation: a suite has ``T`` tasks; task ``t`` was run ``n_t`` times and succeeded ``c_t`` times.

pass@1
    Per task ``p_t = c_t / n_t`` (the mean over runs); per suite the mean of ``p_t`` over tasks
    (each task weighs the same, however many runs it has).
Confidence interval (bootstrap over tasks)
    Resample the ``T`` per-task values with replacement ``B`` times (a seeded generator), take
    the mean of each resample, report the ``(1-level)/2`` and ``(1+level)/2`` percentiles. It is
    an interval for the mean over the *population of tasks* the suite was drawn from, and it
    contains both sources of noise: which tasks are in the suite and the sampling of runs.
pass@k (unbiased, Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1)
    ``pass@k_t = 1 - C(n-c, k) / C(n, k)``: the probability that at least one of ``k`` runs
    drawn without replacement from the ``n`` observed ones succeeded. Computed as the product
    ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (the paper's numerically stable form) — never with
    factorials. Undefined (NaN) when ``n < k``.
pass^k (tau-bench, Yao et al. 2024)
    ``pass^k_t = C(c, k) / C(n, k) = prod_{i=0}^{k-1} (c-i)/(n-i)``: the probability that all
    ``k`` runs drawn without replacement succeeded — reliability rather than coverage.
Paired comparison of A and B (same tasks)
    ``d_t = p^A_t - p^B_t``; the mean difference and a paired bootstrap CI (resample *tasks*,
    keep each task's pair together).
Power: runs per task needed to detect a difference ``delta`` (two-sided ``alpha``, ``power``)
    With ``n`` runs per task for each policy, the variance of the mean difference over ``T``
    tasks is ``Var(mean d) = (tau2 + sigma2 / n) / T``, where

    - ``sigma2 = mean_t (s^A_t^2 + s^B_t^2)`` is the within-task variance of one run's outcome
      (``s_t^2`` the unbiased sample variance of task ``t``'s run outcomes, ``c(n-c)/(n(n-1))``
      for 0/1 outcomes), which more runs average away, and
    - ``tau2`` is the between-task variance of the *true* differences, which more runs do not
      remove. It is estimated from the observed spread of ``d_t``:
      ``tau2 = max(0, var_t(d_t) - mean_t(s^A_t^2 / n^A_t + s^B_t^2 / n^B_t))``.

    The normal approximation detects ``delta`` when ``delta >= (z_{1-alpha/2} + z_{power}) *
    sqrt(Var)``, so the runs needed are

        n = sigma2 / (T * delta^2 / (z_{1-alpha/2} + z_{power})^2 - tau2)

    rounded up; when the denominator is not positive no number of runs is enough with these
    ``T`` tasks (the between-task spread alone hides ``delta``) and the answer is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from pydantic import BaseModel

__all__ = [
    "BootstrapCI",
    "PairedComparison",
    "bootstrap_mean_ci",
    "min_detectable_difference",
    "paired_compare",
    "pass_at_k",
    "pass_hat_k",
    "runs_needed",
    "within_task_variance",
]


def _counts(n: np.ndarray | Sequence[int] | int, c: np.ndarray | Sequence[int] | int) -> tuple[np.ndarray, np.ndarray]:
    n_arr = np.asarray(n, dtype=np.int64)
    c_arr = np.asarray(c, dtype=np.int64)
    if np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise ValueError("successes must lie between 0 and the number of runs")
    return np.broadcast_arrays(n_arr, c_arr)


def pass_at_k(n: np.ndarray | Sequence[int] | int, c: np.ndarray | Sequence[int] | int, k: int) -> np.ndarray:
    """Unbiased pass@k per task: ``1 - C(n-c,k)/C(n,k)``; NaN where ``n < k``.

    Stable product form (Chen et al. 2021): ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``. Vectorised by
    evaluating the product over ``i = 1..max(n)`` with a mask selecting each task's range.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    n_arr, c_arr = _counts(n, c)
    shape = n_arr.shape
    n_flat, c_flat = n_arr.reshape(-1), c_arr.reshape(-1)
    out = np.full(n_flat.shape, np.nan)
    if n_flat.size:
        i = np.arange(1, max(int(n_flat.max()), 1) + 1, dtype=np.float64)  # (I,)
        in_range = (i[None, :] > (n_flat - c_flat)[:, None]) & (i[None, :] <= n_flat[:, None])
        factors = np.where(in_range, 1.0 - k / i[None, :], 1.0)
        value = 1.0 - np.prod(factors, axis=1)
        # n - c < k: every k-subset holds a success (the product above hits a zero factor).
        value = np.where(n_flat - c_flat < k, 1.0, value)
        out = np.where(n_flat >= k, value, np.nan)
    return out.reshape(shape)


def pass_hat_k(n: np.ndarray | Sequence[int] | int, c: np.ndarray | Sequence[int] | int, k: int) -> np.ndarray:
    """Unbiased pass^k per task: ``C(c,k)/C(n,k) = prod_{i<k} (c-i)/(n-i)``; NaN where ``n < k``."""
    if k < 1:
        raise ValueError("k must be at least 1")
    n_arr, c_arr = _counts(n, c)
    i = np.arange(k, dtype=np.float64).reshape((k,) + (1,) * n_arr.ndim)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.clip(c_arr - i, 0, None) / (n_arr - i)
        value = np.prod(ratios, axis=0)
    return np.where(n_arr >= k, value, np.nan)


class BootstrapCI(BaseModel):
    """A mean with a percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    level: float = 0.95


def bootstrap_mean_ci(
    values: np.ndarray | Sequence[float],
    level: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> BootstrapCI:
    """Mean of ``values`` (one per task) with a percentile bootstrap CI over tasks.

    One task gives a zero-width interval (there is nothing to resample); none gives NaNs.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return BootstrapCI(mean=math.nan, low=math.nan, high=math.nan, level=level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(samples, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return BootstrapCI(mean=float(x.mean()), low=float(lo), high=float(hi), level=level)


def within_task_variance(n: np.ndarray | Sequence[int], c: np.ndarray | Sequence[int]) -> np.ndarray:
    """Unbiased sample variance of one run's 0/1 outcome per task: ``c(n-c) / (n(n-1))``.

    NaN for tasks with a single run (their variance cannot be estimated).
    """
    n_arr, c_arr = _counts(n, c)
    n_f = n_arr.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_arr > 1, c_arr * (n_arr - c_arr) / (n_f * (n_f - 1)), np.nan)


def _z(alpha: float, power: float) -> float:
    normal = NormalDist()
    return normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)


def runs_needed(
    delta: float,
    num_tasks: int,
    sigma2: float,
    tau2: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int | None:
    """Runs per task (per policy) to detect ``delta``; see the module docstring for the formula.

    ``None`` when no number of runs suffices with ``num_tasks`` tasks.
    """
    if delta <= 0 or num_tasks < 1:
        raise ValueError("delta must be positive and there must be at least one task")
    z = _z(alpha, power)
    room = num_tasks * delta**2 / z**2 - tau2
    if room <= 0:
        return None
    if sigma2 <= 0:
        return 1
    return max(1, math.ceil(sigma2 / room - 1e-12))


def min_detectable_difference(
    num_tasks: int, runs: float, sigma2: float, tau2: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest difference detected with ``runs`` runs per task: ``z * sqrt((tau2 + sigma2/runs)/T)``."""
    return _z(alpha, power) * math.sqrt(max(tau2 + sigma2 / runs, 0.0) / num_tasks)


class PairedComparison(BaseModel):
    """A minus B over the tasks both evaluated."""

    num_tasks: int
    mean_a: float
    mean_b: float
    difference: BootstrapCI
    """Mean of per-task ``p^A_t - p^B_t`` with its paired bootstrap CI."""
    per_task: dict[str, float]
    """Task key -> ``p^A_t - p^B_t``."""
    sigma2: float
    """Within-task variance of one run's outcome, summed over A and B, averaged over tasks."""
    tau2: float
    """Estimated between-task variance of the true per-task differences."""
    runs_a: float
    runs_b: float
    """Mean runs per task in A and in B."""
    delta: float
    """The difference the power estimate is for."""
    alpha: float
    power: float
    runs_needed: int | None
    """Runs per task (each side) to detect ``delta``; None if more tasks are needed instead."""
    min_detectable: float
    """The smallest difference detectable with the runs these results have."""


def paired_compare(
    keys: Sequence[str],
    n_a: Sequence[int],
    c_a: Sequence[int],
    n_b: Sequence[int],
    c_b: Sequence[int],
    delta: float = 0.05,
    alpha: float = 0.05,
    power: float = 0.8,
    level: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Paired comparison of A and B on the same tasks (``keys`` in the same order for both)."""
    na, ca = (np.asarray(v, dtype=np.int64) for v in _counts(n_a, c_a))
    nb, cb = (np.asarray(v, dtype=np.int64) for v in _counts(n_b, c_b))
    if not (len(keys) == na.size == nb.size) or na.size == 0:
        raise ValueError("A and B need the same, non-empty list of tasks")
    if np.any(na < 1) or np.any(nb < 1):
        raise ValueError("every task needs at least one run on each side")
    pa, pb = ca / na, cb / nb
    d = pa - pb
    ci = bootstrap_mean_ci(d, level=level, samples=samples, seed=seed)
    var_a, var_b = within_task_variance(na, ca), within_task_variance(nb, cb)
    # Tasks with one run cannot tell their own variance; use the Bernoulli variance of the
    # pooled success rate for them rather than dropping them.
    pooled_a, pooled_b = ca.sum() / na.sum(), cb.sum() / nb.sum()
    var_a = np.where(np.isnan(var_a), pooled_a * (1 - pooled_a), var_a)
    var_b = np.where(np.isnan(var_b), pooled_b * (1 - pooled_b), var_b)
    sigma2 = float(np.mean(var_a + var_b))
    noise_now = float(np.mean(var_a / na + var_b / nb))
    spread = float(np.var(d, ddof=1)) if d.size > 1 else 0.0
    tau2 = max(0.0, spread - noise_now)
    runs_now = 2.0 / float(np.mean(1.0 / na) + np.mean(1.0 / nb))  # harmonic mean over both sides
    return PairedComparison(
        num_tasks=int(d.size),
        mean_a=float(pa.mean()),
        mean_b=float(pb.mean()),
        difference=ci,
        per_task={k: float(v) for k, v in zip(keys, d)},
        sigma2=sigma2,
        tau2=tau2,
        runs_a=float(na.mean()),
        runs_b=float(nb.mean()),
        delta=delta,
        alpha=alpha,
        power=power,
        runs_needed=runs_needed(delta, int(d.size), sigma2, tau2, alpha, power),
        min_detectable=min_detectable_difference(int(d.size), runs_now, sigma2, tau2, alpha, power),
    )
