"""The tool contract: one reply's tool calls, read, validated, run and shown, for every environment.

Every environment family whose replies act through tools goes through :func:`dispatch`
(parse -> validate -> run -> format), so every family answers the same way.

Parse
    :func:`read_tool_calls` turns the reply into calls in the parser style the environment reads
    (``TurnEnv.call_style``: the model's chat template by default, see
    :func:`~turngym.tools.parsers.detect_style`). An environment's own shortcuts (an
    ``<answer>`` tag, ``<action>up</action>``, a fenced block, a one-line ``click e12``) come in
    through ``read``, which sees the reply and the parsed calls and returns the calls to run, or
    raises :class:`~turngym.tools.base.ToolError` saying why the reply is invalid. A parse error
    wins (the shortcut is not consulted); a reply with no call at all is invalid ("no tool call
    found"). An invalid reply gives a :class:`ToolTurn` with ``error`` set and nothing run: the
    environment answers it with its own observation (:func:`invalid_reply` is the default
    wording), never an exception. A reply whose calls came structured (an OpenAI-compatible
    backend's ``tool_calls``) arrives as a :class:`~turngym.tools.parsers.ToolAction`, a string
    carrying its calls: those calls are the reply's calls, as given (nothing is parsed, so no
    argument is changed by a text round trip); ``read`` and everything after are the same.
Validate
    Each call is looked up by name among the environment's :class:`~turngym.tools.base.Tool` s
    and its arguments validated by the tool's pydantic model, then by the environment's
    ``check(name, args) -> args`` (state-dependent rules: a ref must be on the current page).
    By default each call is validated as it comes, and an unknown tool or invalid arguments
    become that call's ``error: ...`` text while later calls still run (tools that only read,
    such as search). With ``whole_reply=True`` (tools that act on one world: a board, a page)
    every call is validated before any runs, and the first problem, or more calls than
    ``max_calls_per_turn``, makes the reply invalid with nothing run.
Run
    At most ``max_calls_per_turn`` calls run, in order; the rest are skipped with one note. The
    handler (the ``handlers`` entry of the tool's name, else the tool's own ``fn``) gets the
    validated arguments and returns text, or a :class:`ToolResult` carrying the call's reward,
    whether it ends the episode and info keys to report. Handlers return these; they never set
    environment state for the caller to pick up. A :class:`ToolError` raised by a handler is
    that call's ``error: ...`` text and makes the turn invalid (with ``whole_reply``, no later
    call runs); any other exception is the environment's fault and propagates. A call of a tool
    named in ``final`` (submit, answer) that succeeds, or one whose result terminates the
    episode, is the last the reply runs: the calls after it are dropped without a note.
Format
    The ``observation_chars`` of a turn are split evenly among the calls that may run
    (``observation_chars // min(calls, max_calls_per_turn)``), capped per call by
    ``output_chars`` when given. Each result is truncated to its share (head and tail kept) and
    shown by ``show`` (default :func:`~turngym.tools.base.format_tool_output`, which marks it as
    tool output; environments whose observation is a state, a board or a page, show it plain);
    the joined observation is cut to ``observation_chars`` once more.

``info["tool_calls"]`` means one thing in every environment: **the calls that ran** this step
(:attr:`ToolTurn.ran`: ``{"name", "arguments"}`` with the validated arguments), in order. A call
that failed validation, raised :class:`ToolError`, was skipped or dropped is not in it; an
invalid reply has ``[]``.

Options are validated once, here: :func:`parse_options` builds an environment's options model
(a :class:`ToolTurnOptions` subclass, or any pydantic model) from its keyword arguments and
turns a bad one into one sentence.

Nothing here reads or changes environment state except through the handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from turngym.tools.base import Tool, ToolCall, ToolError, format_tool_output, truncate_text
from turngym.tools.parsers import ToolAction, parse_tool_calls

__all__ = [
    "CallRecord",
    "Handler",
    "ToolResult",
    "ToolTurn",
    "ToolTurnOptions",
    "dispatch",
    "invalid_reply",
    "parse_options",
    "plain_output",
    "read_tool_calls",
    "run_tool_calls",
    "validate_calls",
]

Handler = Callable[[Any], Any]
"""Runs one validated call: gets the tool's argument model instance, returns text or a ToolResult."""
Reader = Callable[[str, list[ToolCall]], list[ToolCall]]
"""An environment's shortcuts: ``read(reply, parsed calls) -> calls to run`` (ToolError: invalid)."""
Check = Callable[[str, BaseModel], BaseModel]
"""An environment's state-dependent validation: ``check(tool name, args) -> args`` (ToolError: invalid)."""
Show = Callable[[str, str, int], str]
"""How one result is shown: ``show(tool name, output, limit) -> text``."""

