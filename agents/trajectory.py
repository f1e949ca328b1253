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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["Turn", "Trajectory", "json_line", "read_jsonl", "write_jsonl"]


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
