"""Garbage never crashes: every registered environment answers adversarial replies with an
observation inside its observation space, never an exception; the trajectory writers store
whatever text a step produced.

The replies are what a misbehaving model (or an adversary) can write: brackets nested
thousands deep, integers of thousands of digits, lone surrogates, control characters and
megabyte-long text, bare or inside each environment family's action syntax (tool calls, action
tags, code fences, ReAct lines). Each environment gets as many examples as fit a small time
budget, measured on its own first step, so the slow ones (sandboxes, provers, browsers) run a
few and the grid puzzles many.
"""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from turngym.agents.evaluation.runner import TrajectoryStore
from turngym.agents.trajectory import (
    Trajectory,
    Turn,
    json_line,
    json_safe,
    read_jsonl,
    write_jsonl,
)
from turngym.envs import EnvUnavailable, make, registered_envs

ENV_IDS = sorted(registered_envs())
BUDGET_S = 4.0  # per environment
MOST_EXAMPLES, FEWEST_EXAMPLES = 40, 3

# Payloads: each is a way model output has broken a parser or an environment.
PAYLOADS = st.one_of(
    st.integers(50, 20_000).map(lambda n: "[" * n),  # deep nesting (RecursionError in json)
    st.integers(50, 5_000).map(lambda n: '{"a": ' * n + "1" + "}" * n),
    st.integers(4_301, 6_000).map(lambda n: "9" * n),  # past Python's int-string digit limit
    st.sampled_from(["\udcff", "\ud800", "a\udfffb", "\ud83d"]),  # lone surrogates
    st.text(st.characters(max_codepoint=0x1F), min_size=1, max_size=20),  # control characters
    st.integers((1 << 20) - 2, (1 << 20) + 2).map(lambda n: "x" * n),  # about a megabyte
    st.text(max_size=200),
)
# Where a payload goes: bare, or inside the action syntax of each environment family.
WRAPPERS = st.sampled_from([
    "@",
    "<tool_call>@</tool_call>",
    '<tool_call>{"name": "move", "arguments": {"direction": @}}</tool_call>',
    '<tool_call>{"name": "search", "arguments": {"query": "q", "k": @}}</tool_call>',
    '<tool_call>{"name": "python", "arguments": {"code": "@"}}</tool_call>',
    '<tool_call>{"name": "click", "arguments": {"ref": @}}</tool_call>',
    '{"name": "answer", "arguments": @}',
    "<action>@</action>",
    "<answer>@</answer>",
    "```coq\n@\n```",
    "Action: search\nAction Input: @",
])
#: The replies that crashed environments before (issue #16), run on every environment first.
KNOWN_CRASHES = [
    "<tool_call>" + "[" * 100_000 + "</tool_call>",
    '<tool_call>{"name": "answer", "arguments": {"text": ' + "[" * 500 + "]" * 500 + "}}</tool_call>",  # decodable, too deep to store
    '<tool_call>{"name": "move", "arguments": {"direction": ' + "9" * 5000 + "}}</tool_call>",
    "Proof. intros.\udcff Qed.",
    "```coq\n" + "x" * 1_000_000 + "\n```",  # within the action space: the env must cope
    "x" * ((1 << 20) + 1),  # past it
]
REPLIES = st.one_of(
    st.builds(lambda wrapper, payload: wrapper.replace("@", payload), WRAPPERS, PAYLOADS),
    st.builds(lambda a, b: a + b, PAYLOADS, PAYLOADS),
)


def _is_text(reply: str, limit: int) -> bool:
    """Whether a reply is something an environment could act on at all (valid Unicode, in the
    action space); one that is not must be answered as invalid."""
    try:
        reply.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(reply) <= limit


@pytest.fixture(scope="module", autouse=True)
def _close_shared_pools():
    """Environments made with turngym.make use process-wide sandbox and browser pools."""
    yield
    from turngym.sandboxes import close_shared_pools

    close_shared_pools()


def _step_checked(env, reply: str) -> None:
    base = env.unwrapped
    obs, reward, terminated, truncated, info = env.step(reply)
    assert env.observation_space.contains(obs), f"observation outside {env.observation_space}"
    assert isinstance(reward, float) and math.isfinite(reward)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert isinstance(info.get("action_valid"), bool)
    if not _is_text(reply, base.action_space.max_length):
        assert info["action_valid"] is False, "a reply that is not text in the action space was accepted"
    # what the rollout engine records of the step goes through the trajectory writer
    turn = Turn(step=0, response_text=reply, observation=obs if isinstance(obs, str) else "", reward=reward,
                action_valid=info["action_valid"], tool_calls=json_safe(list(info.get("tool_calls", []))),
                info=json_safe({k: v for k, v in info.items() if k != "tool_calls"}))
    json.loads(json_line(Trajectory(traj_id="t", group_id="g", task_id=info["task_id"], turns=[turn])).encode("utf-8"))
    if terminated or truncated:
        env.reset(seed=0)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_garbage_replies_never_crash(env_id):
    try:
        env = make(env_id)
        start = time.perf_counter()
        env.reset(seed=0)
        examples = env.unwrapped.example_actions()
        _step_checked(env, examples[0] if examples else "")
    except EnvUnavailable as err:
        pytest.skip(str(err))
    first_s = time.perf_counter() - start
    n = max(FEWEST_EXAMPLES, min(MOST_EXAMPLES, int(BUDGET_S / max(first_s, 1e-3))))

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(reply=REPLIES)
    def check(reply: str) -> None:
        _step_checked(env, reply)

    for reply in KNOWN_CRASHES:
        check = example(reply=reply)(check)

    try:
        check()
    finally:
        env.close()


# The payload alphabet includes lone surrogates, which st.text leaves out by default.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=50) | PAYLOADS.filter(lambda s: len(s) < 10_000)


def _trajectory(text: str) -> Trajectory:
    turn = Turn(step=0, response_text=text, observation=text, info={"note": text}, tool_calls=[{"name": text, "arguments": {"x": text}}])
    return Trajectory(traj_id="t", group_id="g", task_id="task", env_id="env", turns=[turn], error=text)


@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ANY_TEXT)
def test_trajectory_writers_store_any_text(tmp_path, text):
    store_path = tmp_path / "store" / "trajectories.jsonl"
    store_path.unlink(missing_ok=True)
    traj = _trajectory(text)
    store = TrajectoryStore(store_path)
    store.append(0, traj)
    again = TrajectoryStore(store_path)
    assert again.records[("env", "task", 0)].turns[0].response_text == text
    for line in store_path.read_bytes().splitlines():
        json.loads(line.decode("utf-8"))  # the file is valid UTF-8 JSON, line by line

    jsonl = tmp_path / "plain.jsonl"
    write_jsonl([traj], jsonl)
    (back,) = read_jsonl(jsonl)
    assert back.turns[0].observation == text
