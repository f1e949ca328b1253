"""The turn table: every turn of a step's trajectories as columns, built once per step.

A training step reads the same turns three times: the estimator needs their rewards, ids,
steps, anchors and strata; the training rows need their prompt and response ids and rollout
logprobs; the trajectory viewer needs each turn's advantage back on the turn. Each of these
reads row ``i`` of one :class:`TurnTable`, so they agree on the order by construction:
trajectory by trajectory, and inside a trajectory turn by turn, as the trajectories came.

Contract:

- :meth:`TurnTable.from_trajectories` makes the columns (one entry per turn, turns with an
  empty response included: they still carry a reward and a step).
- :meth:`TurnTable.estimator_columns` is what ``turngym.trainers.estimators.estimate_columns``
  takes: the row-batch columns every estimator gets, and the extra ones
  (:data:`~turngym.trainers.estimators.EXTRA_COLUMNS`) an estimator receives when its signature
  names them.
- :func:`turngym.trainers.rows.rows_from_table` makes the training rows (one per turn with a
  response); :meth:`TurnTable.write_advantages` puts the advantages on the turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from turngym.agents.trajectory import Trajectory, Turn
from turngym.trainers.estimators import anchor_codes

__all__ = ["TurnTable"]


@dataclass(frozen=True, eq=False)
class TurnTable:
    """One entry per turn in every column, in the order described in the module docstring."""

    trajectories: Sequence[Trajectory]
    turns: list[Turn]
    rewards: np.ndarray
    """The environment's reward of each turn (float64)."""
    group_ids: list[str]
    traj_ids: list[str]
    task_ids: list[str]
    steps: np.ndarray
    """The turn's index inside its trajectory (int64)."""
    anchors: list[Any]
    anchor_codes: np.ndarray
    """The anchors interned once here (int64, equal exactly where the anchors are): GiGPO groups
    these integers instead of hashing every tuple anchor again."""
    strata: list[Any]
    action_valid: np.ndarray
    """False where the reply could not be parsed (bool)."""
    prompt_lengths: np.ndarray
    response_lengths: np.ndarray
    """Tokens of each turn's prompt and response (int64)."""
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    logprobs: list[list[float]]
    """The rollout engine's logprob of each response token."""

    @classmethod
    def from_trajectories(cls, trajectories: Sequence[Trajectory]) -> TurnTable:
        pairs = [(t, turn) for t in trajectories for turn in t.turns]
        turns = [turn for _, turn in pairs]
        anchors = [turn.anchor for turn in turns]
        return cls(
            trajectories=trajectories,
            turns=turns,
            rewards=np.array([turn.reward for turn in turns], dtype=np.float64),
            group_ids=[t.group_id for t, _ in pairs],
            traj_ids=[t.traj_id for t, _ in pairs],
            task_ids=[t.task_id for t, _ in pairs],
            steps=np.array([turn.step for turn in turns], dtype=np.int64),
            anchors=anchors,
            anchor_codes=anchor_codes(anchors),
            strata=[turn.stratum for turn in turns],
            action_valid=np.array([turn.action_valid for turn in turns], dtype=bool),
            prompt_lengths=np.array([len(turn.prompt_ids) for turn in turns], dtype=np.int64),
            response_lengths=np.array([len(turn.response_ids) for turn in turns], dtype=np.int64),
            prompt_ids=[turn.prompt_ids for turn in turns],
            response_ids=[turn.response_ids for turn in turns],
            logprobs=[turn.logprobs for turn in turns],
        )

    def __len__(self) -> int:
        return len(self.turns)

    def estimator_columns(self) -> dict[str, Any]:
        """The columns ``estimate_columns`` reads, by the names of the estimator contract."""
        return {
            "rewards": self.rewards,
            "group_ids": self.group_ids,
            "traj_ids": self.traj_ids,
            "steps": self.steps,
            "anchors": self.anchors,
            "anchor_codes": self.anchor_codes,
            "strata": self.strata,
            "action_valid": self.action_valid,
            "prompt_lengths": self.prompt_lengths,
            "token_counts": self.response_lengths,
        }

    def write_advantages(self, advantages: Sequence[float] | np.ndarray) -> None:
        """Set ``turn.advantage`` on every turn (what the trajectory viewer shows)."""
        if len(advantages) != len(self.turns):
            raise ValueError(f"{len(advantages)} advantages for {len(self.turns)} turns")
        for turn, value in zip(self.turns, np.asarray(advantages, dtype=np.float64).tolist()):
            turn.advantage = value