_Options = TypeVar("_Options", bound=BaseModel)


class ToolTurnOptions(BaseModel):
    """How one turn's tool calls are read and shown; environments subclass it for their options."""

    model_config = ConfigDict(extra="forbid")

    observation_chars: int = Field(default=8000, ge=200)
    """Budget of one turn's observation, shared by the reply's calls."""
    max_calls_per_turn: int = Field(default=4, ge=1)
    """Tool calls run per reply; further calls are skipped with a note."""
    tool_call_style: str | None = None
    """Tool-call syntax (a style registered in turngym.tools.parsers); None: the style the agent
    names at reset, read from the model's chat template (detect_style), else hermes."""


def parse_options(model: type[_Options], owner: str, options: Mapping[str, Any]) -> _Options:
    """``model(**options)``, or ``ValueError("invalid option for OWNER: where: what")``."""
    try:
        return model(**options)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "options"
        raise ValueError(f"invalid option for {owner}: {where}: {first['msg']}") from None


@dataclass(frozen=True)
class ToolResult:
    """What a handler returns when its call does more than answer with text."""

    output: str
    """The text shown to the agent (before truncation)."""
    reward: float = 0.0
    """This call's reward (the turn's reward is the sum over its calls)."""
    terminated: bool = False
    """The call ended the episode (an answer, a solved task); no later call of the reply runs."""
    info: dict[str, Any] = field(default_factory=dict)
    """Keys for the step's ``info`` (``success``, scores); later calls' keys win."""


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
    reward: float = 0.0
    terminated: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolTurn:
    """The result of :func:`dispatch` (and :func:`run_tool_calls`)."""

    observation: str
    """The shown, truncated outputs of the calls that were handled, and the skip note."""
    records: list[CallRecord] = field(default_factory=list)
    """One record per call that was handled, in order (skipped and dropped calls have none)."""
    skipped: int = 0
    """Calls beyond ``max_calls_per_turn`` that did not run."""
    error: str = ""
    """Why the reply is invalid before any call ran (nothing ran); "" when its calls were handled."""

    @property
    def valid(self) -> bool:
        """The reply was read and no handled call failed (the ``action_valid`` of the turn)."""
        return not self.error and all(r.ok for r in self.records)

    @property
    def ran(self) -> list[dict[str, Any]]:
        """The calls that ran, as ``{"name", "arguments"}`` dicts: ``info["tool_calls"]``."""
        return [{"name": r.name, "arguments": r.arguments} for r in self.records if r.ok]

    @property
    def reward(self) -> float:
        return float(sum(r.reward for r in self.records))

    @property
    def terminated(self) -> bool:
        return any(r.terminated for r in self.records)

    @property
    def info(self) -> dict[str, Any]:
        """The info keys the calls reported, merged in order."""
        merged: dict[str, Any] = {}
        for r in self.records:
            merged.update(r.info)
        return merged


def read_tool_calls(action: str, style: str | None, extra: Reader | None = None) -> tuple[list[ToolCall], str]:
    """The reply's tool calls, or ``([], why the reply is invalid)`` (see the module docstring).

    A :class:`~turngym.tools.parsers.ToolAction`'s calls are taken as given, not parsed."""
    if isinstance(action, ToolAction):
        calls = list(action.calls)
    else:
        parsed = parse_tool_calls(action, style or "hermes")
        if parsed.errors:
            return [], parsed.errors[0]
        calls = list(parsed.calls)
    if extra is not None:
        try:
            calls = extra(action, calls)
        except ToolError as err:
            return [], str(err)
    if not calls:
        return [], "no tool call found"
    return calls, ""


def invalid_reply(why: str, help_text: str) -> str:
    """The observation for a reply that holds no runnable tool call."""
    return f"Invalid reply ({why}). {help_text}"


def plain_output(name: str, output: str, limit: int) -> str:
    """A ``show`` for environments whose tool output is their state (a board, a page): the text,
    truncated, without tool-output marks."""
    return truncate_text(output, limit)[0]


