"""The ``results.json`` schema (versioned) and how trajectories become it.

``results.json`` is an :class:`EvalResults`: what was evaluated (policy spec, split, runs,
``k`` values, seed), and per environment an :class:`EnvSummary` with suite-level
:class:`SuiteStats` and one :class:`TaskStats` per task. ``schema_version`` changes whenever a
field changes meaning or disappears; adding a field keeps the version. Readers check it
(:func:`load_results`) instead of guessing.

Keys of ``pass_at_k`` / ``pass_hat_k`` are the ``k`` values (strings in the JSON); a value is
``null`` when a task had fewer than ``k`` runs. Rates are fractions of episodes:
``error_rate`` (status ``error``: the environment raised or missed a deadline),
``truncated_rate`` (status ``truncated``: the turn budget ran out), ``timeout_rate`` (status
``timeout``, for rollout engines that stop an episode on a wall-clock deadline).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from turngym.agents.evaluation.stats import BootstrapCI, bootstrap_mean_ci, pass_at_k, pass_hat_k
from turngym.agents.trajectory import Trajectory

__all__ = [
    "SCHEMA_VERSION",
    "EnvSummary",
    "EvalResults",
    "ResultsError",
    "SuiteStats",
    "TaskStats",
    "env_summary",
    "load_results",
    "write_results",
]

SCHEMA_VERSION = 1


class ResultsError(ValueError):
    """A results folder or file that cannot be read (one clear sentence)."""


def _nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


class TaskStats(BaseModel):
    """Statistics of one task over its runs."""

    task_id: str
    runs: int
    successes: int
    pass1: float
    """Mean success over runs."""
    pass_at_k: dict[int, float | None] = Field(default_factory=dict)
    pass_hat_k: dict[int, float | None] = Field(default_factory=dict)
    mean_reward: float
    mean_turns: float
    mean_tool_calls: float
    error_rate: float
    truncated_rate: float
    timeout_rate: float


class SuiteStats(BaseModel):
    """Statistics of a suite: means over tasks (each task weighs the same)."""

    num_tasks: int
    num_episodes: int
    pass1: BootstrapCI
    """Mean of per-task pass@1 with its bootstrap-over-tasks CI."""
    pass1_run_std: float | None = None
    """Standard deviation, across run indices, of the suite pass@1 of a single run (run r of
    every task): how much one single-run evaluation would swing. None with one run."""
    pass_at_k: dict[int, float | None] = Field(default_factory=dict)
    pass_hat_k: dict[int, float | None] = Field(default_factory=dict)
    mean_reward: float
    mean_turns: float
    mean_tool_calls: float
    error_rate: float
    truncated_rate: float
    timeout_rate: float


class EnvSummary(BaseModel):
    """One environment's evaluation: its suite's statistics and each task's (an entry of
    ``results.json``'s ``envs``)."""

    env_id: str
    suite: str
    """The task suite's name."""
    split: str
    stats: SuiteStats
    tasks: list[TaskStats]


class EvalResults(BaseModel):
    """Everything ``results.json`` holds."""

    schema_version: int = SCHEMA_VERSION
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    policy: str
    """The policy spec evaluated (``scripted:solver``, a model id, ``openai:URL#model``, ...)."""
    split: str
    runs: int
    """Runs per task asked for."""
    ks: list[int]
    seed: int
    confidence: float = 0.95
    bootstrap_samples: int = 2000
    envs: list[EnvSummary]
    overall: SuiteStats | None = None
    """All envs' tasks pooled (present when more than one env was evaluated)."""


