"""The batched rollout engine: batching, records, seeding, error isolation, env pool."""

from __future__ import annotations

import json
import random

import pytest

from turngym.agents import read_jsonl, write_jsonl
from turngym.agents.env_pool import ResetRequest, StepRequest, ThreadEnvPool
from turngym.agents.rollout import RolloutConfig, RolloutEngine, derive_seed, rollout, rollout_stats
from turngym.agents.scripted import ScriptedPolicy


def cfg(**kw) -> RolloutConfig:
    return RolloutConfig(**{"progress": False, "group_size": 2, "concurrency": 4, **kw})


def engine_for(probe, suite, policy, tokenizer=None, **kw) -> RolloutEngine:
    return RolloutEngine(policy, lambda: probe.Env(suite=suite), tokenizer, cfg(**kw))


def test_every_round_is_one_batched_generate_and_finished_episodes_leave(probe, tokenizer):
    suite = probe.suite({"id": "a", "length": 1}, {"id": "b", "length": 2}, {"id": "c", "length": 4})
    policy = ScriptedPolicy([probe.reply], tokenizer=tokenizer)
    trajs = engine_for(probe, suite, policy, tokenizer, group_size=3).run(["a", "b", "c"])
    # 9 episodes; a's leave after round 1, b's after round 2, c's after round 4
    assert policy.batch_sizes == [9, 6, 3, 3]
    assert [len(t.turns) for t in trajs] == [1] * 3 + [2] * 3 + [4] * 3
    assert all(t.status == "ok" and t.success for t in trajs)
    assert [t.traj_id for t in trajs[:3]] == ["a@s0r0/0", "a@s0r0/1", "a@s0r0/2"]
    assert {t.group_id for t in trajs} == {"a@s0r0", "b@s0r0", "c@s0r0"}
    assert all(len({t.group_id for t in trajs[i:i + 3]}) == 1 for i in (0, 3, 6))


def test_turn_records_hold_exact_ids_rewards_anchors_and_strata(probe, tokenizer):
    suite = probe.suite({"id": "a", "length": 3, "reward": 0.5})
    replies = iter(["not a call", probe.reply, probe.reply, probe.reply])
    policy = ScriptedPolicy(lambda text, seed: next(replies), tokenizer=tokenizer)
    (traj,) = engine_for(probe, suite, policy, tokenizer, group_size=1).run(["a"])
    eos = tokenizer.eos_token_id
    assert [t.response_ids for t in traj.turns] == [
        tokenizer.encode(r, add_special_tokens=False) + [eos] for r in ["not a call"] + [probe.reply] * 3
    ]
    assert all(len(t.logprobs) == len(t.response_ids) for t in traj.turns)
    for turn in traj.turns:  # the prompt ids are the rendered prompt, exactly
        assert tokenizer.decode(turn.prompt_ids) == turn.prompt_text
        assert turn.prompt_text.startswith("<|im_start|>system\nAdvance the counter")
    assert [t.action_valid for t in traj.turns] == [False, True, True, True]
    assert [t.reward for t in traj.turns] == [0.0, 0.5, 0.5, 0.5]
    # anchor = the state the action was taken in: reset info, then the previous step's info
    assert [t.anchor for t in traj.turns] == ["pos=0", "pos=0", "pos=1", "pos=2"]
    assert [t.stratum for t in traj.turns] == [0, 1, 2, 3]
    assert traj.turns[1].tool_calls == [{"name": "advance", "arguments": {"by": 1}}]
    assert traj.turns[-1].info["noise"] > 0 and traj.turns[-1].info["success"] is True
    assert [t.info["memory_shown"] for t in traj.turns] == [0, 1, 2, 3]
    assert {t.info["finish_reason"] for t in traj.turns} == {"stop"}
    assert traj.initial_observation.startswith("Task a: reach 3.")
    # the invalid reply's error went back to the model as a user message; tool output as a tool message
    assert "<|im_start|>user\ninvalid:" in traj.turns[1].prompt_text
    assert "<tool_response>\n<tool_output>pos=1</tool_output>" in traj.turns[2].prompt_text
    assert traj.total_reward == pytest.approx(1.5)


