"""Conformance checks every turngym environment must pass (``turngym check ENV_ID``).

Gymnasium's ``check_env`` first, then turngym's own: determinism under a seed, ``info`` keys
well-typed, anchors and strata hashable, invalid replies answered with an error observation
(never an exception), tool schemas serialisable, and Gymnasium's ``TimeLimit`` and
``RecordEpisodeStatistics`` wrappers working on the environment.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit

from turngym.envs.core import TurnEnv
from turngym.envs.registration import make

__all__ = ["CHECKS", "CheckResult", "check", "INVALID_REPLY"]

INVALID_REPLY = "\x00 this is not a valid reply \u2603 {{{"

#: The names of the checks :func:`check` runs, in order: one result each.
CHECKS = (
    "subclasses TurnEnv",
    "gymnasium check_env",
    "deterministic under a seed",
    "info keys well-typed, anchors hashable",
    "invalid reply answered with an error observation",
    "tool schemas",
    "TimeLimit and RecordEpisodeStatistics",
)


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""


def _probe_actions(env: TurnEnv, n: int) -> list[str]:
    examples = env.example_actions() or [INVALID_REPLY]
    return [examples[i % len(examples)] for i in range(n)] + [INVALID_REPLY]


def _run(env: gym.Env, seed: int, actions: list[str]) -> list[tuple[Any, ...]]:
    obs, info = env.reset(seed=seed)
    trace: list[tuple[Any, ...]] = [(obs, json.dumps(info, sort_keys=True, default=repr))]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((obs, reward, terminated, truncated, json.dumps(info, sort_keys=True, default=repr)))
        if terminated or truncated:
            obs, info = env.reset(seed=seed + len(trace))
            trace.append((obs, json.dumps(info, sort_keys=True, default=repr)))
    return trace


def _check_info(info: dict[str, Any], at_reset: bool) -> list[str]:
    problems = []
    if not isinstance(info.get("task_id"), str):
        problems.append("info['task_id'] must be a str")
    if not at_reset:
        if not isinstance(info.get("action_valid"), bool):
            problems.append("info['action_valid'] must be a bool")
        calls = info.get("tool_calls")
        if not isinstance(calls, list) or not all(isinstance(c, dict) and "name" in c for c in calls):
            problems.append("info['tool_calls'] must be a list of {'name', 'arguments'} dicts")
    for key in ("anchor", "stratum"):
        if key in info and not isinstance(info[key], Hashable):
            problems.append(f"info[{key!r}] must be hashable, got {type(info[key]).__name__}")
        elif key in info:
            try:
                hash(info[key])
            except TypeError as err:
                problems.append(f"info[{key!r}] must be hashable: {err}")
    if "success" in info and not isinstance(info["success"], bool):
        problems.append("info['success'] must be a bool")
    return problems


def check(env_id: str, seed: int = 0, steps: int = 12, make_env: Callable[[], gym.Env] | None = None, **kwargs: Any) -> list[CheckResult]:
    """Run every check on ``env_id``; returns one result per check.

    A failing check is a result, not an exception; only :class:`~turngym.envs.EnvUnavailable`
    (the environment cannot run here at all) propagates.
    """
    factory = make_env or (lambda: make(env_id, **kwargs))
    results: list[CheckResult] = []

    def record(name: str, fn: Callable[[], str | None]) -> None:
        try:
            detail = fn()
            results.append(CheckResult(name, not detail, detail or ""))
        except Exception as err:  # a check that crashes is a failed check, not a crash
            results.append(CheckResult(name, False, f"{type(err).__name__}: {err}"))

    env = factory()
    base = env.unwrapped
    try:
        env.reset(seed=seed)  # EnvUnavailable (a missing toolchain) propagates: nothing to check
    except BaseException:
        env.close()
        raise
    try:
        def is_turn_env() -> str | None:
            return None if isinstance(base, TurnEnv) else f"{type(base).__name__} does not subclass turngym.envs.TurnEnv"

        def gymnasium_checker() -> str | None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                gym_check_env(base, skip_render_check=True)
            bad = [str(w.message) for w in caught if "precision" not in str(w.message)]
            return None if not bad else "gymnasium warned: " + bad[0]

        def determinism() -> str | None:
            actions = _probe_actions(base, steps)
            a, b = factory(), factory()
            try:
                ta, tb = _run(a, seed, actions), _run(b, seed, actions)
            finally:
                a.close()
                b.close()
            for i, (x, y) in enumerate(zip(ta, tb)):
                if x != y:
                    return f"same seed and actions gave different results at transition {i}"
            return None

        def info_types() -> str | None:
            obs, info = env.reset(seed=seed)
            problems = _check_info(info, at_reset=True)
            for action in _probe_actions(base, steps):
                obs, _, term, trunc, info = env.step(action)
                problems += _check_info(info, at_reset=False)
                if term or trunc:
                    env.reset(seed=seed + 1)
            return "; ".join(sorted(set(problems))) or None

        def invalid_reply() -> str | None:
            env.reset(seed=seed)
            obs, reward, term, trunc, info = env.step(INVALID_REPLY)
            if info.get("action_valid") is not False:
                return "an unparseable reply must set info['action_valid'] = False"
            if not isinstance(obs, str) or not obs.strip():
                return "an unparseable reply must be answered with an error observation"
            return None

        def tool_schemas() -> str | None:
            for tool in getattr(base, "tools", []):
                schema = tool.schema()
                json.dumps(schema)
                if schema.get("type") != "function" or "parameters" not in schema["function"]:
                    return f"tool {tool.name} has no OpenAI-style function schema"
            return None

        def wrappers() -> str | None:
            wrapped = RecordEpisodeStatistics(TimeLimit(factory(), max_episode_steps=3))
            try:
                wrapped.reset(seed=seed)
                for _ in range(3):
                    _, _, term, trunc, info = wrapped.step(INVALID_REPLY)
                if not (term or trunc):
                    return "TimeLimit(3) did not end the episode after 3 steps"
                if "episode" not in info:
                    return "RecordEpisodeStatistics did not report the episode"
            finally:
                wrapped.close()
            return None

        checks = (is_turn_env, gymnasium_checker, determinism, info_types, invalid_reply, tool_schemas, wrappers)
        for name, fn in zip(CHECKS, checks, strict=True):
            record(name, fn)
    finally:
        env.close()
    return results
