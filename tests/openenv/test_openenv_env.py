"""`turngym.make("openenv:URL")`: OpenEnv servers as turngym environments — a served turngym
environment round-trips exactly (and trains), and a server written only against openenv-core
works through its schema."""

# ruff: noqa: E402  (openenv-core is imported after the skip that needs it)

import json
import random

import pytest

pytest.importorskip("openenv.core", reason="needs the [openenv] extra (openenv-core)")

from openenv.core.env_server.http_server import create_fastapi_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation, State

import turngym
from turngym.config import load_config
from turngym.envs import EnvUnavailable
from turngym.envs.checker import check
from turngym.envs.openenv.server import make_app, running
from turngym.tools.parsers import render_tool_call

TINY = "tiny-markov:hidden=32,layers=1,heads=2,seed=0"


def test_a_served_turngym_env_round_trips_exactly_and_passes_the_checker():
    with running(make_app("turngym/Sokoban-v0", max_sessions=8)) as url:
        remote, local = turngym.make(f"openenv:{url}"), turngym.make("turngym/Sokoban-v0")
        try:
            assert remote.unwrapped.suite.splits() == local.unwrapped.suite.splits()
            task = {"task": "sokoban-6x6-1-test-0002"}
            assert remote.reset(seed=9, options=task) == local.reset(seed=9, options=task)
            assert remote.unwrapped.instructions == local.unwrapped.instructions
            assert remote.unwrapped.example_actions() == local.unwrapped.example_actions() != []
            for reply in ["<action>left</action>", "not an action", local.unwrapped.expert_reply()] * 2:
                got, want = remote.step(reply), local.step(reply)
                assert got == want and (got[4]["action_valid"] is (reply != "not an action"))
        finally:
            remote.close()
            local.close()
        failed = [r for r in check(f"openenv:{url}") if not r.passed]
        assert not failed, failed


def test_tuple_anchors_come_back_hashable_and_equal():
    with running(make_app("turngym/Search-v0", max_sessions=4)) as url:
        remote, local = turngym.make(f"openenv:{url}"), turngym.make("turngym/Search-v0")
        try:
            task = {"task": "2hop__116027_376978"}
            assert remote.reset(seed=1, options=task) == local.reset(seed=1, options=task)
            reply = remote.unwrapped.example_actions()[0]
            got, want = remote.step(reply), local.step(reply)
            assert got == want and isinstance(got[4]["anchor"], tuple) and got[4]["stratum"] == 1
        finally:
            remote.close()
            local.close()
        failed = [r for r in check(f"openenv:{url}") if not r.passed]
        assert not failed, failed


def test_the_agents_tool_call_style_reaches_the_server():
    with running(make_app("turngym/Search-v0", max_sessions=4)) as url:
        remote, local = turngym.make(f"openenv:{url}"), turngym.make("turngym/Search-v0")
        try:
            for style in ("react", "openai_json"):  # as the rollout engine names the model's style
                options = {"task": "2hop__116027_376978", "tool_call_style": style}
                assert remote.reset(seed=1, options=options) == local.reset(seed=1, options=options)
                reply = render_tool_call("search", {"query": "director of Jump for Glory"}, style)
                got, want = remote.step(reply), local.step(reply)
                assert got == want and got[4]["action_valid"] and got[4]["tool_calls"][0]["name"] == "search"
        finally:
            remote.close()
            local.close()


def test_the_servers_turn_budget_arrives_as_truncation(counting):
    with running(make_app("test/Counting-v0", {"max_turns": 2})) as url:
        env = turngym.make(f"openenv:{url}")
        env.reset(seed=0)
        assert env.step("a")[2:4] == (False, False)
        obs, reward, terminated, truncated, info = env.step("b")
        assert (terminated, truncated, info["success"], reward) == (False, True, False, 0.5)
        env.close()
    assert counting.live() == 0


