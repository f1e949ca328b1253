"""Asynchronous rollouts with bounded staleness: the schedule, and the trainer end to end."""

import json
import threading

import pytest
import torch

from turngym.trainers.async_rollout import RolloutPrefetcher
from turngym.trainers.trainer import Trainer


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _drive(max_staleness: int, steps: int, first_step: int = 0):
    """Train-loop stand-in: take batch k, 'update', publish version k + 1; record what generated what."""
    loaded: list[int] = []
    generated_with: dict[int, int] = {}

    def collect(step):
        generated_with[step] = loaded[-1]
        return f"batch-{step}"

    pre = RolloutPrefetcher(collect, lambda state: loaded.append(state["version"]), {"version": first_step},
                            first_step=first_step, max_staleness=max_staleness, stop_step=first_step + steps)
    out = []
    for k in range(first_step, first_step + steps):
        batch = pre.get(k)
        out.append((batch.step, batch.weights_version, batch.result))
        pre.publish(k + 1, {"version": k + 1})
    pre.close()
    return out, generated_with


@pytest.mark.parametrize("staleness, versions", [(0, [0, 1, 2, 3, 4]), (1, [0, 0, 1, 2, 3]), (2, [0, 0, 0, 1, 2])])
def test_batch_k_is_generated_with_exactly_the_weights_of_step_k_minus_staleness(staleness, versions):
    out, generated_with = _drive(staleness, 5)
    assert [v for _, v, _ in out] == versions
    assert [generated_with[k] for k in range(5)] == versions, "the producer loaded exactly those weights"
    assert [r for *_, r in out] == [f"batch-{k}" for k in range(5)]


def test_a_resumed_schedule_starts_from_the_current_weights():
    out, _ = _drive(1, 3, first_step=7)
    assert [(s, v) for s, v, _ in out] == [(7, 7), (8, 7), (9, 8)]


def test_a_producer_error_is_raised_by_get_and_the_thread_stops():
    def collect(step):
        if step == 1:
            raise RuntimeError("environment pool died")
        return step

    pre = RolloutPrefetcher(collect, lambda state: None, {}, first_step=0, max_staleness=1)
    assert pre.get(0).result == 0
    with pytest.raises(RuntimeError, match="environment pool died"):
        pre.get(1)
    pre.close()
    assert not any(t.name == "turngym-rollout-prefetch" and t.is_alive() for t in threading.enumerate())


def test_async_training_is_reproducible_logs_staleness_and_resumes(tmp_path, train_config):
    overrides = dict(run__async_rollouts="true", run__max_staleness=1, run__deterministic="false")
    a = Trainer(train_config("a", run__steps=3, **overrides))
    a.train()
    b = Trainer(train_config("b", run__steps=3, **overrides))
    b.train()
    pa, pb = _params(a.model), _params(b.model)
    assert all(torch.equal(pa[k], pb[k]) for k in pa), "a fixed staleness schedule makes async runs reproducible"
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "rollout/reward_mean" in r]
    assert [r["rollout/staleness"] for r in steps] == [0, 1, 1]
    assert all(r["rollout/episodes"] == 12 for r in steps)
    # rollouts of steps 2 and 3 came from weights one update old: the ratio sees the difference
    stale = [r for r in steps if r["rollout/staleness"] == 1 and "train/rollout_train_gap_abs_mean" in r]
    assert stale and all(r["train/rollout_train_gap_abs_mean"] > 1e-5 for r in stale)
    # the checkpoint holds the cursor of the batches trained on, not of the one prefetched
    state = json.loads((tmp_path / "a" / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert state["cursor"] == 3 * 3 == a.trained_cursor
    resumed = Trainer(train_config("a", run__steps=4, **overrides), resume=True)
    assert resumed.step == 3 and resumed.cursor == 9
    resumed.train()
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollout/staleness"] for r in records if "rollout/reward_mean" in r] == [0, 1, 1, 0]
