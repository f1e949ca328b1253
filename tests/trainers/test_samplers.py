"""Samplers behind one protocol, on a rollout engine double: which tasks each step rolls out,
what it keeps, its data state, and DAPO's refill."""

import pytest

from turngym.agents.trajectory import Trajectory, Turn
from turngym.trainers.data import TaskCursor
from turngym.trainers.distributed import SingleProcess
from turngym.trainers.samplers import DynamicSampler, PlainSampler


class Tasks:
    """Training tasks double: task i is ``"t<i>"``."""

    def take(self, start, count):
        return [f"t{i}" for i in range(start, start + count)]


class Engine:
    """Rolls out each task as a group of two one-turn episodes whose rewards ``rewards(task)`` gives;
    a task named in ``errors`` errors in its first episode."""

    def __init__(self, rewards, errors=()):
        self.rewards, self.errors, self.calls = rewards, set(errors), []

    def run(self, tasks, run_index=0):
        self.calls.append((list(tasks), run_index))
        return [Trajectory(traj_id=f"{k}", group_id=f"{run_index}/{task}", task_id=task,
                           turns=[Turn(step=0, reward=r)], status="error" if task in self.errors and k == 0 else "ok")
                for task in tasks for k, r in enumerate(self.rewards(task))]


def test_plain_sampling_takes_the_next_tasks_and_drops_errored_episodes():
    engine = Engine(lambda task: [1.0, 0.0], errors={"t1"})
    sampler = PlainSampler(engine, TaskCursor(Tasks()), tasks_per_step=3, dist=SingleProcess(), model=None)
    batch = sampler.next_batch(step=4)
    assert engine.calls == [(["t0", "t1", "t2"], 4)]
    assert [t.task_id for t in batch.trajectories] == ["t0", "t0", "t1", "t2", "t2"]
    assert batch.metrics["rollout/episodes"] == 6 and batch.metrics["rollout/error_episodes"] == 1
    assert batch.state == {"cursor": 3} and sampler.behaviour_logprobs == "recompute"
    assert sampler.next_batch(step=5).state == {"cursor": 6}
    sampler.load_state_dict({"cursor": 30})
    sampler.next_batch(step=6)
    assert engine.calls[-1] == (["t30", "t31", "t32"], 6)


def test_dynamic_sampling_drops_flat_groups_and_refills_from_the_cursor():
    flat = {"t0", "t2", "t3"}  # all-equal groups: no gradient
    engine = Engine(lambda task: [1.0, 1.0] if task in flat else [1.0, 0.0])
    sampler = DynamicSampler(engine, TaskCursor(Tasks()), tasks_per_step=3, dist=SingleProcess(), model=None,
                             max_refill_rounds=3)
    batch = sampler.next_batch(step=2)
    # round 0: t0..t2 (t1 kept); round 1: two more (t3 flat, t4 kept); round 2: one more (t5)
    assert engine.calls == [(["t0", "t1", "t2"], 8), (["t3", "t4"], 9), (["t5"], 10)]
    assert sorted({t.task_id for t in batch.trajectories}) == ["t1", "t4", "t5"]
    assert batch.metrics["rollout/refill_rounds"] == 2 and batch.metrics["rollout/episodes"] == 12
    assert batch.state == {"cursor": 6}


@pytest.mark.parametrize("rounds", [0, 1])
def test_dynamic_sampling_stops_after_its_refill_rounds(rounds):
    engine = Engine(lambda task: [0.0, 0.0])
    sampler = DynamicSampler(engine, TaskCursor(Tasks()), tasks_per_step=2, dist=SingleProcess(), model=None,
                             max_refill_rounds=rounds)
    batch = sampler.next_batch(step=0)
    assert batch.trajectories == [] and len(engine.calls) == rounds + 1
    assert batch.metrics["rollout/refill_rounds"] == rounds
