"""Scripted policies for evaluation, and an episode runner that steps environments directly.

A scripted policy is an :data:`ActionFn`: ``act(env, observation, info, rng) -> reply``, where
``env`` is the unwrapped :class:`~turngym.envs.core.TurnEnv` (so a solver can read the true
state) and ``rng`` is seeded per episode. ``scripted:<name>`` specs name them through the
:data:`SCRIPTED_POLICIES` registry:

- ``scripted:solver`` (alias ``scripted:expert``) — the environment's own expert: ``env.expert_reply()`` when the env
  class defines it (the place for such knowledge: the env family; the grid puzzles do), else an
  expert registered for the env class with :func:`register_expert`. When the expert has no
  answer (``None``: nothing solves the task from here) the solver replies with the env's first
  example action, so the episode still runs to its end.
- ``scripted:random`` — a uniformly random choice among ``env.example_actions()``.

:class:`EnvStepRunner` turns an ``ActionFn`` into an
:data:`~turngym.agents.evaluation.runner.EpisodeRunner`: one episode per work item, in order,
yielded as soon as it ends. An environment that raises, or whose reset or step misses its
deadline (``step_timeout_s``, ``reset_timeout_s``: the rollout engine's, so every evaluation
path has the same), ends its episode with status ``error`` (counted in the error rate), never
the evaluation.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from turngym.agents.evaluation.runner import EvalConfigError, WorkItem
from turngym.agents.trajectory import Trajectory, Turn, json_safe

__all__ = [
    "SCRIPTED_POLICIES",
    "ActionFn",
    "EnvStepRunner",
    "expert_reply",
    "register_expert",
    "register_scripted",
    "scripted_runner",
]

log = logging.getLogger(__name__)

#: ``act(unwrapped env, last observation, last info, rng) -> reply text``.
ActionFn = Callable[[Any, str, dict[str, Any], np.random.Generator], str]

# Env class ("module:QualName") -> expert, or a lazy "module:function" string: for env
# classes one cannot edit (an env family's own expert belongs in its ``expert_reply``).
_EXPERTS: dict[str, str | Callable[[Any], str | None]] = {}


def register_expert(env_class: str, expert: str | Callable[[Any], str | None]) -> None:
    """Register ``expert(env) -> reply | None`` for an env class named ``"module:QualName"``."""
    _EXPERTS[env_class] = expert


def expert_reply(env: Any) -> str | None:
    """The env's expert reply in its current state, or None (see the module docstring).

    An env class that overrides ``TurnEnv.expert_reply`` has a solver; ``None`` from it means
    nothing solves the task from this state. Otherwise an expert registered for the class (or a
    base class) answers; with neither, scripted:solver cannot run on this env.
    """
    from turngym.envs.core import TurnEnv

    if type(env).expert_reply is not TurnEnv.expert_reply:
        return env.expert_reply()
    for cls in type(env).__mro__:
        name = f"{cls.__module__}:{cls.__qualname__}"
        expert = _EXPERTS.get(name)
        if expert is None:
            continue
        if isinstance(expert, str):
            module, _, attr = expert.partition(":")
            expert = _EXPERTS[name] = getattr(importlib.import_module(module), attr)
        return expert(env)
    raise EvalConfigError(
        f"scripted:solver has no expert for {type(env).__name__}; give the env an expert_reply() method "
        "or register one with turngym.agents.evaluation.register_expert"
    )


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


class _DeadlineCaller:
    """Runs calls in a daemon worker thread and waits for each at most its deadline.

    A thread cannot be killed, so a call that overruns is abandoned: its worker is told to run
    ``on_late`` (closing the environment it was stuck in) and exit once the call returns, and a
    fresh worker takes the next call.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] | None = None

    def call(self, fn: Callable[[], Any], timeout: float, what: str, on_late: Callable[[], None]) -> Any:
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=_work, args=(self._jobs,), name="turngym-eval-env", daemon=True).start()
        done, box = threading.Event(), {}

        def job() -> None:
            try:
                box["value"] = fn()
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = err
            finally:
                done.set()

        self._jobs.put(job)
        if not done.wait(timeout):
            self._jobs.put(on_late)
            self._jobs.put(None)
            self._jobs = None
            raise TimeoutError(f"{what} exceeded its deadline of {timeout:g}s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None


def _work(jobs: queue.SimpleQueue[Callable[[], None] | None]) -> None:
    while (job := jobs.get()) is not None:
        job()


def _close_quietly(env: Any) -> None:
    try:
        env.close()
    except Exception as err:  # an abandoned env: its leak is logged, the evaluation goes on
        log.warning("closing an environment that missed its deadline failed: %s: %s", type(err).__name__, err)


class EnvStepRunner:
    """An episode runner that asks ``act`` for each reply and steps the environment itself,
    each reset and step within its deadline (seconds)."""

    def __init__(self, act: ActionFn, env_kwargs: dict[str, Any] | None = None,
                 step_timeout_s: float = 60.0, reset_timeout_s: float = 300.0) -> None:
        self.act = act
        self.env_kwargs = dict(env_kwargs or {})
        self.step_timeout_s = step_timeout_s
        self.reset_timeout_s = reset_timeout_s
        self._envs: dict[str, Any] = {}
        self._caller = _DeadlineCaller()

    def _env(self, env_id: str) -> Any:
        if env_id not in self._envs:
            import turngym

            self._envs[env_id] = turngym.make(env_id, **self.env_kwargs)
        return self._envs[env_id]

    def _within(self, env_id: str, fn: Callable[[], Any], timeout: float, what: str) -> Any:
        env = self._envs[env_id]

        def abandon() -> None:  # runs in the stuck worker once its call returns
            _close_quietly(env)

        try:
            return self._caller.call(fn, timeout, what, abandon)
        except TimeoutError:
            del self._envs[env_id]  # the next episode gets a fresh environment
            raise

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._caller.close()

    def __call__(self, items: Sequence[WorkItem]) -> Iterator[Trajectory]:
        for item in items:
            yield self.run_episode(item)

    def run_episode(self, item: WorkItem) -> Trajectory:
        traj = Trajectory(traj_id=item.traj_id, group_id=f"{item.env_id}|{item.task_id}", task_id=item.task_id,
                          env_id=item.env_id, seed=item.seed)
        try:
            self._play(item, traj)
        except EvalConfigError:
            raise
        except Exception as err:  # the environment failed: an observation about it, not a crash
            log.warning("episode %s failed: %s", item.traj_id, err)
            traj.status, traj.error, traj.success = "error", f"{type(err).__name__}: {err}", False
        return traj

    def _play(self, item: WorkItem, traj: Trajectory) -> None:
        env = self._env(item.env_id)
        rng = np.random.default_rng(item.seed)
        obs, info = self._within(item.env_id, lambda: env.reset(seed=item.seed, options={"task": item.task_id}),
                                 self.reset_timeout_s, "reset")
        traj.initial_observation = prompt = obs
        while True:
            start = time.perf_counter()
            reply = self.act(env.unwrapped, obs, info, rng)
            generated = time.perf_counter()
            anchor = info.get("anchor")
            obs, reward, terminated, truncated, info = self._within(
                item.env_id, lambda reply=reply: env.step(reply), self.step_timeout_s, "step")
            traj.turns.append(Turn(
                step=len(traj.turns), prompt_text=prompt, response_text=reply, observation=obs,
                reward=reward, anchor=anchor, stratum=info.get("stratum"),
                action_valid=bool(info.get("action_valid", True)), tool_calls=list(info.get("tool_calls", [])),
                info=json_safe({k: v for k, v in info.items() if k not in ("anchor", "stratum", "tool_calls")}),
                generate_s=generated - start, env_s=time.perf_counter() - generated,
            ))
            prompt = obs
            if terminated or truncated:
                traj.success = bool(info.get("success", False))
                traj.status = "truncated" if truncated and not terminated else "ok"
                return


def scripted_runner(name: str, env_kwargs: dict[str, Any] | None = None, step_timeout_s: float = 60.0,
                    reset_timeout_s: float = 300.0) -> EnvStepRunner:
    """The runner for ``scripted:<name>``."""
    try:
        act = SCRIPTED_POLICIES[name]
    except KeyError:
        known = ", ".join(f"scripted:{n}" for n in sorted(SCRIPTED_POLICIES))
        raise EvalConfigError(f"no scripted policy named {name!r} (known: {known})") from None
    return EnvStepRunner(act, env_kwargs, step_timeout_s=step_timeout_s, reset_timeout_s=reset_timeout_s)