def random_player(probe):
    """Picks valid or invalid replies from the sampling seed, as a sampling model would."""

    def reply(text: str, seed: int | None) -> str:
        rng = random.Random(seed)
        return probe.reply.replace('"by": 1', f'"by": {rng.choice([1, 2])}') if rng.random() < 0.7 else "hmm"

    return reply


def dump(trajs) -> list[dict]:
    rows = []
    for t in trajs:
        row = t.model_dump()
        for turn in row["turns"]:
            turn.pop("generate_s"), turn.pop("env_s")
        rows.append(row)
    return rows


def test_same_seed_gives_identical_trajectories_and_other_seeds_differ(probe, tokenizer):
    suite = probe.suite({"id": "a", "length": 5}, {"id": "b", "length": 4})

    def run(seed: int):
        policy = ScriptedPolicy(random_player(probe), tokenizer=tokenizer)
        return dump(engine_for(probe, suite, policy, tokenizer, group_size=4, seed=seed).run(["a", "b"]))

    first, again, other = run(3), run(3), run(4)
    assert first == again
    assert first != other
    # the G samples of a task differ from each other (their own seeds)
    assert len({r["seed"] for r in first}) == 8
    assert len({json.dumps([t["response_text"] for t in r["turns"]]) for r in first[:4]}) > 1


def test_seeds_derive_from_run_seed_run_index_task_and_sample():
    assert derive_seed(0, 0, "a", 1) == derive_seed(0, 0, "a", 1)
    assert len({derive_seed(s, r, t, g) for s in (0, 1) for r in (0, 1) for t in "ab" for g in (0, 1)}) == 16


def test_a_later_run_of_the_same_engine_uses_new_seeds_and_group_ids(probe, tokenizer):
    suite = probe.suite({"id": "a", "length": 2})
    engine = engine_for(probe, suite, ScriptedPolicy([probe.reply], tokenizer=tokenizer), tokenizer)
    first, second = engine.run(["a"]), engine.run(["a"])
    assert first[0].group_id == "a@s0r0" and second[0].group_id == "a@s0r1"
    assert first[0].seed != second[0].seed


def test_repeated_task_in_one_run_gets_its_own_group(probe):
    suite = probe.suite({"id": "a", "length": 1})
    trajs = engine_for(probe, suite, ScriptedPolicy([probe.reply])).run(["a", "a"])
    assert [t.group_id for t in trajs] == ["a@s0r0"] * 2 + ["a@s0r0#1"] * 2
    assert len({t.seed for t in trajs}) == 4


def test_env_errors_and_deadlines_end_only_their_episode(probe, tokenizer):
    suite = probe.suite(
        {"id": "ok", "length": 3},
        {"id": "boom", "length": 5, "raise_at": 2},
        {"id": "hang", "length": 5, "hang_at": 1},
        {"id": "noreset", "raise_on_reset": True},
    )
    policy = ScriptedPolicy([probe.reply], tokenizer=tokenizer)
    engine = engine_for(probe, suite, policy, tokenizer, step_timeout_s=1.0, group_size=2)
    trajs = engine.run(["ok", "boom", "hang", "noreset"])
    by_task = {t.task_id: t for t in trajs}
    assert [t.status for t in trajs] == ["ok", "ok", "error", "error", "error", "error", "error", "error"]
    assert by_task["boom"].error == "step raised RuntimeError: step 2 exploded" and len(by_task["boom"].turns) == 1
    assert "deadline of 1s" in by_task["hang"].error and by_task["hang"].turns == []
    assert "reset raised RuntimeError: reset exploded" == by_task["noreset"].error
    assert all(len(t.turns) == 3 and t.success for t in trajs[:2])  # the healthy ones went on
    stats = rollout_stats(trajs)
    # errored episodes are failures, as in evaluation (not left out of the rate)
    assert stats["error"] == 6 and stats["ok"] == 2 and stats["success_rate"] == 2 / 8
    # every environment that was made is closed, the stuck ones once their call returns
    healthy = [e for e in probe.Env.created if e.task is None or e.task.id != "hang"]
    assert all(e.closed.is_set() for e in healthy)
    stuck = [e for e in probe.Env.created if e.task is not None and e.task.id == "hang"]
    assert len(stuck) == 2 and not any(e.closed.is_set() for e in stuck)
    probe.release.set()
    assert all(e.closed.wait(timeout=10) for e in stuck)