def validate_calls(
    calls: Sequence[ToolCall], tools: Sequence[Tool], check: Check | None = None, most: int | None = None,
) -> list[tuple[ToolCall, BaseModel]]:
    """Every call with its validated arguments; :class:`ToolError` at the first problem
    (more than ``most`` calls, an unknown tool, invalid arguments, the ``check``)."""
    if most is not None and len(calls) > most:
        raise ToolError(f"at most {most} tool calls per reply, got {len(calls)}")
    by_name = {tool.name: tool for tool in tools}
    return [(call, _validate(call, by_name, check)) for call in calls]


def dispatch(
    action: str,
    tools: Sequence[Tool],
    handlers: Mapping[str, Handler] | None = None,
    options: ToolTurnOptions | None = None,
    *,
    style: str | None = None,
    read: Reader | None = None,
    check: Check | None = None,
    whole_reply: bool = False,
    final: Collection[str] = (),
    output_chars: int | None = None,
    show: Show = format_tool_output,
) -> ToolTurn:
    """One reply, parsed, validated, run and shown (see the module docstring).

    ``style``: the parser style (default ``options.tool_call_style``, else hermes)."""
    options = options or ToolTurnOptions()
    calls, why = read_tool_calls(action, style or options.tool_call_style, read)
    if not calls:
        return ToolTurn(observation="", error=why)
    if whole_reply:
        try:
            validated = validate_calls(calls, tools, check, options.max_calls_per_turn)
        except ToolError as err:
            return ToolTurn(observation="", error=str(err))
        return _run(validated, tools, handlers, options, output_chars, final, show, stop_on_error=True)
    return run_tool_calls(calls, tools, handlers, options, output_chars=output_chars, final=final,
                          show=show, check=check)


def run_tool_calls(
    calls: Sequence[ToolCall],
    tools: Sequence[Tool],
    handlers: Mapping[str, Handler] | None = None,
    options: ToolTurnOptions | None = None,
    *,
    output_chars: int | None = None,
    final: Collection[str] = (),
    show: Show = format_tool_output,
    check: Check | None = None,
) -> ToolTurn:
    """Validate and run ``calls`` one by one against ``tools`` (see the module docstring)."""
    return _run(list(calls), tools, handlers, options or ToolTurnOptions(), output_chars, final, show,
                stop_on_error=False, check=check)


def _run(
    calls: list[ToolCall] | list[tuple[ToolCall, BaseModel]],
    tools: Sequence[Tool],
    handlers: Mapping[str, Handler] | None,
    options: ToolTurnOptions,
    output_chars: int | None,
    final: Collection[str],
    show: Show,
    stop_on_error: bool,
    check: Check | None = None,
) -> ToolTurn:
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
    for i, item in enumerate(calls):
        if i >= most:
            skipped = len(calls) - i
            outputs.append(f"(skipped {skipped} more tool calls: at most {most} per reply)")
            break
        call, args = item if isinstance(item, tuple) else (item, None)
        record = _run_one(call, args, by_name, handlers, check)
        records.append(record)
        outputs.append(show(call.name, record.output, limit))
        if record.terminated or (record.ok and record.name in final) or (stop_on_error and not record.ok):
            break  # a final call (submit, answer) is the last thing a reply does
    observation, _ = truncate_text("\n".join(outputs), options.observation_chars)
    return ToolTurn(observation=observation, records=records, skipped=skipped)


def _validate(call: ToolCall, by_name: Mapping[str, Tool], check: Check | None) -> BaseModel:
    tool = by_name.get(call.name)
    if tool is None:
        raise ToolError(f"unknown tool {call.name!r}; tools: {', '.join(by_name)}")
    args = tool.validate(call)
    return check(tool.name, args) if check is not None else args


def _run_one(call: ToolCall, args: BaseModel | None, by_name: Mapping[str, Tool],
             handlers: Mapping[str, Handler], check: Check | None) -> CallRecord:
    try:
        if args is None:
            args = _validate(call, by_name, check)
        tool = by_name[call.name]
        handler = handlers.get(tool.name, tool.fn)
        if handler is None:  # the environment's bug, not the model's: fail loudly
            raise LookupError(f"tool {tool.name!r} has no handler: pass one in handlers or give the Tool an fn.")
        result = handler(args)
    except ToolError as err:
        return CallRecord(name=call.name, arguments=dict(call.arguments), output=f"error: {err}", ok=False)
    if not isinstance(result, ToolResult):
        result = ToolResult(output=str(result))
    return CallRecord(name=tool.name, arguments=args.model_dump(), output=result.output, ok=True,
                      reward=float(result.reward), terminated=result.terminated, info=dict(result.info))
