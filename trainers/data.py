"""Where a run's training tasks come from: a generated stream or a frozen split.

A suite with a generator (``TaskSuite.generator``) trains on
:class:`~turngym.envs.tasks.TaskStream`: task ``i`` of the stream is a pure function of the run
seed and ``i``, never equal to a task of any other split of the suite (the held-out one), so a
policy cannot memorise its training set and a resumed run continues the stream exactly from its
data cursor. Otherwise (or with ``env.train_tasks: split``) training walks the frozen train split,
epoch ``e`` in a permutation seeded by ``(seed, e)``.

The supervised warm start draws its demonstration tasks, and the validation tasks that can end it
early (``sft.stop_at_success``), from two more independent streams of the same generator (other
salts), or uniformly from the frozen split.
"""

from __future__ import annotations

import numpy as np

from turngym.envs.tasks import Task, TaskStream, TaskSuite

__all__ = ["TaskCursor", "TrainingTasks"]

DEMONSTRATION_SALT = 7919  # the warm start's stream: independent of the RL stream (salt 0)
VALIDATION_SALT = 7927  # the warm start's validation tasks: independent of both


class TrainingTasks:
    """Indexable training tasks; ``source`` is ``auto``, ``generated`` or ``split``."""

    def __init__(self, suite: TaskSuite, source: str, train_split: str, seed: int) -> None:
        if source == "generated" and suite.generator is None:
            raise ValueError(f"env.train_tasks=generated, but suite {suite.name!r} has no generator; "
                             "use env.train_tasks=split")
        self.generated = source == "generated" or (source == "auto" and suite.generator is not None)
        self.seed = seed
        self.split: list[Task] = suite.split(train_split)  # also validates the split name
        if self.generated:
            held_out = [t for t in suite.tasks if t.split != train_split]
            self.stream = TaskStream(suite, seed, exclude=held_out)
            self.demo_stream = TaskStream(suite, seed, exclude=held_out, salt=DEMONSTRATION_SALT)
            self.validation_stream = TaskStream(suite, seed, exclude=held_out, salt=VALIDATION_SALT)

    def __getitem__(self, index: int) -> Task:
        if self.generated:
            return self.stream.task(index)
        epoch, pos = divmod(index, len(self.split))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.split))
        return self.split[int(order[pos])]

    def take(self, start: int, count: int) -> list[Task]:
        return [self[i] for i in range(start, start + count)]

    def demonstrations(self, count: int) -> list[Task]:
        """The warm start's tasks (fresh generated ones, or drawn from the frozen split)."""
        return self._salted(self.demo_stream if self.generated else None, DEMONSTRATION_SALT, count)

    def validation(self, count: int) -> list[Task]:
        """The warm start's validation tasks (fresh generated ones, or drawn from the frozen split)."""
        return self._salted(self.validation_stream if self.generated else None, VALIDATION_SALT, count)

    def _salted(self, stream: TaskStream | None, salt: int, count: int) -> list[Task]:
        if stream is not None:
            return stream.tasks(0, count)
        rng = np.random.default_rng([self.seed, salt])
        return [self.split[int(i)] for i in rng.integers(len(self.split), size=count)]

    def describe(self) -> str:
        if self.generated:
            return f"generated tasks (an unbounded stream, seed {self.seed}, held-out tasks excluded)"
        return f"the frozen split ({len(self.split)} tasks)"


class TaskCursor:
    """The data cursor: a position in a run's :class:`TrainingTasks`. :meth:`take` hands out the
    next tasks and moves past them; ``position`` is what a checkpoint keeps."""

    def __init__(self, tasks: TrainingTasks, position: int = 0) -> None:
        self.tasks, self.position = tasks, position

    def take(self, count: int) -> list[Task]:
        out = self.tasks.take(self.position, count)
        self.position += count
        return out