def test_max_turns_override_truncates(probe):
    suite = probe.suite({"id": "a", "length": 9})
    trajs = engine_for(probe, suite, ScriptedPolicy([probe.reply]), max_turns=2).run(["a"])
    assert [(t.status, len(t.turns), t.success) for t in trajs] == [("truncated", 2, False)] * 2


def test_env_side_truncation_is_recorded(probe):
    suite = probe.suite({"id": "a", "length": 9})
    trajs = RolloutEngine(ScriptedPolicy(["nope"]), lambda: probe.Env(suite=suite, max_turns=3), None,
                          cfg(group_size=1)).run(["a"])
    assert trajs[0].status == "truncated" and len(trajs[0].turns) == 3
    assert not any(t.action_valid for t in trajs[0].turns)


def test_text_mode_sends_chat_messages_and_records_no_ids(probe):
    suite = probe.suite({"id": "a", "length": 2})
    seen = []
    policy = ScriptedPolicy(lambda text, seed: seen.append(text) or probe.reply)
    trajs = rollout(policy, lambda: probe.Env(suite=suite), ["a"], config=cfg(group_size=1))
    assert trajs[0].status == "ok" and all(t.prompt_ids == [] and t.response_ids == [] for t in trajs[0].turns)
    assert seen[0].startswith("system: Advance the counter") and "<tools>" in seen[0]
    assert "user: <tool_output>pos=1</tool_output>" in seen[1]


def test_trajectories_round_trip_through_jsonl(probe, tokenizer, tmp_path):
    suite = probe.suite({"id": "a", "length": 2}, {"id": "b", "raise_at": 1})
    policy = ScriptedPolicy([probe.reply], tokenizer=tokenizer)
    trajs = engine_for(probe, suite, policy, tokenizer).run(["a", "b"])
    write_jsonl(trajs, tmp_path / "r.jsonl")
    back = list(read_jsonl(tmp_path / "r.jsonl"))
    assert [t.model_dump() for t in back] == [t.model_dump() for t in trajs]
    assert [t.status for t in back] == ["ok", "ok", "error", "error"]


def test_tuple_anchors_stay_hashable_from_env_step_to_the_estimator(probe, tokenizer, tmp_path):
    """#20: an environment's tuple anchors (with numpy scalars) reach the Turn, the JSONL file
    and the estimator as tuples, and give the advantages of the same states as integers."""
    import numpy as np

    from turngym.trainers import estimate
    from turngym.trainers.rows import estimator_inputs

    class TupleProbe(probe.Env):
        def _reset_task(self, task):
            obs, info = super()._reset_task(task)
            return obs, {**info, "anchor": ("pos", (np.int64(0),)), "stratum": ("calls", 0)}

        def _step(self, action):
            obs, reward, done, info = super()._step(action)
            return obs, reward, done, {**info, "anchor": ("pos", (np.int64(self.pos),)), "stratum": ("calls", self.calls)}

    suite = probe.suite({"id": "a", "length": 3}, {"id": "b", "length": 2})
    replies = iter(["not a call"] + [probe.reply] * 20)
    policy = ScriptedPolicy(lambda text, seed: next(replies), tokenizer=tokenizer)
    trajs = RolloutEngine(policy, lambda: TupleProbe(suite=suite), tokenizer, cfg(concurrency=0)).run(["a", "b"])
    anchors = [turn.anchor for t in trajs for turn in t.turns]
    assert all(type(a) is tuple and hash(a) is not None for a in anchors)
    assert anchors[:4] == [("pos", (0,)), ("pos", (0,)), ("pos", (1,)), ("pos", (2,))]
    assert trajs[0].turns[-1].stratum == ("calls", 3)  # one invalid reply, then three advances
    write_jsonl(trajs, tmp_path / "r.jsonl")
    back = list(read_jsonl(tmp_path / "r.jsonl"))
    inputs = estimator_inputs(back)
    assert inputs["anchors"] == anchors
    as_ints = [a[1][0] for a in inputs["anchors"]]
    common = {k: inputs[k] for k in ("rewards", "group_ids", "traj_ids", "steps")}
    assert np.array_equal(estimate("gigpo", **common, anchors=inputs["anchors"]),
                          estimate("gigpo", **common, anchors=as_ints))


