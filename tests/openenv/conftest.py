"""Shared pieces of the OpenEnv interop tests: an environment that counts its instances (to
see that a session leaves nothing behind) and servers bound to 127.0.0.1 in this process."""

import threading

import gymnasium as gym
import pytest

from turngym.envs import Task, TaskSuite, TurnEnv


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


@pytest.fixture
def counting():
    """``test/Counting-v0`` registered for one test (then removed: the conformance tests list
    every registered environment and must not meet this one)."""
    gym.register("test/Counting-v0", entry_point=CountingEnv, disable_env_checker=True)
    yield CountingEnv
    del gym.registry["test/Counting-v0"]