def suite_stats(
    tasks: Sequence[TaskStats],
    ks: Sequence[int],
    per_run_success: dict[int, list[float]],
    num_episodes: int,
    level: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> SuiteStats:
    """Suite statistics from per-task statistics (means over tasks, CI by bootstrap over tasks)."""

    def mean_of(values: Iterable[float | None]) -> float | None:
        arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        return None if arr.size == 0 or np.all(np.isnan(arr)) else float(np.nanmean(arr))

    def mean_field(name: str) -> float:
        return float(np.mean([getattr(t, name) for t in tasks])) if tasks else math.nan

    # A suite-level pass@k exists only when every task has at least k runs.
    def suite_k(attr: str, k: int) -> float | None:
        values = [getattr(t, attr).get(k) for t in tasks]
        return None if any(v is None for v in values) else mean_of(values)

    # Run r of every task that has a run r is one "single-run evaluation"; its spread across r
    # is what a one-number report would swing by.
    run_means = [float(np.mean(v)) for v in per_run_success.values() if v]
    return SuiteStats(
        num_tasks=len(tasks),
        num_episodes=num_episodes,
        pass1=bootstrap_mean_ci([t.pass1 for t in tasks], level=level, samples=samples, seed=seed),
        pass1_run_std=float(np.std(run_means, ddof=1)) if len(run_means) > 1 else None,
        pass_at_k={k: suite_k("pass_at_k", k) for k in ks},
        pass_hat_k={k: suite_k("pass_hat_k", k) for k in ks},
        mean_reward=mean_field("mean_reward"),
        mean_turns=mean_field("mean_turns"),
        mean_tool_calls=mean_field("mean_tool_calls"),
        error_rate=mean_field("error_rate"),
        truncated_rate=mean_field("truncated_rate"),
        timeout_rate=mean_field("timeout_rate"),
    )


def task_stats(task_id: str, trajectories: Sequence[Trajectory], ks: Sequence[int]) -> TaskStats:
    n = len(trajectories)
    if n == 0:
        raise ValueError(f"task {task_id!r} has no trajectories")
    c = sum(bool(t.success) for t in trajectories)
    status = [t.status for t in trajectories]
    return TaskStats(
        task_id=task_id,
        runs=n,
        successes=c,
        pass1=c / n,
        pass_at_k={k: _nan_to_none(float(pass_at_k(n, c, k))) for k in ks},
        pass_hat_k={k: _nan_to_none(float(pass_hat_k(n, c, k))) for k in ks},
        mean_reward=float(np.mean([t.total_reward for t in trajectories])),
        mean_turns=float(np.mean([len(t.turns) for t in trajectories])),
        mean_tool_calls=float(np.mean([t.num_tool_calls for t in trajectories])),
        error_rate=status.count("error") / n,
        truncated_rate=status.count("truncated") / n,
        timeout_rate=status.count("timeout") / n,
    )


def env_summary(
    env_id: str,
    suite: str,
    split: str,
    episodes: Iterable[tuple[int, Trajectory]],
    ks: Sequence[int],
    task_order: Sequence[str] | None = None,
    level: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> tuple[EnvSummary, dict[int, list[float]]]:
    """Per-task and suite statistics of one env from ``(run index, trajectory)`` pairs.

    Also returns the per-run-index success lists, so several envs can be pooled.
    """
    by_task: dict[str, list[Trajectory]] = {}
    per_run: dict[int, list[float]] = {}
    count = 0
    for run, traj in episodes:
        by_task.setdefault(traj.task_id, []).append(traj)
        per_run.setdefault(run, []).append(float(bool(traj.success)))
        count += 1
    order = [t for t in (task_order or sorted(by_task)) if t in by_task]
    tasks = [task_stats(t, by_task[t], ks) for t in order]
    stats = suite_stats(tasks, ks, per_run, count, level=level, samples=samples, seed=seed)
    return EnvSummary(env_id=env_id, suite=suite, split=split, stats=stats, tasks=tasks), per_run


def write_results(results: EvalResults, path: str | Path) -> None:
    """Write ``results.json`` atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(results.model_dump_json(indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def load_results(path: str | Path) -> EvalResults:
    """Read ``results.json`` (or a folder holding one), checking its schema version."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ResultsError(f"no evaluation results at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path} has results schema version {version!r}; this turngym reads version {SCHEMA_VERSION}")
    return EvalResults.model_validate(data)
