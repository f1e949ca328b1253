"""Trajectories: what a rollout produces and a trainer learns from.

One :class:`Turn` per policy call: the exact prompt token ids the model saw, the response ids
it produced with their logprobs, what the environment answered (reward, anchor, stratum, info)
and timings. A :class:`Trajectory` is one episode of one task (``group_id`` names the task and
initial state shared by its G samples). ``status`` is ``ok`` (ended by the environment),
``truncated`` (turn budget) or ``error`` (the environment raised or missed its deadline: such
trajectories are counted and logged, and kept out of training). Both round-trip through JSONL.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, field_validator

__all__ = ["Turn", "Trajectory", "hashable_json", "json_line", "json_safe", "read_jsonl", "write_jsonl"]


_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})


def json_safe(value: Any) -> Any:
    """``value`` as data JSON can encode: numpy arrays and scalars made plain (``tolist``,
    ``item``), tuples made lists, keys made strings, anything else unencodable its ``repr``."""
    kind = type(value)
    if kind in _PLAIN_TYPES:  # exact type checks first: this runs on every info value of every step
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): json_safe(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)):
        return value
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def hashable_json(value: Any) -> Hashable:
    """``value`` as data that is both JSON-encodable and hashable: what a Turn keeps as its
    anchor and stratum, so that they reach the estimator as hashable keys (its fast path) and
    still write to JSONL.

    Lists, tuples and numpy arrays become tuples (recursively), numpy scalars plain numbers,
    dicts tuples of sorted ``(str(key), value)`` pairs, sets sorted tuples, anything else
    unencodable its ``repr``. JSON writes tuples as lists; reading a Turn back makes them
    tuples again, so an anchor survives the round trip equal to itself. Equal inputs give
    equal outputs, so the step groups of :func:`turngym.envs.core.canonical_anchor` are kept.
    """
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return value
    if kind is tuple and all(type(v) in _PLAIN_TYPES for v in value):
        return value  # already hashable JSON data (the usual anchor part): kept, not copied
    if kind is tuple or kind is list:
        return tuple(map(hashable_json, value))
    if isinstance(value, np.ndarray):
        return hashable_json(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return tuple(map(hashable_json, value))
    if isinstance(value, dict):
        return tuple(sorted((str(k), hashable_json(v)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(map(hashable_json, value), key=repr))
    if isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class Turn(BaseModel):
    """One policy step."""

    step: int
    """Index of the turn in its trajectory, from 0."""
    prompt_ids: list[int] = Field(default_factory=list)
    response_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(default_factory=list)
    """Rollout logprobs of ``response_ids``."""
    prompt_text: str = ""
    response_text: str = ""
    observation: str = ""
    """What the environment answered to this turn's action."""
    reward: float = 0.0
    anchor: Any = None
    """The environment state the action was taken in (``info["anchor"]`` before the step)."""
    stratum: Any = None
    action_valid: bool = True
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)
    """The rest of the step's info (JSON-safe values only)."""
    advantage: float | None = None
    """Filled in by a trainer, shown by the trajectory viewer."""
    generate_s: float = 0.0
    env_s: float = 0.0

    @field_validator("anchor", "stratum")
    @classmethod
    def _hashable(cls, value: Any) -> Hashable:
        """Anchors and strata stay hashable: ``hashable_json`` on the way in (also from JSONL)."""
        return hashable_json(value)


class Trajectory(BaseModel):
    """One episode."""

    traj_id: str
    group_id: str
    task_id: str
    env_id: str = ""
    seed: int | None = None
    turns: list[Turn] = Field(default_factory=list)
    status: str = "ok"
    """``ok``, ``truncated`` or ``error``."""
    error: str = ""
    success: bool = False
    initial_observation: str = ""

    @property
    def total_reward(self) -> float:
        return float(sum(t.reward for t in self.turns))

    @property
    def num_tool_calls(self) -> int:
        return sum(len(t.tool_calls) for t in self.turns)


def json_line(traj: Trajectory, **extra: Any) -> str:
    """``traj`` (plus ``extra`` keys) as one line of JSON, without the newline, that encodes to
    UTF-8 whatever its text holds.

    Replies and observations can hold lone surrogates (``"\\udcff"``: a broken client, an
    adversarial reply), which UTF-8 cannot encode; such a line is written with ASCII escapes
    instead, which JSON readers turn back into the same string.
    """
    data = {**traj.model_dump(mode="json"), **extra}
    line = json.dumps(data, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(data, ensure_ascii=True)
    return line


def write_jsonl(trajectories: Iterable[Trajectory], path: str | Path, append: bool = False) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as fh:
        for traj in trajectories:
            fh.write(json_line(traj) + "\n")
            fh.flush()


def read_jsonl(path: str | Path) -> Iterator[Trajectory]:
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield Trajectory.model_validate(json.loads(line))
