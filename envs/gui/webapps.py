"""turngym's own web apps as environments: the env serves the apps on loopback itself.

Each environment instance runs one :class:`~turngym.envs.gui.apps.server.AppServer` on
127.0.0.1 (a free port), resets the app state from the task at every episode, and after every
step runs the task's check on that state (:mod:`turngym.envs.gui.apps.tasks`). State tasks (add
to the cart, place an order, register, save settings) end as soon as the check passes; an
``answer`` call ends any task, and answer tasks (the price of a product) are checked on it.
Reward: 1 for a solved task, 0 otherwise.
"""

from __future__ import annotations

from typing import Any

from turngym.envs.gui.apps.server import AppServer
from turngym.envs.gui.apps.tasks import ROUTES, TASK_KINDS, check_task, initial_state
from turngym.envs.gui.env import GUIEnv, Outcome
from turngym.envs.tasks import Task

__all__ = ["WebAppEnv"]


class WebAppEnv(GUIEnv):
    """A task on turngym's shop, registration form or settings page."""

    description = "turngym's web apps (shop, multi-page form, settings) served on loopback, in headless Chromium."

    def __init__(self, suite: Any = "webapps", split: str = "train", max_turns: int = 15, **kwargs: Any) -> None:
        super().__init__(suite=suite, split=split, max_turns=max_turns, **kwargs)
        self.server: AppServer | None = None

    @property
    def app(self) -> AppServer:
        if self.server is None:
            self.server = AppServer(ROUTES)
        return self.server

    def _origins(self) -> list[str]:
        return [self.app.origin]

    async def _open(self, page: Any, task: Task) -> str:
        self.app.reset(initial_state(task))
        await page.goto(self.app.origin + TASK_KINDS[task.metadata["kind"]].start)
        return task.prompt

    async def _outcome(self, page: Any, answer: str | None) -> Outcome:
        assert self.task is not None
        solved = check_task(self.task, self.app.snapshot_state(), answer)
        if solved or answer is not None:
            return Outcome(done=True, reward=1.0 if solved else 0.0, success=solved)
        return Outcome()

    def close(self) -> None:
        super().close()
        if self.server is not None:
            self.server.close()
            self.server = None
