"""SearchEnv: answer a (multi-hop) question by searching a corpus, reading passages, answering.

Tools (called in the model's tool-call style, Hermes ``<tool_call>{"name": ..., "arguments":
{...}}</tool_call>`` by default; several per reply allowed up to ``max_calls_per_turn``; run
through the tool contract, :func:`turngym.tools.dispatch`):

- ``search(query, k)``: the top-k passages as ``[rank] doc_id | title`` + a snippet;
- ``open(doc_id)``: the full passage;
- ``answer(text)``: the final answer; ends the episode. ``<answer>text</answer>`` (the Search-R1
  convention) is accepted as the same call.

Observation: the results of the reply's calls, each wrapped by ``format_tool_output`` and the
whole turn cut to ``observation_chars``. A reply with no tool call, unparseable JSON, an unknown
tool or bad arguments gets an error observation and ``info["action_valid"] = False``.

Reward (only at ``answer``; 0 otherwise, and 0 when the turn budget runs out):
``correct * max(0, 1 - tool_cost * tool_calls)`` where ``correct`` is the exact match or the
token F1 (``reward_metric``) of the answer against the gold answers, normalised as in SQuAD,
and ``tool_calls`` counts the search and open calls (the OTC-style tool-cost term, off by
default). Each invalid reply adds ``-invalid_penalty`` (the format term, off by default).

Info: ``stratum`` = number of search calls so far (Stratified GRPO); ``anchor`` = (question,
ids of the last search's results) (GiGPO); at the answer ``em``, ``f1``, ``answer`` and
``success`` (= exact match).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from turngym.envs.core import TurnEnv
from turngym.envs.search.corpus import Corpus, load_corpus, load_task_file
from turngym.envs.search.metrics import score_answer, tool_cost_factor
from turngym.envs.search.retrieval import (
    Retriever,
    SearchBackendError,
    make_retriever,
    retriever_needs_corpus,
)
from turngym.envs.tasks import SuiteError, Task, TaskSuite
from turngym.tools import ToolResult, ToolTurnOptions
from turngym.tools.base import Tool, ToolCall, ToolError, truncate_text
from turngym.tools.dispatch import dispatch, invalid_reply, parse_options
from turngym.tools.parsers import call_example, render_tool_call, tools_help

__all__ = ["SearchEnv", "SearchOptions", "SEARCH_TOOLS"]


class SearchArgs(BaseModel):
    query: str = Field(min_length=1)
    """What to search for (keywords or a question)."""
    k: int | None = Field(default=None, ge=1)
    """How many results (default 5, capped by the environment)."""


class OpenArgs(BaseModel):
    doc_id: str = Field(min_length=1)
    """The id of a passage, as shown in search results."""


class AnswerArgs(BaseModel):
    text: str
    """The final answer: a short span (a name, a date, yes/no), not a sentence."""


SEARCH_TOOL = Tool("search", "Search the document collection; returns the top passages with their ids and titles.", SearchArgs)
OPEN_TOOL = Tool("open", "Read the full passage with the given id.", OpenArgs)
ANSWER_TOOL = Tool("answer", "Give the final answer (a short span) and end the episode.", AnswerArgs)
SEARCH_TOOLS = [SEARCH_TOOL, OPEN_TOOL, ANSWER_TOOL]


def search_help(style: str | None = None) -> str:
    """How to call the tools (the reset observation's last line, the help after an invalid
    reply), with the example call in ``style`` (Hermes for None)."""
    return tools_help(SEARCH_TOOLS, ("search", {"query": "..."}), style)


def styled_instructions(template: str, style: str | None = None) -> str:
    """``template`` (a search environment's ``instructions_template``) with its ``{call}`` slot
    filled by an example search call in ``style`` (Hermes for None)."""
    return template.format(call=call_example("search", {"query": "..."}, style, end=". "))


HELP = search_help()  # in Hermes, the default style
_ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)


def _snippet(text: str, limit: int) -> str:
    """The start of ``text``, cut at a word boundary within ``limit`` characters."""
    if len(text) <= limit:
        return text
    head = text[:limit].rsplit(" ", 1)[0] if limit else ""
    return f"{head} ..." if head else ""


def _with_answer_tags(action: str, calls: list[ToolCall]) -> list[ToolCall]:
    """The parsed calls, then an answer call per ``<answer>...</answer>`` (Search-R1 style)."""
    return calls + [ToolCall(name="answer", arguments={"text": text}) for text in _ANSWER_TAG.findall(action)]


class SearchOptions(ToolTurnOptions):
    """The search environment's options (keyword arguments of ``turngym.make``); the per-turn
    tool options (observation_chars, max_calls_per_turn, tool_call_style) come from
    :class:`~turngym.tools.ToolTurnOptions`, with a smaller observation budget."""

    model_config = ConfigDict(extra="forbid")

    corpus: str | None = None
    """Path of a JSONL(.gz) corpus of {id, title, text}; None: the packaged multi-hop QA corpus."""
    retriever: str = "bm25"
    """Retriever name from the registry: bm25, dense, hybrid, web, or one you registered."""
    retriever_options: dict[str, Any] = Field(default_factory=dict)
    """Options of that retriever (e.g. cache_dir; url for web)."""
    default_k: int = Field(default=5, ge=1)
    """Results per search when the call gives no k."""
    max_k: int = Field(default=10, ge=1)
    """Most results one search may return."""
    snippet_chars: int = Field(default=200, ge=0)
    """Characters of passage text shown per search result."""
    open_chars: int = Field(default=2000, ge=1)
    """Characters of an opened passage (head and tail kept)."""
    observation_chars: int = Field(default=6000, ge=200)
    """Budget of one turn's observation, shared by the reply's calls."""
    reward_metric: Literal["em", "f1"] = "em"
    """Reward for the answer: exact match or token F1 (SQuAD normalisation)."""
    tool_cost: float = Field(default=0.0, ge=0.0)
    """OTC-style cost: correctness is scaled by max(0, 1 - tool_cost * (search + open calls))."""
    invalid_penalty: float = Field(default=0.0, ge=0.0)
    """Format term: subtracted for every reply that is not a valid tool call."""


class SearchEnv(TurnEnv):
    """Multi-hop question answering with search, open and answer tools."""

    description = "Multi-hop QA: search a local corpus (BM25), open passages, answer; EM/F1 reward."
    #: The instructions, ``{call}`` standing for the example call in the episode's tool-call
    #: style (:func:`styled_instructions`); ``instructions`` is it in Hermes until a reset names another.
    instructions_template: ClassVar[str] = (
        "Answer the question by searching a collection of encyclopedia passages. "
        "Use the tools: search(query, k) returns passages with their ids and titles; open(doc_id) "
        "shows a full passage; answer(text) gives your final answer and ends the episode. "
        "Questions often need two or more searches (find the first fact, then search for the next). "
        "Call a tool as{call}"
        "Answer with a short span (a name, a date, a number, yes or no), not a sentence."
    )
    instructions = styled_instructions(instructions_template)

    def __init__(
        self,
        suite: str | TaskSuite | None = "search-multihop",
        split: str = "train",
        max_turns: int = 10,
        render_mode: str | None = None,
        **options: Any,
    ) -> None:
        if isinstance(suite, (str, Path)) and str(suite).endswith(".gz"):
            suite = load_task_file(suite)
        super().__init__(suite=suite, split=split, max_turns=max_turns, render_mode=render_mode)
        self.options = parse_options(SearchOptions, type(self).__name__, options)
        self.tool_call_style = self.options.tool_call_style
        self._restyle()
        self.tools = list(SEARCH_TOOLS)
        self._handlers = {"search": self._search, "open": self._open, "answer": self._answer}
        self._corpus: Corpus | None = None
        self._retriever: Retriever | None = None
        self.search_calls = 0
        self.tool_call_count = 0
        self.last_result_ids: tuple[str, ...] = ()
        self.queries: list[str] = []
        self.opened_ids: list[str] = []

    # -- lazily built, shared resources -----------------------------------------------------
    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = load_corpus(self.options.corpus)
        return self._corpus

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            name = self.options.retriever
            corpus = self.corpus if retriever_needs_corpus(name) or self.options.corpus else None
            self._retriever = make_retriever(name, corpus, self.options.retriever_options)
        return self._retriever

    # -- the episode ------------------------------------------------------------------------
    def _restyle(self) -> None:
        """Instructions and help with the example call in the style replies are read in."""
        self.instructions = styled_instructions(self.instructions_template, self.call_style)
        self.help = search_help(self.call_style)

    def _question(self) -> str:
        assert self.task is not None
        return self.task.prompt

    def _info(self) -> dict[str, Any]:
        return {"stratum": self.search_calls, "anchor": (self._question(), self.last_result_ids)}

    def _reset_task(self, task: Task) -> tuple[str, dict[str, Any]]:
        if task.answer in (None, "", []):
            raise SuiteError(f"task {task.id!r} has no gold answer")
        _ = self.retriever  # build or load the index now, not inside the first step
        self._restyle()  # the reset may have named the agent's tool-call style
        self.search_calls = 0
        self.tool_call_count = 0
        self.last_result_ids = ()
        self.queries, self.opened_ids = [], []
        obs = f"Question: {task.prompt}\n{self.help}"
        return obs, self._info()

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        turn = dispatch(action, self.tools, self._handlers, self.options, style=self.call_style,
                        read=_with_answer_tags, final={"answer"})
        if turn.error:
            obs = invalid_reply(turn.error, self.help)
            return obs, -self.options.invalid_penalty, False, {"action_valid": False, **self._info()}
        info: dict[str, Any] = {"action_valid": turn.valid, "tool_calls": turn.ran, **self._info(), **turn.info}
        reward = (0.0 if turn.valid else -self.options.invalid_penalty) + turn.reward
        return turn.observation, reward, turn.terminated, info

    # -- the tools --------------------------------------------------------------------------
    def _search(self, args: SearchArgs) -> str:
        k = min(args.k or self.options.default_k, self.options.max_k)
        self.search_calls += 1
        self.tool_call_count += 1
        self.queries.append(args.query)
        try:
            hits = self.retriever.search(args.query, k)
        except SearchBackendError as err:  # the backend's fault, not the agent's: a valid call
            self.last_result_ids = ()
            return f"error: search failed: {err}"
        self.last_result_ids = tuple(h.doc.id for h in hits)
        if not hits:
            return f"No results for {args.query!r}."
        lines = [f"Results for {args.query!r}:"]
        for rank, hit in enumerate(hits, 1):
            snippet = _snippet(hit.doc.text, self.options.snippet_chars)
            lines.append(f"[{rank}] {hit.doc.id} | {hit.doc.title}" + (f"\n    {snippet}" if snippet else ""))
        return "\n".join(lines)

    def _open(self, args: OpenArgs) -> str:
        self.tool_call_count += 1
        doc = self.retriever.get(args.doc_id.strip())
        if doc is None:
            raise ToolError(f"no passage with id {args.doc_id!r}; use an id from the search results")
        self.opened_ids.append(doc.id)
        text, _ = truncate_text(doc.text, self.options.open_chars)
        return f"{doc.id} | {doc.title}\n{text}"

    def _answer(self, args: AnswerArgs) -> ToolResult:
        assert self.task is not None
        golds = self.task.answer if isinstance(self.task.answer, list) else [str(self.task.answer)]
        scores = score_answer(args.text, golds)
        correct = scores[self.options.reward_metric]
        reward = correct * tool_cost_factor(self.tool_call_count, self.options.tool_cost)
        return ToolResult(f"Answer recorded: {args.text}", reward, True,
                          {"success": scores["em"] == 1.0, "answer": args.text, **scores})

    def expert_reply(self) -> str | None:
        """The next step of a solver that knows the gold evidence (demonstrations for ``turngym sft``).

        For each gold supporting passage not yet opened: open it if the last search returned it,
        else search its title (then its title and opening words); once every passage is open (or
        cannot be found), answer with the first gold answer. Reads state; changes nothing.
        """
        if self.task is None:
            return None
        meta = self.task.metadata
        golds = self.task.answer if isinstance(self.task.answer, list) else [str(self.task.answer)]
        for doc_id, title in dict.fromkeys(zip(meta.get("supporting_ids", []), meta.get("supporting_titles", []))):
            if doc_id in self.opened_ids:
                continue
            if doc_id in self.last_result_ids:
                return render_tool_call("open", {"doc_id": doc_id}, self.call_style)
            doc = self.retriever.get(doc_id)
            queries = [title] + ([f"{title} {' '.join(doc.text.split()[:12])}"] if doc is not None else [])
            untried = [q for q in queries if q not in self.queries]
            if untried:
                return render_tool_call("search", {"query": untried[0]}, self.call_style)
        return render_tool_call("answer", {"text": str(golds[0])}, self.call_style)

    def example_actions(self) -> list[str]:
        return [
            render_tool_call("search", {"query": "Shirley Temple government position"}, self.call_style),
            render_tool_call("open", {"doc_id": "00000000"}, self.call_style),
            "I think the answer is <answer>Chief of Protocol</answer>",
            "no tool call here",
        ]
