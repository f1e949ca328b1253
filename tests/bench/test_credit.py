"""The credit-assignment bench's statistics (bench/credit.py), held to hand-computed values,
and the step-group measure held to what GiGPO actually does with the same rows."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from turngym.trainers.estimators import RowBatch, discounted_returns, estimate

ROOT = Path(__file__).resolve().parents[2]


def load_credit_module():
    spec = importlib.util.spec_from_file_location("bench_credit", ROOT / "bench" / "credit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_credit"] = module
    spec.loader.exec_module(module)
    return module


credit = load_credit_module()


def test_step_group_stats_by_hand():
    # group g1: anchor A twice, B once; g2: A once (another group: not in g1's step group).
    out = credit.step_group_stats(["g1", "g1", "g1", "g2"], ["A", "A", "B", "A"], [1.0, 0.0, 1.0, 1.0])
    assert out["turns"] == 4 and out["step_groups"] == 3
    assert out["share_in_multi"] == pytest.approx(0.5)
    assert out["mean_size"] == pytest.approx(4 / 3)
    assert out["turn_weighted_size"] == pytest.approx((2 + 2 + 1 + 1) / 4)
    assert out["share_informative"] == pytest.approx(0.5)  # the A pair's returns differ
    same = credit.step_group_stats(["g1", "g1"], ["A", "A"], [1.0, 1.0])
    assert same["share_in_multi"] == 1.0 and same["share_informative"] == 0.0


def test_step_group_stats_uses_canonical_anchors():
    # dict anchors in another key order are the same state; a list equals its tuple
    out = credit.step_group_stats(["g"] * 3, [{"x": 1, "y": 2}, {"y": 2, "x": 1}, [1, 2]])
    assert out["step_groups"] == 2 and out["share_in_multi"] == pytest.approx(2 / 3)
    assert "share_informative" not in out
    assert math.isnan(credit.step_group_stats([], [])["share_in_multi"])


def test_informative_share_is_where_gigpo_step_advantage_is_nonzero():
    rng = np.random.default_rng(0)
    n = 400
    groups = rng.integers(0, 5, n)
    trajs = rng.integers(0, 4, n)
    steps = np.arange(n)  # unique, ordered within each (group, traj)
    rewards = (rng.random(n) < 0.2).astype(float)
    anchors = [f"s{a}" for a in rng.integers(0, 12, n)]
    batch = RowBatch.build(rewards, groups, trajs, steps)
    returns = discounted_returns(batch.rewards, batch.traj, batch.positions, 0.9)
    out = credit.step_group_stats(groups, anchors, returns)
    args = (rewards, groups, trajs, steps)
    step_part = (estimate("gigpo", *args, anchors=anchors, gamma=0.9)
                 - estimate("gigpo", *args, anchors=anchors, gamma=0.9, omega=0.0))
    assert 0 < out["share_informative"] < out["share_in_multi"] <= 1
    assert out["share_informative"] == pytest.approx(np.mean(np.abs(step_part) > 1e-9))


def test_advantage_stats():
    out = credit.advantage_stats([0.0, 1.0, -1.0, 0.0])
    assert out["var"] == pytest.approx(0.5) and out["abs_mean"] == pytest.approx(0.5)
    assert out["share_nonzero"] == pytest.approx(0.5)


def test_mean_ci_is_a_student_t_interval():
    m, lo, hi = credit.mean_ci([0.0, 1.0])
    assert m == 0.5 and hi - m == pytest.approx(12.706 * math.sqrt(0.5) / math.sqrt(2))
    m, lo, hi = credit.mean_ci([0.3, 0.4, 0.5, 0.6, 0.7])
    assert (lo + hi) / 2 == pytest.approx(0.5) and hi - m == pytest.approx(2.776 * np.std([3, 4, 5, 6, 7], ddof=1) / 10 / math.sqrt(5))
    assert credit.mean_ci([0.4]) == (0.4, 0.4, 0.4)


def test_sign_flip_p_exact():
    assert credit.sign_flip_p([0.1, 0.2, 0.1, 0.3, 0.05]) == pytest.approx(2 / 32)  # the floor for 5 seeds
    assert credit.sign_flip_p([1.0, -1.0]) == pytest.approx(1.0)
    assert credit.sign_flip_p([0.0, 0.0, 0.0]) == pytest.approx(1.0)
    # [3, 1, -1]: |sum| 3; enumerate the 8 sign patterns independently of the implementation
    patterns = [abs(a * 3 + b * 1 + c * -1) for a in (1, -1) for b in (1, -1) for c in (1, -1)]
    assert credit.sign_flip_p([3.0, 1.0, -1.0]) == pytest.approx(np.mean([p >= 3 for p in patterns]))


def test_paired_by_seed_uses_common_seeds():
    out = credit.paired_by_seed({0: 0.5, 1: 0.6, 2: 0.9}, {0: 0.4, 1: 0.6, 3: 0.1})
    assert out["n"] == 2 and out["diffs"] == pytest.approx([0.1, 0.0])
    assert out["a_better"] == 1 and out["ties"] == 1
    assert credit.paired_by_seed({0: 0.5}, {1: 0.5}) == {"n": 0}


def test_pooled_task_bootstrap():
    a = {0: {"t1": 1.0, "t2": 1.0, "t3": 0.0}, 1: {"t1": 1.0, "t2": 0.0, "t3": 0.0}}
    b = {0: {"t1": 0.0, "t2": 1.0, "t3": 0.0}, 1: {"t1": 0.0, "t2": 0.0, "t3": 0.0}}
    out = credit.pooled_task_bootstrap(a, b)
    assert out["n_seeds"] == 2 and out["n_tasks"] == 3
    assert out["mean"] == pytest.approx(1 / 3)  # t1 differs by 1 on both seeds, the others by 0
    assert out["ci"][0] >= 0.0 and out["ci"][1] <= 1.0
    same = credit.pooled_task_bootstrap(a, a)
    assert same["mean"] == 0.0 and same["ci"] == [0.0, 0.0]


def test_steps_to_threshold():
    points = [(0, 0.3), (10, 0.38), (20, 0.45), (30, 0.41)]
    assert credit.steps_to_threshold(points, 0.4) == 20
    assert credit.steps_to_threshold(points, 0.5) is None


@pytest.mark.slow
def test_bench_end_to_end_and_resume(tmp_path):
    """A two-step bench on 4x4 FrozenLake: runs, diagnostics and tables are written, and a
    second call trains nothing and reports the same numbers."""
    import subprocess

    out = tmp_path / "credit"
    cmd = [sys.executable, str(ROOT / "bench" / "credit.py"), "--out", str(out), "--steps", "2", "--eval-every", "1",
           "--eval-tasks", "4", "--seeds", "0", "1", "--diag-steps", "1",
           "--set", "env.id=turngym/FrozenLake-v0", "--set", "env.kwargs={max_turns: 6}",
           "--set", "policy.model=tiny-markov:hidden=32,layers=1,heads=2,seed=0",
           "--set", "sft.steps=2", "--set", "sft.episodes=5", "--set", "run.tasks_per_step=2",
           "--set", "rollout.group_size=4"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    summary = json.loads((out / "summary.json").read_text())["summary"]
    warm = json.loads((out / "warm-start" / "diagnostics.json").read_text())
    assert set(summary["estimators"]) == set(credit.ESTIMATORS)
    assert all(e["n"] == 2 for e in summary["estimators"].values())
    assert 0.0 <= warm["diagnostics"]["step_groups/share_in_multi"] <= 1.0
    # every run starts from the one warm start: step 0 of each curve is its evaluation
    curves = json.loads((out / "summary.json").read_text())["curves"]
    assert {c[0][1] for by_seed in curves.values() for c in by_seed.values()} == {warm["after"]["eval/success_rate"]}
    assert all(c[-1][0] == 2 for by_seed in curves.values() for c in by_seed.values())
    metrics = (out / "grpo-seed0" / "metrics.jsonl").read_text()
    assert "credit/step_groups/share_in_multi" in metrics and "credit/adv/var" in metrics
    assert "| gigpo - grpo | 2 |" in (out / "credit.md").read_text()
    assert "sign-flip p" in (out / "credit.md").read_text() and (out / "credit.png").exists()
    stamp = (out / "gigpo-seed1" / "bench.json").stat().st_mtime
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    assert (out / "gigpo-seed1" / "bench.json").stat().st_mtime == stamp  # resumed: nothing retrained
    assert json.loads((out / "summary.json").read_text())["summary"] == summary


def test_a_resumed_bench_refuses_another_recipe(tmp_path):
    from turngym.config import load_config
    from turngym.trainers.config import TrainConfig

    base = load_config(TrainConfig, None, ["policy.model=tiny-markov", "run.steps=20"])
    saved = tmp_path / "config.json"
    credit.check_same_recipe(base, saved)  # nothing saved yet: nothing to compare
    saved.write_text(json.dumps(base.model_dump(mode="json")))
    credit.check_same_recipe(load_config(TrainConfig, None, ["policy.model=tiny-markov", "run.steps=40"]), saved)
    with pytest.raises(SystemExit, match="optim"):
        credit.check_same_recipe(load_config(TrainConfig, None, ["policy.model=tiny-markov", "optim.lr=1e-2"]), saved)
