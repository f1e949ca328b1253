"""DAPO dynamic sampling and overlong shaping, MT-GRPO task weights and sampler (docs/algorithms.md)."""

import numpy as np
import pytest

from turngym.trainers.sampling import (
    fill_batch,
    fill_to_targets,
    generation_weights,
    informative_group_mask,
    is_informative,
    overlong_penalty,
    sampler_multipliers,
    target_counts,
    task_weight_gradient,
    task_weights,
    update_task_logits,
    update_zero_gradient_rate,
)


@pytest.mark.parametrize(
    ("rewards", "kept"),
    [([1, 1, 1, 1], False), ([0, 0, 0, 0], False), ([1, 0, 1, 0], True), ([0.5], True)],
)
def test_zero_variance_groups_are_dropped_singletons_kept(rewards, kept):
    assert is_informative(rewards) is kept


def test_informative_group_mask_over_a_flat_batch():
    rewards = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0.5]
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] * 4 + ["d"]
    perm = np.random.default_rng(0).permutation(len(rewards))
    mask = informative_group_mask(np.asarray(rewards)[perm], np.asarray(groups)[perm])
    expected = np.array([False] * 8 + [True] * 5)[perm]
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(
    ("length", "penalty"), [(16000, 0.0), (16384, 0.0), (18432, -0.5), (20480, -1.0), (30000, -1.0)]
)
def test_overlong_shaping(length, penalty):
    assert overlong_penalty(length, 20480, 4096) == pytest.approx(penalty)


def test_overlong_shaping_is_vectorised():
    np.testing.assert_allclose(
        overlong_penalty([16000, 18432, 20480], 20480, 4096), [0.0, -0.5, -1.0]
    )


class Generator:
    """Deterministic rollout stand-in: yields groups from a script and records requests."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []

    def __call__(self, n):
        self.requests.append(n)
        out, self.script = self.script[:n], self.script[n:]
        return out


def test_fill_batch_refills_until_full():
    gen = Generator([[1, 1], [1, 0], [0, 0], [0, 1], [0, 0], [1, 1], [0.3], [1, 0]])
    result = fill_batch(gen, 3, rewards_of=lambda g: g)
    assert result.full
    assert result.all_groups() == [[1, 0], [0, 1], [0.3]]
    assert gen.requests == [3, 2, 1, 1]  # first generation, then the deficit each round
    assert (result.rounds, result.generated, result.dropped) == (3, 7, 4)


def test_fill_batch_stops_after_max_refill_rounds():
    gen = Generator([[1, 1]] * 100)
    result = fill_batch(gen, 2, rewards_of=lambda g: g, max_refill_rounds=10)
    assert not result.full and result.all_groups() == []
    assert len(gen.requests) == 11  # the first generation + 10 refills
    assert result.rounds == 10


def test_fill_to_targets_oversamples_by_multiplier_and_keeps_counts():
    rng = np.random.default_rng(0)

    def produce(requests):
        # task "hard" gives an all-zero group half the time
        for task, n in requests.items():
            for _ in range(n):
                yield task, ([0, 0] if task == "hard" and rng.random() < 0.5 else [0, 1])

    calls = []

    def recorded(requests):
        calls.append(dict(requests))
        return list(produce(requests))

    result = fill_to_targets(
        recorded, {"easy": 3, "hard": 4}, lambda g: g, multipliers={"hard": 2.0}
    )
    assert calls[0] == {"easy": 3, "hard": 8}
    assert result.full
    assert {k: len(v) for k, v in result.groups.items()} == {"easy": 3, "hard": 4}


def test_mt_grpo_improvement_aware_update():
    xi = np.zeros(3)
    reward, improvement = (0.8, 0.2, 0.5), (0.05, 0.0, 0.10)  # J and I; s = (0.21, 0.04, 0.20)
    np.testing.assert_allclose(task_weights(xi), [1 / 3] * 3)
    g = task_weight_gradient(xi, reward, improvement, lam=0.2)
    np.testing.assert_allclose(g, [0.02, -0.036667, 0.016667], atol=1e-6)
    z1 = task_weights(update_task_logits(xi, reward, improvement, lam=0.2, beta=1.0))
    np.testing.assert_allclose(z1, [0.326622, 0.345665, 0.327713], atol=1e-6)


def test_mt_grpo_sampler_multipliers_and_generation_weights():
    rho = (0.0, 0.5, 0.9)
    np.testing.assert_allclose(sampler_multipliers(rho), [1, 2, 5])
    np.testing.assert_allclose(sampler_multipliers([1.0]), [5.0])  # capped, no division error
    np.testing.assert_allclose(
        generation_weights((0.5, 0.25, 0.25), rho), [0.2222, 0.2222, 0.5556], atol=1e-4
    )


def test_zero_gradient_rate_ema():
    np.testing.assert_allclose(
        update_zero_gradient_rate([0.0, 1.0], [1.0, 0.0], momentum=0.75), [0.25, 0.75]
    )


def test_target_counts_are_multinomial_and_reproducible():
    z = [0.5, 0.25, 0.25]
    a = target_counts(64, z, np.random.default_rng(7))
    b = target_counts(64, z, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.sum() == 64
    many = np.stack([target_counts(64, z, np.random.default_rng(s)) for s in range(400)])
    np.testing.assert_allclose(many.mean(axis=0) / 64, z, atol=0.02)
