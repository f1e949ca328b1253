"""MT-GRPO in the loop (task families, improvement-aware weights) and DAPO overlong shaping."""

import json

import numpy as np
import pytest

from turngym.envs import make
from turngym.trainers.multitask import TaskBalancer, task_families
from turngym.trainers.trainer import Trainer
from turngym.trainers.turns import TurnTable


def _families():
    return {"easy": [f"e{i}" for i in range(5)], "hard": [f"h{i}" for i in range(3)]}


def test_weight_moves_to_the_lagging_family_and_state_round_trips():
    bal = TaskBalancer(_families(), seed=0, lam=0.2, beta=1.0)
    assert bal.weights == {"easy": 0.5, "hard": 0.5}
    metrics = bal.update({"easy": [[1.0, 1.0], [1.0, 0.0]], "hard": [[0.0, 0.0], [0.0, 0.0]]})
    # first update: I = 0, s = lambda * J = (0.15, 0); g = z (s - z.s) = (0.0375, -0.0375)
    assert metrics["multitask/weight/hard"] == pytest.approx(float(np.exp(0.0375) / (np.exp(0.0375) + np.exp(-0.0375))))
    assert metrics["multitask/reward/easy"] == pytest.approx(0.75)
    # the zero-gradient rate: one of easy's two groups, both of hard's, were all-equal
    assert metrics["multitask/zero_gradient_rate/easy"] == pytest.approx(0.1 * 0.5)
    assert metrics["multitask/zero_gradient_rate/hard"] == pytest.approx(0.1 * 1.0)
    # second update: easy did not improve, hard did: the improvement term moves weight back
    before = bal.weights["hard"]
    bal.update({"hard": [[1.0, 1.0]]})
    assert bal.weights["hard"] < before
    clone = TaskBalancer(_families(), seed=0)
    clone.load_state_dict(json.loads(json.dumps(bal.state_dict())))
    assert clone.weights == pytest.approx(bal.weights) and clone.last_reward == bal.last_reward


def test_targets_follow_the_weights_and_each_family_walks_its_own_permutation():
    bal = TaskBalancer(_families(), seed=3)
    bal.xi = np.array([0.0, np.log(3.0)])  # z = (0.25, 0.75)
    counts = np.array([[bal.targets(16, step).get(k, 0) for k in ("easy", "hard")] for step in range(400)])
    assert (counts.sum(1) == 16).all()
    assert counts.mean(0) == pytest.approx([4.0, 12.0], abs=0.3)
    assert bal.targets(16, 7) == bal.targets(16, 7), "a step's draw is a function of (seed, step)"
    first = bal.next_tasks("hard", 3)
    assert sorted(first) == ["h0", "h1", "h2"], "one epoch visits every task of the family once"
    assert sorted(bal.next_tasks("hard", 3)) == ["h0", "h1", "h2"]


def test_families_come_from_a_metadata_field():
    env = make("turngym/FrozenLake-v0")
    split = env.unwrapped.suite.split("train")
    families = task_families(split, "optimal_moves")
    assert sum(len(v) for v in families.values()) == len(split) and len(families) >= 3
    with pytest.raises(ValueError, match="no metadata field 'kind'"):
        task_families(split, "kind")


def test_trainer_balances_families_refills_and_resumes(tmp_path, train_config):
    cfg = train_config("mt", run__steps=2, multitask__key="optimal_moves", multitask__beta=1.0,
                       run__dynamic_sampling="true", run__max_refill_rounds=1, run__overlong_cache_tokens=8)
    trainer = Trainer(cfg)
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "mt" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "rollout/reward_mean" in r]
    assert len(steps) == 2
    for r in steps:
        weights = {k: v for k, v in r.items() if k.startswith("multitask/weight/")}
        assert len(weights) == len(trainer.balancer.names) and sum(weights.values()) == pytest.approx(1.0)
        assert "rollout/refill_rounds" in r
    assert steps[1]["multitask/weight/" + trainer.balancer.names[0]] != pytest.approx(1 / len(trainer.balancer.names))
    state = json.loads((tmp_path / "mt" / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["multitask"] == json.loads(json.dumps(trainer.balancer.state_dict()))
    resumed = Trainer(train_config("mt", run__steps=3, multitask__key="optimal_moves", multitask__beta=1.0,
                                   run__dynamic_sampling="true", run__max_refill_rounds=1, run__overlong_cache_tokens=8),
                      resume=True)
    assert resumed.balancer.state_dict() == state["multitask"]


def test_overlong_shaping_penalises_turns_near_the_length_limit(train_config):
    cfg = train_config("ol", run__overlong_cache_tokens=8, estimator__name="dr_grpo")
    trainer = Trainer(cfg)
    trajs, _ = trainer.collect()
    lengths = [len(turn.response_ids) for t in trajs for turn in t.turns]
    assert max(lengths) == 24, "a random tiny model runs to max_tokens"
    cfg_off = train_config("ol-off", estimator__name="dr_grpo")
    plain = Trainer(cfg_off).advantages(TurnTable.from_trajectories(trajs))
    shaped = trainer.advantages(TurnTable.from_trajectories(trajs))
    assert not np.allclose(plain, shaped)
    # Dr. GRPO on returns: each trajectory's shift is its summed turn penalties (0 up to 16
    # tokens, -1 at 24) minus its group's mean of them, on every one of its turns
    penalty = {t.traj_id: sum(min(0.0, (16 - len(u.response_ids)) / 8) for u in t.turns) for t in trajs}
    assert any(p < 0 for p in penalty.values())
    group_mean = {g: np.mean([penalty[t.traj_id] for t in trajs if t.group_id == g]) for g in {t.group_id for t in trajs}}
    expected = [penalty[t.traj_id] - group_mean[t.group_id] for t in trajs for _ in t.turns]
    assert shaped - plain == pytest.approx(expected, abs=1e-9)
