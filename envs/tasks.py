"""Tasks and task suites.

A :class:`Task` is one thing to do (a level, a question, a programming problem) with a stable
``id``. A :class:`TaskSuite` is a named, frozen collection of tasks split into ``train`` and
``test`` (or any other split names). Suites load from JSONL (one task object per line) or from
a Hugging Face ``datasets`` dataset; suites that ship with turngym are JSONL files inside the
package, so their splits and ids never change under a user's feet.

Suites are registered by name (``register_suite``) with a lazy loader and listed by
``turngym suites``.

A suite whose tasks come from a generator (grid puzzles) also carries that generator
(``TaskSuite.generator``: an integer seed -> a :class:`Task`). Training then draws from a
:class:`TaskStream` instead of the frozen train split: an unbounded, reproducible sequence of
generated tasks, indexed by a data cursor, from which every task whose content equals a
held-out task (:func:`content_hash`) is excluded, so a policy can neither memorise its training
set nor train on a test task.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "Task",
    "TaskSuite",
    "SuiteError",
    "register_suite",
    "load_suite",
    "suite_names",
    "suite_description",
    "content_hash",
    "TaskStream",
]


class SuiteError(ValueError):
    """A suite that cannot be loaded or a task that does not exist (one clear sentence)."""


class Task(BaseModel):
    """One task. Frozen: an id always names the same task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    """Stable identifier, unique within its suite."""
    prompt: str = ""
    """What the agent is asked to do (environments may add to it)."""
    answer: Any = None
    """The reference answer or solution, when there is one (never shown to the agent)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Everything else the environment needs (a level layout, hidden tests, ...)."""
    split: str = "train"
    """Which split the task belongs to: usually ``train`` or ``test``."""


BOOKKEEPING_KEYS = frozenset({"seed"})
"""Metadata keys that record how a task was made, not what it is (left out of its content)."""


