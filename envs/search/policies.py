"""Scripted policies for the search environment (tests, benchmarks, sanity checks).

They read observations and infos and write replies, like a model would: ``start(task)`` at the
start of an episode, then ``act(observation, info)`` each turn. They are not ``turngym.agents``
policies (an environment never imports a higher layer): the rollout engine runs them as
``EpisodePolicy(per_episode(lambda view: OracleSearchPolicy()))`` (``turngym.agents.scripted``),
one fresh object per episode, like any other policy.

- :class:`OracleSearchPolicy` may read the task's metadata: it searches for each gold
  supporting title, opens the gold passage *only if the search returned it*, and answers with
  the gold answer only when every supporting passage was found (else "unknown"). Its success
  rate therefore measures whether the corpus holds the evidence and retrieval finds it.
- :class:`RandomSearchPolicy` searches random words of what it has seen, opens random results
  and answers with random words — the floor an environment must discriminate from.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from turngym.envs.tasks import Task

__all__ = ["OracleSearchPolicy", "RandomSearchPolicy", "tool_call"]

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")


def tool_call(name: str, **arguments: Any) -> str:
    """A Hermes tool call, as a model would write it."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


class OracleSearchPolicy:
    """Searches the gold supporting titles, opens what it finds, answers the gold answer."""

    def __init__(self, k: int = 10) -> None:
        self.k = k
        self._plan: list[tuple[str, str]] = []
        self._pending: str | None = None
        self._needed: set[str] = set()
        self._found: set[str] = set()
        self._answer = ""

    def start(self, task: Task) -> None:
        meta = task.metadata
        self._plan = list(dict.fromkeys(zip(meta["supporting_ids"], meta["supporting_titles"])))
        self._needed = {doc_id for doc_id, _ in self._plan}
        self._pending = None
        self._found = set()
        golds = task.answer if isinstance(task.answer, list) else [task.answer]
        self._answer = str(golds[0])

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if self._pending is not None:  # we just searched for this passage: was it returned?
            doc_id, self._pending = self._pending, None
            if doc_id in info["anchor"][1]:
                self._found.add(doc_id)
                return tool_call("open", doc_id=doc_id)
        if self._plan:
            doc_id, title = self._plan.pop(0)
            self._pending = doc_id
            return tool_call("search", query=title, k=self.k)
        return tool_call("answer", text=self._answer if self._found == self._needed else "unknown")


class RandomSearchPolicy:
    """Random searches, opens and answers drawn from the words it has seen."""

    def __init__(self, seed: int = 0, answer_prob: float = 0.25) -> None:
        self.rng = np.random.default_rng(seed)
        self.answer_prob = answer_prob
        self._words: list[str] = []

    def start(self, task: Task) -> None:
        self._words = _WORD.findall(task.prompt)

    def act(self, observation: str, info: dict[str, Any]) -> str:
        seen = _WORD.findall(observation) or self._words
        ids = list(info.get("anchor", ("", ()))[1])
        roll = self.rng.random()
        if roll < self.answer_prob:
            n = int(self.rng.integers(1, 4))
            return tool_call("answer", text=" ".join(self.rng.choice(seen, size=n)))
        if ids and roll < self.answer_prob + 0.25:
            return tool_call("open", doc_id=str(self.rng.choice(ids)))
        n = int(self.rng.integers(1, 4))
        return tool_call("search", query=" ".join(self.rng.choice(self._words or seen, size=n)))

