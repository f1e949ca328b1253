"""SearchWorldEnv: the search environment over one generated world per task.

The tools, observations, reward (exact match or F1, the optional OTC tool cost and format
penalty) and info keys (``stratum`` = searches so far, ``anchor`` = question and last result ids)
are :class:`~turngym.envs.search.env.SearchEnv`'s; what differs is the corpus. Each task carries
its world's passages, and ``reset`` searches that world only: an in-memory BM25 index
(:class:`WorldIndex`, the search env's tokeniser and scoring) built the first time a world is
seen and shared, per process, by every episode over the same world (a rollout group, the three
questions of a test world). Building one takes about a millisecond (bench/RESULTS.md).

``expert_reply`` is the oracle: it follows the question's chain (``metadata["chain"]``) by
searching the current entity's name, opening the hit whose title is that name, and reading the
next name out of the passage *text* (:func:`~turngym.envs.searchworld.world.read_field`); it
answers with what it read, never with the gold answer. So its demonstrations show a model the
whole skill: queries copied from the question or from the last passage, answers copied from
what was read.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from turngym.envs.search.corpus import Corpus, Document
from turngym.envs.search.env import SearchEnv, styled_instructions
from turngym.envs.search.retrieval import BM25Retriever
from turngym.envs.searchworld.world import read_field
from turngym.envs.tasks import SuiteError, Task, TaskSuite
from turngym.tools import render_tool_call

__all__ = ["SearchWorldEnv", "WorldIndex", "world_index"]


class WorldIndex(BM25Retriever):
    """BM25 over one small corpus, kept in memory (the base class's on-disk cache would grow by
    one folder per generated world)."""

    def __init__(self, corpus: Corpus, options: BM25Retriever.Options | None = None) -> None:
        import bm25s

        # bm25s sets its logger to DEBUG on import and logs a line per index built; with a
        # world per task that would flood a training run's log.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self.corpus = corpus
        self.options = options or self.Options()
        self._stemmer = self._make_stemmer(self.options.stemmer)
        self.index_dir = None
        self.built = True
        texts = [f"{d.title} {d.text}" for d in corpus.documents]
        tokens = bm25s.tokenize(texts, stopwords=self.options.stopwords, stemmer=self._stemmer, show_progress=False)
        self.model = bm25s.BM25(k1=self.options.k1, b=self.options.b, method=self.options.method)
        self.model.index(tokens, show_progress=False)


_INDEXES: OrderedDict[str, WorldIndex] = OrderedDict()
_MAX_INDEXES = 256  # about 0.1 MB each; enough for every world of a training step and the test suite


def world_index(task: Task) -> WorldIndex:
    """The index of ``task``'s world, built once per process (least recently used dropped)."""
    meta = task.metadata
    key = meta.get("world") or ""
    if key in _INDEXES:
        _INDEXES.move_to_end(key)
        return _INDEXES[key]
    try:
        docs = [Document(str(i), str(title), str(text)) for i, title, text in meta["passages"]]
    except (KeyError, TypeError, ValueError):
        raise SuiteError(f"task {task.id!r} carries no world (metadata['passages'] of [id, title, text])") from None
    index = WorldIndex(Corpus(docs))
    if key:
        _INDEXES[key] = index
        while len(_INDEXES) > _MAX_INDEXES:
            _INDEXES.popitem(last=False)
    return index


class SearchWorldEnv(SearchEnv):
    """Multi-hop questions about a generated fictional world: search it, open passages, answer."""

    description = "Generated-world QA: search a fictional world's passages (BM25), open them, answer; EM reward."
    instructions_template = (
        "Answer the question about a fictional world by searching its passages. "
        "Use the tools: search(query) returns passages with their ids and titles; open(doc_id) shows a "
        "passage; answer(text) gives your final answer and ends the episode. Search for the name in the "
        "question, open its passage, and if the question asks about another entity, search for that name next. "
        "Call a tool as{call}"
        "Answer with the exact word, name or year from the passage."
    )
    instructions = styled_instructions(instructions_template)

    def __init__(self, suite: str | TaskSuite | None = "searchworld-2hop", split: str = "train",
                 max_turns: int = 10, render_mode: str | None = None, **options: Any) -> None:
        super().__init__(suite=suite, split=split, max_turns=max_turns, render_mode=render_mode, **options)
        if self.options.corpus is not None or self.options.retriever != "bm25":
            raise ValueError("invalid option for SearchWorldEnv: each task brings its own corpus "
                             "(corpus= and retriever= do not apply)")

    @property
    def corpus(self) -> Corpus:
        return self.retriever.corpus

    @property
    def retriever(self) -> WorldIndex:
        if self.task is None:
            raise RuntimeError("SearchWorldEnv has no world before reset()")
        return world_index(self.task)

    def expert_reply(self) -> str | None:
        """The oracle's next reply (see the module docstring). Reads state; changes nothing."""
        if self.task is None:
            return None
        name, *fields = self.task.metadata["chain"]
        for i, fld in enumerate(fields):
            doc = next((d for d in self.corpus.documents if d.title == name and d.id in self.opened_ids), None)
            if doc is None:
                return self._find(name)
            value = read_field(doc.text, name, fld)
            if value is None:  # the passage does not say: nothing a reader could do (tests forbid it)
                return render_tool_call("answer", {"text": "unknown"}, self.call_style)
            if i == len(fields) - 1:
                return render_tool_call("answer", {"text": value}, self.call_style)
            name = value
        return None

    def _find(self, name: str) -> str:
        """Open the passage titled ``name`` if the last search was for it and listed it, else
        search for it. (Opening it off a search for an earlier name would save a turn, but
        demonstrations in one rhythm, a search and an open per hop, are easier to learn.)"""
        for doc_id in self.last_result_ids if self.queries and self.queries[-1] == name else ():
            doc = self.corpus.get(doc_id)
            if doc is not None and doc.title == name:
                return render_tool_call("open", {"doc_id": doc_id}, self.call_style)
        if name not in self.queries:
            return render_tool_call("search", {"query": name}, self.call_style)
        return render_tool_call("answer", {"text": "unknown"}, self.call_style)  # searched and not found: tests forbid it

    def example_actions(self) -> list[str]:
        return [
            render_tool_call("search", {"query": "Alin Marley"}, self.call_style),
            render_tool_call("open", {"doc_id": "d01"}, self.call_style),
            "<answer>painter</answer>",
            "no tool call here",
        ]