def content_hash(task: Task) -> str:
    """What a task *is*, as a hash: its prompt and metadata, without its id, split, reference
    answer (one puzzle can have several equally good solutions) and bookkeeping keys (the
    generator seed). Two tasks with the same hash are the same puzzle."""
    meta = {k: v for k, v in task.metadata.items() if k not in BOOKKEEPING_KEYS}
    blob = json.dumps([task.prompt, meta], sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class TaskSuite:
    """A named collection of tasks with frozen splits, and optionally the generator they came
    from (``generator(seed) -> Task``), which makes fresh training tasks on demand."""

    def __init__(self, name: str, tasks: Iterable[Task], generator: Callable[[int], Task] | None = None) -> None:
        self.name = name
        self.generator = generator
        self.tasks: list[Task] = list(tasks)
        self._by_id: dict[str, Task] = {}
        for task in self.tasks:
            if task.id in self._by_id:
                raise SuiteError(f"suite {name!r} has two tasks with id {task.id!r}")
            self._by_id[task.id] = task

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_jsonl(cls, path: str | Path, name: str | None = None) -> TaskSuite:
        path = Path(path)
        if not path.is_file():
            raise SuiteError(f"task file {path} does not exist")
        tasks = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    tasks.append(Task.model_validate(json.loads(line)))
                except (json.JSONDecodeError, ValidationError) as err:
                    msg = str(err).splitlines()[0]
                    raise SuiteError(f"{path}:{lineno}: not a valid task ({msg})") from None
        return cls(name or path.stem, tasks)

    @classmethod
    def from_datasets(
        cls,
        path: str,
        name: str | None = None,
        splits: Iterable[str] = ("train", "test"),
        id_field: str = "id",
        prompt_field: str = "prompt",
        answer_field: str | None = "answer",
        **load_kwargs: Any,
    ) -> TaskSuite:
        """Load with ``datasets.load_dataset(path, **load_kwargs)``; other columns -> metadata."""
        try:
            import datasets
        except ImportError:
            raise SuiteError("loading a suite from `datasets` needs `pip install datasets`") from None
        tasks = []
        for split in splits:
            ds = datasets.load_dataset(path, split=split, **load_kwargs)
            for i, row in enumerate(ds):
                row = dict(row)
                task_id = str(row.pop(id_field, f"{split}-{i}"))
                prompt = str(row.pop(prompt_field, ""))
                answer = row.pop(answer_field, None) if answer_field else None
                tasks.append(Task(id=task_id, prompt=prompt, answer=answer, metadata=row, split=split))
        return cls(name or path, tasks)

    def to_jsonl(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for task in self.tasks:
                fh.write(task.model_dump_json() + "\n")
        tmp.replace(path)

    # -- access --------------------------------------------------------------------------
    def split(self, split: str) -> list[Task]:
        tasks = [t for t in self.tasks if t.split == split]
        if not tasks:
            known = ", ".join(sorted(self.splits())) or "none"
            raise SuiteError(f"suite {self.name!r} has no split {split!r} (splits: {known})")
        return tasks

    def splits(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tasks:
            counts[t.split] = counts.get(t.split, 0) + 1
        return counts

    def get(self, task_id: str) -> Task:
        try:
            return self._by_id[task_id]
        except KeyError:
            raise SuiteError(f"suite {self.name!r} has no task {task_id!r}") from None

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id

    def __repr__(self) -> str:
        return f"TaskSuite({self.name!r}, {self.splits()})"


class TaskStream:
    """An unbounded, reproducible stream of generated training tasks.

    ``task(i)`` is a pure function of ``(seed, i)``: the generator is called with seeds drawn
    from ``numpy.random.SeedSequence([seed, i, attempt])``, and a draw whose content equals a
    task of an excluded split (the held-out one) is skipped for the next attempt. So position
    ``i`` names the same task in every run with this seed, and a resumed run that continues
    from its data cursor continues the stream exactly. ``salt`` gives independent streams over
    the same suite (the warm start's demonstrations vs the RL tasks).
    """

    def __init__(self, suite: TaskSuite, seed: int, exclude: Iterable[Task] = (), salt: int = 0,
                 max_attempts: int = 1000) -> None:
        if suite.generator is None:
            raise SuiteError(f"suite {suite.name!r} has no generator: train on its frozen split instead")
        self.suite, self.seed, self.salt, self.max_attempts = suite, int(seed), int(salt), max_attempts
        self.generator = suite.generator
        self.excluded = frozenset(content_hash(t) for t in exclude)

    def task(self, index: int) -> Task:
        for attempt in range(self.max_attempts):
            entropy = [self.salt, self.seed % 2**63, int(index), attempt]
            gen_seed = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] % 2**62)
            task = self.generator(gen_seed)
            if content_hash(task) not in self.excluded:
                tag = f"s{self.seed}" + (f"x{self.salt}" if self.salt else "")
                return task.model_copy(update={"id": f"{self.suite.name}-gen-{tag}-{index:07d}", "split": "generated"})
        raise SuiteError(f"suite {self.suite.name!r}: {self.max_attempts} generated tasks in a row equal held-out "
                         "tasks; the generator's task space is too small for a training stream")

    def tasks(self, start: int, count: int) -> list[Task]:
        return [self.task(i) for i in range(start, start + count)]


# -- the suite registry ------------------------------------------------------------------
_SUITES: dict[str, tuple[str | Callable[[], TaskSuite], str]] = {}
_LOADED: dict[str, TaskSuite] = {}


def register_suite(name: str, loader: str | Callable[[], TaskSuite], description: str = "") -> None:
    """Register a suite; ``loader`` is a callable or a lazy ``"pkg.module:function"`` string."""
    _SUITES[name] = (loader, description)
    _LOADED.pop(name, None)


def suite_names() -> list[str]:
    return sorted(_SUITES)


def suite_description(name: str) -> str:
    return _SUITES[name][1]


def load_suite(name_or_path: str | Path) -> TaskSuite:
    """A registered suite by name, or a JSONL file by path."""
    key = str(name_or_path)
    if key in _LOADED:
        return _LOADED[key]
    if key in _SUITES:
        loader = _SUITES[key][0]
        if isinstance(loader, str):
            module, _, attr = loader.partition(":")
            loader = getattr(importlib.import_module(module), attr)
        suite = loader()
    elif key.endswith(".jsonl") or Path(key).is_file():
        suite = TaskSuite.from_jsonl(key)
    else:
        import difflib

        close = difflib.get_close_matches(key, list(_SUITES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f" (known: {', '.join(sorted(_SUITES))})"
        raise SuiteError(f"no suite named {key!r}{hint}")
    _LOADED[key] = suite
    return suite
