"""Scripted policies that read the episodes: run by the rollout engine like a model, they get the
same prompts and Turns, see each episode (observation, info, environment, own state) and may end
one with no reply."""

from __future__ import annotations

import pytest

from turngym.agents.policy import SamplingParams
from turngym.agents.rollout import RolloutConfig, RolloutEngine
from turngym.agents.scripted import EpisodePolicy, ScriptedPolicy, per_episode


def engine(probe, suite, policy, tokenizer=None, **kw) -> RolloutEngine:
    config = RolloutConfig(**{"progress": False, "group_size": 2, "concurrency": 2, **kw})
    return RolloutEngine(policy, lambda: probe.Env(suite=suite), tokenizer, config)


def without_timings(trajs) -> list[dict]:
    dumped = [t.model_dump() for t in trajs]
    for traj in dumped:
        for turn in traj["turns"]:
            turn.pop("generate_s"), turn.pop("env_s")
    return dumped


def test_an_episode_policy_gets_the_prompts_and_turns_a_model_gets(probe, tokenizer):
    suite = probe.suite({"id": "a", "length": 2}, {"id": "b", "length": 3})
    scripted = engine(probe, suite, ScriptedPolicy([probe.reply], tokenizer=tokenizer), tokenizer).run(["a", "b"])
    reading = engine(probe, suite, EpisodePolicy(lambda view: probe.reply, tokenizer), tokenizer).run(["a", "b"])
    assert without_timings(reading) == without_timings(scripted)


def test_an_episode_policy_sees_each_episode_and_keeps_its_own_state(probe, tokenizer):
    seen = []

    def act(view):
        view.state["turns"] = view.state.get("turns", 0) + 1  # kept by the engine for this episode
        seen.append((view.traj_id, view.turn, view.state["turns"], view.observation, view.info.get("anchor"),
                     view.env.pos, view.seed))
        return probe.reply

    trajs = engine(probe, probe.suite({"id": "a", "length": 2}), EpisodePolicy(act, tokenizer), tokenizer).run(["a"])
    for traj in trajs:
        mine = [s for s in seen if s[0] == traj.traj_id]
        assert [s[1] for s in mine] == [0, 1] == [t.step for t in traj.turns]
        assert [s[2] for s in mine] == [1, 2]
        # the latest observation and info: the reset's, then the step's; the true state of the env
        assert [s[3] for s in mine] == [traj.initial_observation, traj.turns[0].observation]
        assert [s[4] for s in mine] == ["pos=0", "pos=1"] and [s[5] for s in mine] == [0, 1]
        assert {s[6] for s in mine} == {traj.seed}


def test_no_reply_ends_that_episode_without_a_step(probe, tokenizer):
    def act(view):  # task b's expert runs out of moves after one turn
        return None if view.task_id == "b" and view.turn == 1 else probe.reply

    suite = probe.suite({"id": "a", "length": 3}, {"id": "b", "length": 3})
    a, b = engine(probe, suite, EpisodePolicy(act, tokenizer), tokenizer, group_size=1).run(["a", "b"])
    assert (a.status, a.success, len(a.turns)) == ("ok", True, 3)
    assert (b.status, b.success, len(b.turns)) == ("truncated", False, 1)
    assert sorted(env.turn for env in probe.Env.created) == [1, 3]  # b's environment stepped once
    assert all(env.closed.is_set() for env in probe.Env.created)


def test_per_episode_starts_a_fresh_actor_for_each_episode(probe):
    class Actor:
        made = []

        def __init__(self, seed):
            self.seed, self.task, self.calls = seed, None, 0
            Actor.made.append(self)

        def start(self, task):
            self.task = task

        def act(self, observation, info):
            self.calls += 1
            return probe.reply

    trajs = engine(probe, probe.suite({"id": "a", "length": 2}), EpisodePolicy(per_episode(lambda v: Actor(v.seed)))).run(["a"])
    assert sorted(a.seed for a in Actor.made) == sorted(t.seed for t in trajs)
    assert [(a.task.id, a.calls) for a in Actor.made] == [("a", 2), ("a", 2)]


def test_an_episode_policy_outside_the_engine_says_so():
    with pytest.raises(ValueError, match="run it with the rollout engine"):
        EpisodePolicy(lambda view: "x").generate([[{"role": "user", "content": "hi"}]], SamplingParams())
