"""Scripted policies for evaluation: the ``scripted:<name>`` specs.

A scripted policy here is an :data:`ActionFn`: ``act(env, observation, info, rng) -> reply``, where
``env`` is the unwrapped :class:`~turngym.envs.core.TurnEnv` (so a solver can read the true
state), ``observation`` and ``info`` are the latest the environment gave, and ``rng`` is seeded
with the episode's seed. ``scripted:<name>`` specs name them through the
:data:`SCRIPTED_POLICIES` registry:

- ``scripted:solver`` (alias ``scripted:expert``) — the environment's own expert
  (:func:`turngym.agents.scripted.expert_reply`: ``env.expert_reply()`` when the env class
  defines it, else an expert registered for the env class with :func:`register_expert`). When
  the expert has no answer (``None``: nothing solves the task from here) the solver replies with
  the env's first example action, so the episode still runs to its end.
- ``scripted:random`` — a uniformly random choice among ``env.example_actions()``.

:func:`scripted_runner` runs one exactly as a model is run: by the rollout engine
(:func:`~turngym.agents.evaluation.runner.policy_runner`, the ``ActionFn`` wrapped as an
:class:`~turngym.agents.scripted.EpisodePolicy`), so scripted and model evaluations share the
episode loop, the deadlines (``step_timeout_s``, ``reset_timeout_s``: an environment that
raises or misses one ends its episode with status ``error``, never the evaluation) and the
Turns they record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from turngym.agents.evaluation.runner import EpisodeRunner, EvalConfigError, WorkItem, policy_runner
from turngym.agents.policy import EpisodeView
from turngym.agents.rollout import RolloutConfig
from turngym.agents.scripted import (
    ActFn,
    EpisodePolicy,
    NoExpertError,
    episode_env,
    expert_reply,
    register_expert,
)
from turngym.agents.trajectory import Trajectory

__all__ = [
    "SCRIPTED_POLICIES",
    "ActionFn",
    "acting",
    "expert_reply",
    "register_expert",
    "register_scripted",
    "scripted_runner",
]

#: ``act(unwrapped env, last observation, last info, rng) -> reply text``.
ActionFn = Callable[[Any, str, dict[str, Any], np.random.Generator], str]


def _solver(env: Any, observation: str, info: dict[str, Any], rng: np.random.Generator) -> str:
    reply = expert_reply(env)
    if reply is None:
        examples = env.example_actions()
        return examples[0] if examples else ""
    return reply


def _random(env: Any, observation: str, info: dict[str, Any], rng: np.random.Generator) -> str:
    actions = env.example_actions()
    if not actions:
        return "".join(chr(int(c)) for c in rng.integers(32, 127, size=8))
    return actions[int(rng.integers(len(actions)))]


# "expert" is the name TurnEnv.expert_reply's docstring uses; "solver" the one the CLI documents.
SCRIPTED_POLICIES: dict[str, ActionFn] = {"solver": _solver, "expert": _solver, "random": _random}


def register_scripted(name: str, act: ActionFn) -> None:
    """Make ``scripted:<name>`` available."""
    SCRIPTED_POLICIES[name] = act


def acting(act: ActionFn) -> ActFn:
    """``act`` as an :class:`~turngym.agents.scripted.EpisodePolicy` plays it: given the episode's
    environment, latest observation and info, and a generator seeded with the episode's seed."""

    def play(view: EpisodeView) -> str:
        rng = view.state.get("rng")
        if rng is None:
            rng = view.state["rng"] = np.random.default_rng(view.seed)
        return act(episode_env(view), view.observation, view.info, rng)

    return play


def scripted_runner(name: str, env_kwargs: dict[str, Any] | None = None,
                    rollout: RolloutConfig | None = None) -> EpisodeRunner:
    """The episode runner for ``scripted:<name>``: the rollout engine with ``rollout``'s settings
    (deadlines, ``max_turns``, memory; sampling settings mean nothing to a script)."""
    try:
        act = SCRIPTED_POLICIES[name]
    except KeyError:
        known = ", ".join(f"scripted:{n}" for n in sorted(SCRIPTED_POLICIES))
        raise EvalConfigError(f"no scripted policy named {name!r} (known: {known})") from None
    config = (rollout or RolloutConfig()).model_copy(update={"group_size": 1, "progress": False})
    run = policy_runner(EpisodePolicy(acting(act)), {"rollout": config, "env_kwargs": env_kwargs})

    def runner(items: Sequence[WorkItem]) -> list[Trajectory]:
        try:
            return run(items)
        except NoExpertError as err:  # the evaluation cannot run as asked: one sentence, exit code 2
            raise EvalConfigError(str(err)) from None

    return runner
