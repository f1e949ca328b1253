"""Small real environments for the evaluation tests.

- ``evaltest/Sokoban-v0``: turngym's real Sokoban env on a suite of generated 6x6 levels
  (3 train + 6 test), so ``scripted:solver`` has a real solver to follow.
- ``evaltest/Coin-v0``: a one-or-more-turn env whose task ``p`` sets the chance that a "flip"
  succeeds (drawn from the env's seeded generator): outcomes vary by seed, like a sampled policy.
  Task ``boom`` raises in ``step`` so error handling is exercised.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pytest
from turngym.envs.core import TurnEnv
from turngym.envs.grid.sokoban import generate_level
from turngym.envs.tasks import Task, TaskSuite, register_suite


def _sokoban_suite() -> TaskSuite:
    tasks = []
    for i in range(9):
        level, _ = generate_level(seed=1000 + i, height=6, width=6, boxes=1, min_solution=3, max_solution=12)
        split = "train" if i < 3 else "test"
        tasks.append(Task(id=f"sok-{i}", prompt="Push the box onto the target.", metadata={"board": level.render()}, split=split))
    return TaskSuite("evaltest-sokoban", tasks)


def _coin_suite() -> TaskSuite:
    probs = [0.1, 0.3, 0.5, 0.7, 0.9, 0.5]
    tasks = [Task(id=f"coin-{i}", metadata={"p": p}, split="test") for i, p in enumerate(probs)]
    tasks.append(Task(id="coin-train", metadata={"p": 0.5}, split="train"))
    return TaskSuite("evaltest-coin", tasks)


class CoinEnv(TurnEnv):
    """Reply ``flip``: succeed with probability p (seeded); ``wait`` uses a turn and a tool call."""

    description = "test env: seeded coin flips"

    def __init__(self, suite: Any = "evaltest-coin", split: str = "test", max_turns: int = 3, **kw: Any) -> None:
        super().__init__(suite=suite, split=split, max_turns=max_turns, **kw)

    def _reset_task(self, task: Task):
        if task.metadata.get("boom_on_reset"):
            raise RuntimeError("the environment broke")
        return f"Task {task.id}: reply flip or wait.", {"anchor": "start"}

    def _step(self, action: str):
        assert self.task is not None
        if action.strip() == "wait":
            return "waited", 0.0, False, {"anchor": f"t{self.turn}", "tool_calls": [{"name": "wait", "arguments": {}}]}
        if action.strip() != "flip":
            return "reply flip or wait", 0.0, False, {"action_valid": False, "anchor": f"t{self.turn}"}
        won = bool(self.np_random.random() < self.task.metadata["p"])
        return ("heads" if won else "tails"), float(won), True, {"success": won, "anchor": f"t{self.turn}"}

    def example_actions(self) -> list[str]:
        return ["flip", "wait", "nonsense"]


register_suite("evaltest-sokoban", _sokoban_suite, "test suite")
register_suite("evaltest-coin", _coin_suite, "test suite")
# Straight into Gymnasium's registry: turngym.make finds them, but `turngym envs` (and any
# test that checks every listed turngym environment) does not list these test doubles.
gym.register("evaltest/Sokoban-v0", "turngym.envs.grid.sokoban:SokobanEnv", kwargs={"suite": "evaltest-sokoban", "max_turns": 20}, disable_env_checker=True)
gym.register("evaltest/Coin-v0", CoinEnv, kwargs={"suite": "evaltest-coin"}, disable_env_checker=True)


@pytest.fixture
def sokoban_id() -> str:
    return "evaltest/Sokoban-v0"


@pytest.fixture
def coin_id() -> str:
    return "evaltest/Coin-v0"
