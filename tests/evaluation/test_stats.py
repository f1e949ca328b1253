"""The statistics against hand-computed values and simulation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from turngym.agents.evaluation.stats import (
    bootstrap_mean_ci,
    min_detectable_difference,
    paired_compare,
    pass_at_k,
    pass_hat_k,
    runs_needed,
    within_task_variance,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),            # pass@1 = c/n
        (5, 2, 2, 1 - 3 / 10),     # 1 - C(3,2)/C(5,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (4, 0, 2, 0.0),
        (4, 4, 3, 1.0),
        (3, 1, 3, 1.0),            # every 3-subset of 3 runs holds the success
        (6, 1, 2, 1 - 10 / 15),    # 1 - C(5,2)/C(6,2)
    ],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert float(pass_at_k(n, c, k)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 3, 1, 0.6),
        (5, 3, 2, 3 / 10),   # C(3,2)/C(5,2)
        (6, 4, 3, 4 / 20),   # C(4,3)/C(6,3)
        (5, 1, 2, 0.0),
        (4, 4, 4, 1.0),
    ],
)
def test_pass_hat_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert float(pass_hat_k(n, c, k)) == pytest.approx(expected, abs=1e-12)


def test_estimators_match_exact_binomials_vectorised() -> None:
    n = np.array([n for n in range(1, 13) for _ in range(n + 1)])
    c = np.array([c for n in range(1, 13) for c in range(n + 1)])
    for k in (1, 2, 3, 5, 8):
        at_k, hat_k = pass_at_k(n, c, k), pass_hat_k(n, c, k)
        for i in range(n.size):
            if n[i] < k:
                assert math.isnan(at_k[i]) and math.isnan(hat_k[i])
                continue
            exact_at = 1 - Fraction(math.comb(n[i] - c[i], k), math.comb(n[i], k))
            exact_hat = Fraction(math.comb(c[i], k), math.comb(n[i], k))
            assert at_k[i] == pytest.approx(float(exact_at), abs=1e-12)
            assert hat_k[i] == pytest.approx(float(exact_hat), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n() -> None:
    # C(1000, 100) overflows a float; the product form does not.
    exact = 1 - Fraction(math.comb(900, 100), math.comb(1000, 100))
    assert float(pass_at_k(1000, 100, 100)) == pytest.approx(float(exact), rel=1e-9)
    exact_hat = Fraction(math.comb(700, 50), math.comb(1000, 50))
    assert float(pass_hat_k(1000, 700, 50)) == pytest.approx(float(exact_hat), rel=1e-9)


def test_counts_out_of_range_are_rejected() -> None:
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_hat_k(3, 1, 0)


def test_bootstrap_degenerate_cases_and_seeding() -> None:
    one = bootstrap_mean_ci([0.25])
    assert (one.mean, one.low, one.high) == (0.25, 0.25, 0.25)
    const = bootstrap_mean_ci([0.5] * 10)
    assert (const.low, const.high) == (0.5, 0.5)
    values = np.linspace(0, 1, 21)
    a, b = bootstrap_mean_ci(values, seed=3), bootstrap_mean_ci(values, seed=3)
    assert a == b and a.mean == pytest.approx(0.5) and a.low < 0.5 < a.high
    # The interval is about +-1.96 standard errors of the mean for a symmetric sample.
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert a.high - a.low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent() -> None:
    """200 simulated suites of 40 tasks x 4 runs with per-task success rates ~ Beta(2, 3)."""
    rng = np.random.default_rng(1234)
    true_mean = 2 / 5
    suites, tasks, runs = 200, 40, 4
    covered = 0
    for s in range(suites):
        p = rng.beta(2, 3, size=tasks)
        pass1 = rng.binomial(runs, p) / runs
        ci = bootstrap_mean_ci(pass1, samples=1000, seed=s)
        covered += ci.low <= true_mean <= ci.high
    coverage = covered / suites
    # Binomial noise of the coverage estimate is ~1.5 points; percentile intervals with 40
    # tasks undercover slightly.
    assert 0.89 <= coverage <= 0.99, coverage


def test_within_task_variance() -> None:
    var = within_task_variance([4, 4, 1], [2, 4, 1])
    assert var[0] == pytest.approx(4 / 12) and var[1] == 0.0 and math.isnan(var[2])


def test_runs_needed_hand_value() -> None:
    # z = 1.95996 + 0.84162 = 2.80159, z^2 = 7.84889
    # room = 50 * 0.1^2 / 7.84889 - 0.01 = 0.053703 ; n = 0.5 / 0.053703 = 9.31 -> 10
    assert runs_needed(0.1, 50, sigma2=0.5, tau2=0.01) == 10
    # ... and 10 runs are the first that make the detectable difference reach delta.
    assert min_detectable_difference(50, 10, 0.5, 0.01) <= 0.1 < min_detectable_difference(50, 9, 0.5, 0.01)
    # The between-task spread alone hides the difference: more runs cannot help.
    assert runs_needed(0.05, 10, sigma2=0.5, tau2=0.01) is None
    assert runs_needed(0.1, 50, sigma2=0.0, tau2=0.0) == 1


def test_paired_compare_hand_values() -> None:
    cmp = paired_compare(["t0", "t1", "t2"], [4, 4, 4], [4, 2, 0], [4, 4, 4], [2, 2, 1], delta=0.1, seed=0)
    assert cmp.per_task == {"t0": 0.5, "t1": 0.0, "t2": -0.25}
    assert cmp.difference.mean == pytest.approx(0.25 / 3)
    assert cmp.mean_a == pytest.approx(0.5) and cmp.mean_b == pytest.approx(5 / 12)
    # within-task variances A [0, 1/3, 0], B [1/3, 1/3, 1/4] -> sigma2 = mean(sums) = 0.416667
    assert cmp.sigma2 == pytest.approx(1.25 / 3)
    # var(d, ddof=1) = 0.145833 ; noise with 4 runs = sigma2 / 4 = 0.104167 ; tau2 = 0.041667
    assert cmp.tau2 == pytest.approx(0.291667 / 2 - 1.25 / 12, abs=1e-6)
    assert cmp.difference.low <= cmp.difference.mean <= cmp.difference.high
    assert cmp.runs_needed is None  # 3 tasks cannot resolve 0.1 against tau2 = 0.04


def test_paired_bootstrap_keeps_pairs_together() -> None:
    # A is B plus exactly 0.25 on every task: the paired interval has zero width even though
    # the tasks' own success rates spread widely.
    nb = [8] * 6
    cb = [0, 1, 2, 3, 4, 5]
    ca = [c + 2 for c in cb]
    cmp = paired_compare([str(i) for i in range(6)], nb, ca, nb, cb)
    assert (cmp.difference.low, cmp.difference.mean, cmp.difference.high) == pytest.approx((0.25, 0.25, 0.25))
    assert cmp.tau2 == 0.0


def test_power_formula_reaches_the_promised_power_in_simulation() -> None:
    """With runs_needed runs, a two-sided z-test on the mean difference rejects ~80% of the time."""
    rng = np.random.default_rng(7)
    tasks, delta = 60, 0.15
    base = rng.uniform(0.2, 0.6, size=tasks)
    pa, pb = base + delta, base  # tau2 = 0: every task differs by exactly delta
    sigma2 = float(np.mean(pa * (1 - pa) + pb * (1 - pb)))
    n = runs_needed(delta, tasks, sigma2=sigma2, tau2=0.0)
    assert n is not None
    trials, rejections = 400, 0
    for _ in range(trials):
        d = rng.binomial(n, pa) / n - rng.binomial(n, pb) / n
        z = d.mean() / (d.std(ddof=1) / math.sqrt(tasks))
        rejections += abs(z) > 1.959964
    assert 0.72 <= rejections / trials <= 0.92, (n, rejections / trials)