def test_policy_returning_the_wrong_count_is_an_error_and_envs_are_closed(probe):
    suite = probe.suite({"id": "a"})

    class Broken:
        def generate(self, prompts, sampling):
            return []

    with pytest.raises(RuntimeError, match="0 completions for 2 prompts"):
        engine_for(probe, suite, Broken()).run(["a"])
    assert probe.Env.created and all(e.closed.is_set() for e in probe.Env.created)


def test_thread_pool_replaces_a_stuck_worker(probe):
    suite = probe.suite({"id": "hang", "hang_at": 1, "length": 2}, {"id": "ok", "length": 2})
    with ThreadEnvPool(lambda: probe.Env(suite=suite), concurrency=1, step_timeout_s=1.0) as pool:
        resets = pool.reset([ResetRequest(0, "hang", 1), ResetRequest(1, "ok", 2)])
        assert [r.error for r in resets] == [None, None]
        assert resets[0].instructions.startswith("Advance") and resets[0].tools[0]["function"]["name"] == "advance"
        first = pool.step([StepRequest(0, probe.reply)])
        assert "deadline" in first[0].error
        # the only worker is stuck; a fresh one must serve the healthy env
        second = pool.step([StepRequest(1, probe.reply), StepRequest(1, probe.reply)])
        assert [r.error for r in second] == [None, None] and second[1].terminated
        unknown = pool.step([StepRequest(7, "x")])
        assert "no environment" in unknown[0].error


def test_episodes_of_one_family_share_one_schema_list_and_its_rendering(probe):
    suite = probe.suite({"id": "a", "length": 1}, {"id": "b", "length": 1})
    with ThreadEnvPool(lambda: probe.Env(suite=suite), concurrency=0) as pool:
        a, b = pool.reset([ResetRequest(0, "a", 1), ResetRequest(1, "b", 2)])
        assert a.tools is b.tools and a.tools == [t.schema() for t in pool.env(1).tools]
    trajs = engine_for(probe, suite, ScriptedPolicy([probe.reply])).run(["a", "b"])
    systems = {t.turns[0].prompt_text.split("\nuser: ")[0] for t in trajs}
    assert len(systems) == 1 and '"name": "advance"' in systems.pop()


