"""The warm start's demonstrations: the expert through the rollout engine, recovery turns after a
misspelt reply, and rows pinned to those recorded before (the main job's numbers rest on them)."""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import turngym
from turngym.agents.agent import AgentConfig
from turngym.agents.models import load_model
from turngym.envs.core import TurnEnv
from turngym.envs.tasks import Task, TaskSuite
from turngym.tools.parsers import parse_tool_calls
from turngym.trainers.sft import NoExpertError, collect_demonstrations, misspell

TINY = "tiny-markov:hidden=32,layers=1,heads=2,seed=0"
AGENT = AgentConfig(memory="window", memory_window=0)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(0, 2**32 - 1))
def test_a_misspelling_differs_by_one_edit_and_is_reproducible(reply, seed):
    wrong = misspell(reply, np.random.default_rng(seed))
    assert wrong == misspell(reply, np.random.default_rng(seed))
    if len(wrong) == len(reply):  # one character replaced by another of the reply's characters
        assert sum(a != b for a, b in zip(wrong, reply)) == 1 and set(wrong) <= set(reply)
    else:  # one character deleted
        assert len(wrong) == len(reply) - 1 and any(reply[:i] + reply[i + 1 :] == wrong for i in range(len(reply)))


def _demos(recovery_rate):
    _, tokenizer = load_model(TINY)
    tasks = [t.id for t in turngym.make("turngym/FrozenLake-v0").unwrapped.suite.split("train")[:30]]
    rows = collect_demonstrations("turngym/FrozenLake-v0", tasks, tokenizer, AGENT, {"max_turns": 12}, seed=3,
                                  recovery_rate=recovery_rate)
    prompts = [tokenizer.decode(r.prompt_ids, skip_special_tokens=True) for r in rows]
    replies = [tokenizer.decode(r.response_ids, skip_special_tokens=True) for r in rows]
    return prompts, replies


def test_recovery_demonstrations_answer_the_invalid_reply_observation_with_a_valid_move():
    plain_prompts, plain_replies = _demos(0.0)
    prompts, replies = _demos(0.3)
    assert not any("Invalid action" in p for p in plain_prompts)
    recovering = [r for p, r in zip(prompts, replies) if "Invalid action" in p]
    assert len(recovering) >= 5  # ~30% of turns were preceded by a slip; most slips are invalid
    # only the expert's replies are trained on, never the misspelling that led to the observation
    moves = {f"<action>{m}</action>" for m in ("up", "down", "left", "right")}
    assert set(replies) <= moves and set(recovering) <= moves
    assert _demos(0.3) == (prompts, replies)  # reproducible from the seed


def test_demonstrations_equal_those_recorded_before_the_expert_ran_through_the_engine():
    # Recorded by the collector's own episode loop before #20 made the expert a policy of the
    # rollout engine: the same seed still gives the same prompts, replies and recovery turns.
    pinned = json.loads((Path(__file__).parent / "data" / "sft_demonstrations.json").read_text())
    cfg = pinned["config"]
    _, tokenizer = load_model(cfg["model"])
    tasks = [t.id for t in turngym.make(cfg["env"]).unwrapped.suite.split("train")[: cfg["train_tasks"]]]
    rows = collect_demonstrations(cfg["env"], tasks, tokenizer, AgentConfig(**cfg["agent"]), cfg["env_kwargs"],
                                  seed=cfg["seed"], recovery_rate=cfg["recovery_rate"])
    assert [{"task_id": r.task_id, "prompt_ids": r.prompt_ids, "response_ids": r.response_ids} for r in rows] == pinned["rows"]


@pytest.mark.parametrize("style", ["hermes", "react"])
def test_demonstrations_are_written_in_the_rollout_tool_call_style(style):
    _, tokenizer = load_model(TINY)
    env_id = "turngym/Search-v0"
    tasks = [t.id for t in turngym.make(env_id).unwrapped.suite.split("train")[:2]]
    rows = collect_demonstrations(env_id, tasks, tokenizer, AgentConfig(tool_call_style=style), {"max_turns": 8})
    replies = [tokenizer.decode(r.response_ids, skip_special_tokens=True) for r in rows]
    assert replies and all(parse_tool_calls(reply, style).calls for reply in replies)
    assert all(("<tool_call>" in reply) == (style == "hermes") for reply in replies)