def test_round_trip_training_on_a_served_environment(tmp_path):
    from turngym.trainers.config import TrainConfig
    from turngym.trainers.trainer import Trainer
    from turngym.trainers.validate import validate_config

    app = make_app("turngym/FrozenLake-v0", {"max_turns": 6, "invalid_penalty": 0.1}, max_sessions=16)
    with running(app) as url:
        cfg = load_config(TrainConfig, None, [
            f"env.id=openenv:{url}", f"policy.model={TINY}", "rollout.group_size=4", "rollout.memory=window",
            "rollout.memory_window=0", "rollout.max_tokens=24", "rollout.stop=['</action>']", "rollout.progress=false",
            "rollout.concurrency=4", "estimator.name=gigpo", "optim.lr=1e-3", "run.tasks_per_step=3", "run.steps=2",
            "run.eval_tasks=4", "run.eval_every=0", "run.checkpoint_every=0", "run.tensorboard=false",
            f"run.out_dir={tmp_path / 'run'}",
        ])
        validate_config(cfg)  # what `turngym train` checks first: an openenv: id has no registry entry
        summary = Trainer(cfg).train()
        assert app.state.openenv.active_sessions == 0  # every episode's session closed
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "rollout/episodes" in r]
    assert [(r["step"], r["rollout/episodes"]) for r in steps] == [(1, 12), (2, 12)]
    assert all(r["rollout/error_episodes"] == 0 for r in steps)
    assert 0.0 <= summary["eval_after"] <= 1.0
    from turngym.agents import read_jsonl

    turns = [turn for t in read_jsonl(tmp_path / "run" / "samples" / "step-000002.jsonl") for turn in t.turns]
    assert turns and all(turn.anchor is not None and turn.advantage is not None for turn in turns)


# -- a server written against openenv-core alone ------------------------------------------------
class GuessAction(Action):
    guess: str


class GuessObservation(Observation):
    feedback: str = ""
    tries: int = 0


class GuessEnvironment(Environment):
    """Guess a digit in three tries; the state holds the secret (so it is the anchor)."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self):
        super().__init__()
        self._state = State(step_count=0, secret=0)

    def reset(self, seed=None, episode_id=None, **kwargs):
        self._state = State(episode_id=episode_id, step_count=0, secret=random.Random(seed).randint(0, 9))
        return GuessObservation(feedback="Guess a digit.")

    def step(self, action, timeout_s=None, **kwargs):
        self._state.step_count += 1
        right = action.guess.strip() == str(self._state.secret)
        feedback = "right" if right else "higher" if action.guess.strip() < str(self._state.secret) else "lower"
        return GuessObservation(feedback=feedback, tries=self._state.step_count, done=right or self._state.step_count >= 3,
                                reward=1.0 if right else 0.0)

    @property
    def state(self):
        return self._state


@pytest.fixture
def foreign_url():
    app = create_fastapi_app(GuessEnvironment, GuessAction, GuessObservation, max_concurrent_envs=4)
    with running(app) as url:
        yield url


def test_a_foreign_server_through_its_schema(foreign_url):
    env = turngym.make(f"openenv:{foreign_url}", success_reward=1.0)
    try:
        assert (env.unwrapped.action_field, env.unwrapped.text_field) == ("guess", "feedback")
        assert env.unwrapped.suite.splits() == {"train": 1000, "test": 100}
        obs, info = env.reset(seed=123, options={"task": "seed-7"})
        secret = random.Random(7).randint(0, 9)  # the task is the server's reset seed
        assert obs == "Guess a digit." and info["task_id"] == "seed-7"
        assert json.loads(info["anchor"]) == {"secret": secret}
        wrong = str((secret + 1) % 10)
        obs, reward, terminated, truncated, info = env.step(wrong)
        assert obs in ("higher", "lower") and (reward, terminated, truncated) == (0.0, False, False)
        assert info["openenv"] == {"tries": 1}  # the plain fields besides the text
        obs, reward, terminated, truncated, info = env.step(str(secret))
        assert (obs, reward, terminated, truncated, info["success"]) == ("right", 1.0, True, False, True)
    finally:
        env.close()


def test_an_unreachable_server_is_one_clear_sentence():
    with pytest.raises(EnvUnavailable, match="no OpenEnv server answers at http://127.0.0.1:9"):
        turngym.make("openenv:http://127.0.0.1:9")
    with pytest.raises(ValueError, match="needs a server URL"):
        turngym.make("openenv:")