def test_progress_bar_counts_episodes_and_errors(probe, monkeypatch):
    import turngym.agents.rollout as rollout_module

    bars = []

    class RecordingBar(rollout_module.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.asked_disable = kwargs["disable"]
            bars.append(self)

    monkeypatch.setattr(rollout_module, "Progress", RecordingBar)
    suite = probe.suite({"id": "a", "length": 1}, {"id": "b", "raise_at": 1})
    engine = RolloutEngine(ScriptedPolicy([probe.reply]), lambda: probe.Env(suite=suite), None,
                           RolloutConfig(group_size=3, progress=True))
    engine.run(["a", "b"])
    (bar,) = bars
    assert bar.total == 6 and bar.n == 6 and bar.asked_disable is False and bar.leave is False
    assert bar.postfix == {"errors": 3}


def test_sokoban_end_to_end(tokenizer):
    import turngym

    policy = ScriptedPolicy(["<action>up</action>", "<action>left</action>"], tokenizer=tokenizer)
    trajs = RolloutEngine(policy, "turngym/Sokoban-v0", tokenizer, cfg(max_turns=3)).run(
        [t.id for t in turngym.envs.load_suite("sokoban-6x6-1").split("train")[:2]])
    assert len(trajs) == 4 and all(t.status in ("ok", "truncated") for t in trajs)
    assert all(isinstance(t.turns[0].anchor, str) and "#" in t.turns[0].anchor for t in trajs)
    assert trajs[0].env_id == "turngym/Sokoban-v0"


def test_run_episodes_uses_the_callers_seeds_and_keeps_their_order(probe):
    from turngym.agents.rollout import EpisodeSpec

    suite = probe.suite({"id": "a", "length": 2}, {"id": "b", "length": 1})
    specs = [EpisodeSpec("b", seed=11, traj_id="x"), EpisodeSpec("a", seed=12, group_id="g"), EpisodeSpec("b", seed=13)]
    engine = engine_for(probe, suite, ScriptedPolicy([probe.reply]))
    trajs = engine.run_episodes(specs)
    assert [(t.task_id, t.seed, t.traj_id, t.group_id) for t in trajs] == [
        ("b", 11, "x", "b"), ("a", 12, "a/1", "g"), ("b", 13, "b/2", "b")]
    expected = probe.Env(suite=suite).reset(seed=12, options={"task": "a"})[0]
    assert trajs[1].initial_observation == expected


def test_an_env_made_after_its_reset_deadline_is_closed_not_leaked(probe):
    suite = probe.suite({"id": "a", "length": 2})
    made = []

    def slow_first_env():
        first = not made
        made.append(None)
        if first:
            probe.release.wait(timeout=30)
        env = probe.Env(suite=suite)
        made[-1 if not first else 0] = env
        return env

    with ThreadEnvPool(slow_first_env, concurrency=2, reset_timeout_s=1.0) as pool:
        results = pool.reset([ResetRequest(0, "a", 1), ResetRequest(1, "a", 2)])
        assert sorted(r.error is None for r in results) == [False, True]
        late = next(r.slot for r in results if r.error)
        assert "deadline" in results[late].error
        probe.release.set()
        assert _wait_for(lambda: isinstance(made[0], probe.Env)) and made[0].closed.wait(timeout=10)
        assert "no environment" in pool.step([StepRequest(late, probe.reply)])[0].error
        assert pool.step([StepRequest(1 - late, probe.reply)])[0].error is None


def _wait_for(condition, timeout: float = 10.0) -> bool:
    import threading
    import time

    deadline = time.monotonic() + timeout
    event = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        event.wait(0.01)  # polling the real condition, not sleeping for readiness
    return True


def test_inline_stepping_gives_the_same_trajectories_as_threads(probe, tokenizer):
    suite = probe.suite({"id": "a", "length": 4}, {"id": "b", "length": 3, "raise_at": 2})

    def run(concurrency: int):
        policy = ScriptedPolicy(random_player(probe), tokenizer=tokenizer)
        return dump(engine_for(probe, suite, policy, tokenizer, group_size=3, concurrency=concurrency).run(["a", "b"]))

    inline, threaded = run(0), run(4)
    assert inline == threaded
    assert [r["status"] for r in inline].count("error") >= 1


def test_inline_step_over_its_deadline_ends_the_episode(probe):
    import threading

    suite = probe.suite({"id": "slow", "hang_at": 1}, {"id": "ok", "length": 1})
    threading.Timer(3.0, probe.release.set).start()  # the "hang" ends after 3 s
    trajs = engine_for(probe, suite, ScriptedPolicy([probe.reply]), group_size=1, concurrency=0,
                       step_timeout_s=1.0).run(["slow", "ok"])
    assert [t.status for t in trajs] == ["error", "ok"]
    assert "deadline of 1s" in trajs[0].error


def test_the_engine_uses_the_policys_tokenizer_by_default(probe, tokenizer):
    suite = probe.suite({"id": "a", "length": 1})
    policy = ScriptedPolicy([probe.reply], tokenizer=tokenizer)
    (traj,) = RolloutEngine(policy, lambda: probe.Env(suite=suite), config=cfg(group_size=1)).run(["a"])
    assert traj.turns[0].prompt_ids and tokenizer.decode(traj.turns[0].prompt_ids) == traj.turns[0].prompt_text


def test_window_memory_bounds_the_prompt_through_the_engine(probe, tokenizer):
    suite = probe.suite({"id": "a", "length": 6})
    policy = ScriptedPolicy([probe.reply], tokenizer=tokenizer)
    (full,) = engine_for(probe, suite, policy, tokenizer, group_size=1).run(["a"])
    (windowed,) = engine_for(probe, suite, policy, tokenizer, group_size=1, memory="window", memory_window=1).run(["a"])
    assert [t.info["memory_shown"] for t in windowed.turns] == [0, 1, 1, 1, 1, 1]
    sizes = [len(t.prompt_ids) for t in windowed.turns]
    assert sizes[2:] == [sizes[2]] * 4  # constant once the window is full
    assert len(full.turns[-1].prompt_ids) > sizes[-1]
    assert "Task a: reach 6." in windowed.turns[-1].prompt_text


def test_any_env_pool_plugs_in_and_a_callers_pool_is_not_closed(probe):
    from turngym.agents.env_pool import EnvPool

    suite = probe.suite({"id": "a", "length": 2})

    class RecordingPool:  # what a Ray actor pool would look like to the engine
        def __init__(self):
            self.inner = ThreadEnvPool(lambda: probe.Env(suite=suite), concurrency=2)
            self.calls = []

        def reset(self, requests):
            self.calls.append(("reset", len(requests)))
            return self.inner.reset(requests)

        def step(self, requests):
            self.calls.append(("step", len(requests)))
            return self.inner.step(requests)

        def release(self, slots):
            self.calls.append(("release", sorted(slots)))
            self.inner.release(slots)

        def close(self):
            self.calls.append(("close",))

    pool = RecordingPool()
    assert isinstance(pool, EnvPool) and isinstance(pool.inner, EnvPool)
    trajs = RolloutEngine(ScriptedPolicy([probe.reply]), pool, None, cfg(group_size=3)).run(["a"])
    assert [t.status for t in trajs] == ["ok"] * 3
    assert pool.calls == [("reset", 3), ("step", 3), ("step", 3), ("release", [0, 1, 2])]
    pool.inner.close()


def test_slow_env_steps_run_concurrently(probe):
    import threading

    suite = probe.suite({"id": "a", "length": 2, "meet": True})
    probe.Env.barrier = threading.Barrier(4)  # a step returns only once 4 steps wait together
    trajs = engine_for(probe, suite, ScriptedPolicy([probe.reply]), group_size=4, concurrency=4).run(["a"])
    assert [t.status for t in trajs] == ["ok"] * 4
    assert not probe.Env.barrier.broken


@pytest.mark.slow
def test_real_tiny_model_turns_hold_exactly_what_it_generated():
    import torch

    from turngym.agents import models
    from turngym.agents.hf import HFPolicy
    from turngym.agents.policy import SamplingParams
    from turngym.envs import load_suite

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tok = models.load_model("tiny:seed=0")
        policy = HFPolicy(model, tok)
        tasks = [t.id for t in load_suite("sokoban-6x6-1").split("train")[:2]]
        config = cfg(group_size=2, max_turns=2, max_tokens=8, seed=1)
        trajs = RolloutEngine(policy, "turngym/Sokoban-v0", config=config).run(tasks)
        assert [t.status for t in trajs] == ["truncated"] * 4
        turn = trajs[0].turns[1]
        assert tok.decode(turn.prompt_ids) == turn.prompt_text and len(turn.logprobs) == len(turn.response_ids)
        # the recorded ids are the policy's own: the same prompt ids and seed give them again
        again = policy.generate([turn.prompt_ids],
                                SamplingParams(max_tokens=8, seeds=[derive_seed(trajs[0].seed, "turn", 1)]))[0]
        assert again.token_ids == turn.response_ids
        assert again.logprobs == pytest.approx(turn.logprobs, abs=1e-4)
    finally:
        torch.set_num_threads(threads)


def test_structured_calls_reach_an_env_that_parses_for_itself_as_its_text(probe):
    """A policy's structured tool calls go to env.step as a ToolAction: an environment that
    reads replies itself (the probe parses the text) acts on the text as before."""
    from turngym.agents.policy import Completion
    from turngym.tools import ToolAction

    sent: list[str] = []

    class Structured:
        def generate(self, prompts, sampling):
            return [Completion(text="", tool_calls=[{"id": "c", "type": "function",
                                                     "function": {"name": "advance", "arguments": '{"by": 1}'}}])
                    for _ in prompts]

    class Seen(probe.Env):
        def _step(self, action):
            sent.append(action)
            return super()._step(action)

    suite = probe.suite({"id": "a", "length": 2})
    engine = RolloutEngine(Structured(), lambda: Seen(suite=suite), None, cfg(group_size=1))
    (traj,) = engine.run(["a"])
    assert traj.success and [t.tool_calls for t in traj.turns] == [[{"name": "advance", "arguments": {"by": 1}}]] * 2
    assert all(isinstance(a, ToolAction) for a in sent) and sent[0] == probe.reply