class NoExpertEnv(TurnEnv):
    def __init__(self, **kw):
        super().__init__(suite=TaskSuite("sfttest", [Task(id="t", split="train")]), **kw)

    def _reset_task(self, task):
        return "go", {}

    def _step(self, action):
        return "done", 0.0, True, {}


def test_an_environment_without_an_expert_says_so():
    gym.register("sfttest/NoExpert-v0", NoExpertEnv, disable_env_checker=True)
    _, tokenizer = load_model(TINY)
    with pytest.raises(NoExpertError, match="no expert for NoExpertEnv"):
        collect_demonstrations("sfttest/NoExpert-v0", ["t"], tokenizer, AGENT)


def test_the_warm_start_stops_at_the_first_check_that_reaches_its_target():
    """``sft(check=..., stop_at=...)``: checks every ``check_every`` steps, with the model in eval
    mode, and stops at the first check that reaches the target; without a target it runs on."""
    from turngym.trainers.sft import sft

    model, tokenizer = load_model(TINY)
    tasks = [t.id for t in turngym.make("turngym/FrozenLake-v0").unwrapped.suite.split("train")[:10]]
    rows = collect_demonstrations("turngym/FrozenLake-v0", tasks, tokenizer, AGENT, {"max_turns": 12})
    curve = {5: 0.0, 10: 0.2, 15: 0.35, 20: 0.5, 25: 0.9}
    seen = []

    def check(step):
        seen.append((step, model.training))
        return curve[step]

    metrics = sft(model, tokenizer, rows, steps=30, batch_rows=8, check=check, check_every=5, stop_at=0.3,
                  progress=False)
    assert seen == [(5, False), (10, False), (15, False)] and model.training is False
    assert metrics["sft/steps"] == 15 and metrics["sft/validation_success"] == 0.35
    assert 0 < metrics["sft/check_seconds"] < metrics["sft/seconds"]
    seen.clear()
    metrics = sft(model, tokenizer, rows, steps=30, batch_rows=8, check=check, check_every=5, progress=False)
    assert [s for s, _ in seen] == [5, 10, 15, 20, 25] and metrics["sft/steps"] == 30  # no check at the last step
    seen.clear()
    sft(model, tokenizer, rows, steps=30, batch_rows=8, check=check, check_every=5, check_from=12, progress=False)
    assert [s for s, _ in seen] == [15, 20, 25]


def test_stop_nearest_keeps_the_check_nearer_the_target_with_its_weights():
    """``stop_nearest``: when the first check at the target overshoots it by more than the check
    before fell short, the warm start ends at the earlier check, with the weights it checked."""
    from turngym.trainers.sft import sft

    model, tokenizer = load_model(TINY)
    tasks = [t.id for t in turngym.make("turngym/FrozenLake-v0").unwrapped.suite.split("train")[:10]]
    rows = collect_demonstrations("turngym/FrozenLake-v0", tasks, tokenizer, AGENT, {"max_turns": 12})
    weights = {}

    # 0.25 is 0.05 short of 0.3, 0.6 is 0.3 over: the earlier check wins, weights and all
    curve = {5: 0.0, 10: 0.25, 15: 0.6}
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def check(step):
        weights[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return curve[step]

    metrics = sft(model, tokenizer, rows, steps=30, batch_rows=8, check=check, check_every=5, stop_at=0.3,
                  stop_nearest=True, progress=False)
    assert metrics["sft/steps"] == 10 and metrics["sft/validation_success"] == 0.25
    after = model.state_dict()
    assert all(torch.equal(after[k], weights[10][k]) for k in after)
    assert not all(torch.equal(after[k], weights[15][k]) for k in after)
    # 0.1 is 0.2 short, 0.35 only 0.05 over: it stops at the check that reached the target
    model.load_state_dict(start)
    curve.update({10: 0.1, 15: 0.35})
    metrics = sft(model, tokenizer, rows, steps=30, batch_rows=8, check=check, check_every=5, stop_at=0.3,
                  stop_nearest=True, progress=False)
    assert metrics["sft/steps"] == 15 and metrics["sft/validation_success"] == 0.35
    assert all(torch.equal(model.state_dict()[k], weights[15][k]) for k in after)
