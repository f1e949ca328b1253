"""Shared pieces of the OpenEnv interop tests: an environment that counts its instances (to
see that a session leaves nothing behind) and servers bound to 127.0.0.1 in this process."""

import threading

import pytest

pytest.importorskip("openenv.core", reason="the [openenv] extra (openenv-core) is not installed")

import turngym  # noqa: E402
from turngym.envs import Task, TaskSuite, TurnEnv  # noqa: E402


class CountingEnv(TurnEnv):
    """Says how many steps it took; ends after three. Counts instances made and closed."""

    description = "test: counts its instances"
    instructions = "Say anything."
    made = 0
    closed = 0
    lock = threading.Lock()

    def __init__(self, max_turns: int = 20) -> None:
        suite = TaskSuite("counting", [Task(id="c-train", split="train"), Task(id="c-test", split="test")])
        super().__init__(suite=suite, max_turns=max_turns)
        with CountingEnv.lock:
            CountingEnv.made += 1
        self._closed = False

    def _reset_task(self, task):
        return f"task {task.id}", {"anchor": 0}

    def _step(self, action):
        return f"step {self.turn}: {action}", 0.5, self.turn >= 3, {"anchor": self.turn, "success": self.turn >= 3}

    def close(self):
        if not self._closed:
            self._closed = True
            with CountingEnv.lock:
                CountingEnv.closed += 1

    @classmethod
    def live(cls) -> int:
        with cls.lock:
            return cls.made - cls.closed


turngym.register("test/Counting-v0", entry_point=CountingEnv, description=CountingEnv.description)


@pytest.fixture
def counting():
    return CountingEnv
