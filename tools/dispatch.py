"""One turn of tool use: a reply's tool calls run against an environment's tools.

The contract
------------
Environments whose action is a model reply holding tool calls share this per-turn dispatch,
so every such environment answers the same way:

- :func:`read_tool_calls` turns the reply into calls with the configured parser style
  (``ToolTurnOptions.tool_call_style``). A parse error, or a reply with no call at all, gives
  ``([], why)``: the environment answers with :func:`invalid_reply` (an observation, never an
  exception). An environment's own shortcuts (an ``<answer>`` tag, a fenced block) come in
  through ``extra``, which sees the reply and the parsed calls and returns the calls to run.
- :func:`run_tool_calls` runs at most ``max_calls_per_turn`` calls in order; the rest are
  skipped with one note. Each call is looked up by name among the environment's
  :class:`~turngym.tools.base.Tool` s, its arguments validated by the tool's pydantic model and
  passed to its handler (the ``handlers`` entry of that name, else the tool's own ``fn``),
  which returns text. An unknown tool, invalid arguments or a :class:`ToolError` raised by the
  handler become that call's ``error: ...`` text and make the turn invalid; any other
  exception is the environment's fault and propagates.
- Budget: the ``observation_chars`` of a turn are split evenly among the calls that may run
  (``observation_chars // min(calls, max_calls_per_turn)``), capped per call by
  ``output_chars`` when given. Each result is truncated to its share (head and tail kept) and
  marked as tool output by :func:`~turngym.tools.base.format_tool_output`; the joined
  observation is cut to ``observation_chars`` once more.
- A successful call of a tool named in ``final`` (submit, answer) is the last one the reply
  runs: the calls after it are dropped without a note.

Nothing here reads or changes environment state except through the handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from turngym.tools.base import Tool, ToolCall, ToolError, format_tool_output, truncate_text
from turngym.tools.parsers import parse_tool_calls

__all__ = [
    "CallRecord",
    "Handler",
    "ToolTurn",
    "ToolTurnOptions",
    "invalid_reply",
    "read_tool_calls",
    "run_tool_calls",
]

Handler = Callable[[Any], Any]
"""Runs one validated call: gets the tool's argument model instance, returns the text to show."""


class ToolTurnOptions(BaseModel):
    """How one turn's tool calls are read and shown; environments subclass it for their options."""

    model_config = ConfigDict(extra="forbid")

    observation_chars: int = Field(default=8000, ge=200)
    """Budget of one turn's observation, shared by the reply's calls."""
    max_calls_per_turn: int = Field(default=4, ge=1)
    """Tool calls run per reply; further calls are skipped with a note."""
    tool_call_style: str = "hermes"
    """Tool-call syntax (a style registered in turngym.tools.parsers)."""


@dataclass(frozen=True)
class CallRecord:
    """What happened to one call of the reply."""

    name: str
    """The tool name as the model wrote it."""
    arguments: dict[str, Any]
    """The validated arguments (``model_dump()``) when the call ran, else as the model wrote them."""
    output: str
    """The tool's text before truncation, or ``error: ...``."""
    ok: bool
    """Whether the call ran (False: unknown tool, invalid arguments or a ToolError)."""


@dataclass(frozen=True)
class ToolTurn:
    """The result of :func:`run_tool_calls`."""

    observation: str
    """The marked, truncated outputs of the calls that were handled, and the skip note."""
    records: list[CallRecord] = field(default_factory=list)
    """One record per call that was handled, in order (skipped and dropped calls have none)."""
    skipped: int = 0
    """Calls beyond ``max_calls_per_turn`` that did not run."""

    @property
    def valid(self) -> bool:
        """No handled call failed (the ``action_valid`` of the turn)."""
        return all(r.ok for r in self.records)

    @property
    def ran(self) -> list[dict[str, Any]]:
        """The calls that ran, as ``{"name", "arguments"}`` dicts (``info["tool_calls"]``)."""
        return [{"name": r.name, "arguments": r.arguments} for r in self.records if r.ok]


def read_tool_calls(
    action: str,
    style: str,
    extra: Callable[[str, list[ToolCall]], list[ToolCall]] | None = None,
) -> tuple[list[ToolCall], str]:
    """The reply's tool calls, or ``([], why the reply is invalid)`` (see the module docstring)."""
    parsed = parse_tool_calls(action, style)
    if parsed.errors:
        return [], parsed.errors[0]
    calls = list(parsed.calls)
    if extra is not None:
        calls = extra(action, calls)
    if not calls:
        return [], "no tool call found"
    return calls, ""


def invalid_reply(why: str, help_text: str) -> str:
    """The observation for a reply that holds no runnable tool call."""
    return f"Invalid reply ({why}). {help_text}"


def run_tool_calls(
    calls: Sequence[ToolCall],
    tools: Sequence[Tool],
    handlers: Mapping[str, Handler] | None = None,
    options: ToolTurnOptions | None = None,
    *,
    output_chars: int | None = None,
    final: Collection[str] = (),
) -> ToolTurn:
    """Run ``calls`` against ``tools`` and build the turn's observation (see the module docstring)."""
    options = options or ToolTurnOptions()
    handlers = handlers or {}
    by_name = {tool.name: tool for tool in tools}
    most = options.max_calls_per_turn
    if not calls:
        return ToolTurn(observation="")
    share = options.observation_chars // min(len(calls), most)
    limit = share if output_chars is None else min(share, output_chars)
    outputs: list[str] = []
    records: list[CallRecord] = []
    skipped = 0
    for i, call in enumerate(calls):
        if i >= most:
            skipped = len(calls) - i
            outputs.append(f"(skipped {skipped} more tool calls: at most {most} per reply)")
            break
        record = _run_one(call, by_name, handlers)
        records.append(record)
        outputs.append(format_tool_output(call.name, record.output, limit=limit))
        if record.ok and record.name in final:
            break  # a final call (submit, answer) is the last thing a reply does
    observation, _ = truncate_text("\n".join(outputs), options.observation_chars)
    return ToolTurn(observation=observation, records=records, skipped=skipped)


def _run_one(call: ToolCall, by_name: Mapping[str, Tool], handlers: Mapping[str, Handler]) -> CallRecord:
    tool = by_name.get(call.name)
    try:
        if tool is None:
            raise ToolError(f"unknown tool {call.name!r}; tools: {', '.join(by_name)}")
        args: BaseModel = tool.validate(call)
        handler = handlers.get(tool.name, tool.fn)
        if handler is None:  # the environment's bug, not the model's: fail loudly
            raise LookupError(f"tool {tool.name!r} has no handler: pass one in handlers or give the Tool an fn.")
        output = str(handler(args))
    except ToolError as err:
        return CallRecord(name=call.name, arguments=dict(call.arguments), output=f"error: {err}", ok=False)
    return CallRecord(name=tool.name, arguments=args.model_dump(), output=output, ok=True)
