"""Turning model text into tool calls.

``parse_tool_calls(text, style)`` returns a :class:`ParseResult`: the calls found (in the order
they appear) and the errors met. It never raises on model output: malformed text is an
observation for the agent (``info["action_valid"] = False``), not a crash. Text around the
calls (reasoning, a ```json fence, ``<think>`` blocks) is ignored.

Styles, registered in :data:`PARSERS` (``register_parser`` adds one):

``hermes``
    Hermes / Qwen / SmolLM: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one
    tag per call. An unclosed last tag (output cut at ``max_tokens``) is still read.
``openai_json``
    Bare JSON, as Llama 3.x (``{"name": ..., "parameters": {...}}``, optionally after
    ``<|python_tag|>``) and OpenAI-style prompts produce it: an object with ``name`` and
    ``arguments``/``parameters`` (``arguments`` may be a JSON string), an OpenAI ``tool_calls``
    entry ``{"type": "function", "function": {...}}``, ``{"tool_calls": [...]}``, or a list of
    any of these; possibly inside a ```json fence, several in one reply.
``react``
    ReAct: ``Action: name`` followed by ``Action Input: {json}`` (several pairs allowed).

Which style a model uses is read from its chat template or name by :func:`detect_style`,
through the rules in :data:`STYLE_RULES` (``register_style_rule`` adds one), never by
if/elif on names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from turngym.tools.base import Tool, ToolCall

__all__ = [
    "PARSERS",
    "RENDERERS",
    "STYLE_RULES",
    "ParseResult",
    "StyleRule",
    "ToolAction",
    "call_example",
    "tools_help",
    "detect_style",
    "parse_hermes",
    "parse_openai_json",
    "parse_react",
    "parse_tool_calls",
    "register_parser",
    "register_style_rule",
    "render_tool_call",
    "structured_action",
]


class ParseResult(BaseModel):
    calls: list[ToolCall] = []
    errors: list[str] = []

    @property
    def ok(self) -> bool:
        return bool(self.calls) and not self.errors


_DECODER = json.JSONDecoder()


class _Refused(json.JSONDecodeError):
    """JSON refused for its shape (too deep, a number too long), not for its syntax."""


def _raw_decode(text: str, start: int = 0) -> tuple[Any, int]:
    """``_DECODER.raw_decode``, with JSON that Python's decoder refuses for its shape rather
    than its syntax — nested deeper than the recursion limit, or an integer longer than
    ``sys.get_int_max_str_digits()`` — raised as :class:`json.JSONDecodeError` too, so every
    caller's one ``except`` turns any undecodable reply into an error for the agent."""
    try:
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise _Refused("the JSON is nested too deeply", text, start) from None
    except ValueError as err:  # int("9" * 5000): the decoder's only non-syntax ValueError
        raise _Refused(f"a value in the JSON cannot be read ({str(err).split(':')[0]})", text, start) from None


#: Deepest bracket nesting a tool call's JSON may have (a call needs a handful of levels).
#: Deeper values would overflow every recursive consumer after the parser (validation,
#: serialisers: pydantic's stops at a few hundred), and the bare-JSON scan retries decoding
#: from every opening bracket, each retry descending the whole depth: without the bound a
#: megabyte of ``[`` takes hours, with it the scan costs at most this many passes.
MAX_JSON_DEPTH = 100
_JSON_SYNTAX = re.compile(r'["\\\[\]{}]')


def _nested_deeper_than(text: str, limit: int) -> bool:
    """Whether brackets in ``text`` nest more than ``limit`` deep (inside JSON strings not counted)."""
    depth = 0
    in_string = escaped = False
    for match in _JSON_SYNTAX.finditer(text):
        ch = match.group()
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\" and match.end() < len(text):
                escaped = text[match.end()] in '"\\'
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if depth > limit:
                return True
        elif ch in "}]":
            depth = max(depth - 1, 0)
    return False


def _decode_call(text: str) -> tuple[Any, int]:
    """The JSON value a tool call's body starts with, refused when nested past :data:`MAX_JSON_DEPTH`."""
    if _nested_deeper_than(text, MAX_JSON_DEPTH):
        raise _Refused(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep", text, 0)
    return _raw_decode(text)


def _loads(text: str) -> Any:
    """``json.loads`` through :func:`_raw_decode`: one whole JSON value (surrounding blanks allowed)."""
    stripped = text.strip()
    obj, end = _decode_call(stripped)
    if end != len(stripped):
        raise json.JSONDecodeError("Extra data", stripped, end)
    return obj


def _call_from_obj(obj: object) -> ToolCall:
    """One call from a decoded JSON object; ValueError saying what is wrong otherwise."""
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):  # OpenAI tool_calls entry
        obj = obj["function"]
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"].strip():
        raise ValueError('a tool call must be a JSON object with a string "name"')
    args = obj.get("arguments", obj.get("parameters", {}))
    if args is None:
        args = {}
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
        try:
            args = _loads(args) if args.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"the arguments of {obj['name']!r} are not valid JSON ({err.msg})") from None
    if not isinstance(args, dict):
        raise ValueError(f'"arguments" of {obj["name"]!r} must be a JSON object')
    return ToolCall(name=obj["name"].strip(), arguments=args)


def _add(result: ParseResult, obj: object) -> None:
    try:
        result.calls.append(_call_from_obj(obj))
    except ValueError as err:
        result.errors.append(f"invalid tool call: {err}")


def _json_error(err: json.JSONDecodeError, text: str, start: int = 0) -> str:
    """The error for JSON that failed to decode; cut-off output gets its own hint."""
    if isinstance(err, _Refused):
        return f"invalid tool call: {err.msg}"
    if err.pos >= len(text.rstrip()) or _unclosed(text[start:]):
        return f"invalid tool call: the JSON ends early ({err.msg}); was the reply cut off?"
    return f"invalid tool call: malformed JSON ({err.msg} at character {err.pos})"


def _unclosed(text: str) -> bool:
    """Whether ``text`` ends inside a JSON string or with brackets still open (cut-off output)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return in_string or depth > 0


# -- hermes / qwen -------------------------------------------------------------------------
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def parse_hermes(text: str) -> ParseResult:
    """Hermes / Qwen style: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``."""
    result = ParseResult()
    for body in _HERMES.findall(text):
        body = _strip_fence(body)
        if not body:
            result.errors.append("invalid tool call: empty <tool_call> tag")
            continue
        try:
            obj, end = _decode_call(body)
        except json.JSONDecodeError as err:
            result.errors.append(_json_error(err, body))
            continue
        if body[end:].strip():
            result.errors.append("invalid tool call: text after the JSON object inside <tool_call>")
            continue
        for item in obj if isinstance(obj, list) else [obj]:
            _add(result, item)
    return result


_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*(?:```)?$", re.DOTALL)


def _strip_fence(body: str) -> str:
    match = _FENCE.match(body.strip())
    return match.group(1).strip() if match else body.strip()


# -- bare JSON (OpenAI / Llama 3.x) ------------------------------------------------------------
# Where a JSON value that is meant to be a tool call starts: used to tell a malformed call
# (an error for the agent) from ordinary braces in prose (ignored).
_CALL_START = re.compile(r'[\[{]\s*(?:\{\s*)?"(?:name|function|tool_calls|type)"\s*:')


def _looks_like_call(obj: object) -> bool:
    return isinstance(obj, dict) and ("name" in obj or "function" in obj or "tool_calls" in obj)


def _collect(result: ParseResult, obj: object) -> None:
    if isinstance(obj, list):
        for item in obj:
            if _looks_like_call(item):
                _collect(result, item)
            else:
                result.errors.append("invalid tool call: a list of tool calls must hold JSON objects with a \"name\"")
    elif isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list):
        _collect(result, obj["tool_calls"])
    else:
        _add(result, obj)


def parse_openai_json(text: str) -> ParseResult:
    """Tool calls written as bare JSON objects (or lists of them) anywhere in ``text``."""
    result = ParseResult()
    if _nested_deeper_than(text, MAX_JSON_DEPTH):
        result.errors.append(f"invalid tool call: the JSON is nested more than {MAX_JSON_DEPTH} levels deep")
        return result
    pos, n = 0, len(text)
    while pos < n:
        start = _next_json_start(text, pos)
        if start < 0:
            break
        try:
            obj, end = _raw_decode(text, start)
        except json.JSONDecodeError as err:
            if _CALL_START.match(text, start):
                result.errors.append(_json_error(err, text, start))
                # Skip the rest of this broken value's first line; nested braces inside it
                # are arguments, not calls.
                newline = text.find("\n", start)
                pos = n if newline < 0 else newline + 1
            else:
                pos = start + 1
            continue
        if _looks_like_call(obj) or (isinstance(obj, list) and any(_looks_like_call(o) for o in obj)):
            _collect(result, obj)
            pos = end
        elif isinstance(obj, (dict, list)):
            pos = end  # JSON that is not a call (e.g. a final answer object): not ours to judge
        else:
            pos = start + 1
    return result


def _next_json_start(text: str, pos: int) -> int:
    brace, bracket = text.find("{", pos), text.find("[", pos)
    if brace < 0:
        return bracket
    if bracket < 0:
        return brace
    return min(brace, bracket)


# -- ReAct ---------------------------------------------------------------------------------------
_REACT = re.compile(r"^[ \t]*Action[ \t]*:[ \t]*(?P<name>[^\n]*?)[ \t]*$", re.MULTILINE)
_REACT_INPUT = re.compile(r"\s*Action[ \t]*Input[ \t]*:[ \t]*", re.IGNORECASE)
_REACT_STOP = re.compile(r"^[ \t]*(?:Observation|Thought|Action|Final Answer)[ \t]*:", re.MULTILINE)


def parse_react(text: str) -> ParseResult:
    """ReAct style: ``Action: tool_name`` then ``Action Input: {"arg": ...}``."""
    result = ParseResult()
    for match in _REACT.finditer(text):
        name = match.group("name").strip().strip("`*[]'\"").strip()
        if not name:
            result.errors.append("invalid tool call: `Action:` without a tool name")
            continue
        rest = text[match.end():]
        inp = _REACT_INPUT.match(rest)
        if inp is None:
            result.errors.append(f"invalid tool call: `Action: {name}` must be followed by an `Action Input:` line")
            continue
        body = rest[inp.end():]
        stop = _REACT_STOP.search(body)
        body = _strip_fence(body[: stop.start()] if stop else body)
        if not body:
            result.calls.append(ToolCall(name=name, arguments={}))
            continue
        try:
            args, end = _decode_call(body)
        except json.JSONDecodeError as err:
            result.errors.append(_json_error(err, body) if body.lstrip().startswith(("{", "[")) else
                                 f"invalid tool call: the Action Input of {name!r} must be a JSON object")
            continue
        _add(result, {"name": name, "arguments": args})
    return result


# -- the registry ----------------------------------------------------------------------------
PARSERS: dict[str, Callable[[str], ParseResult]] = {
    "hermes": parse_hermes,
    "openai_json": parse_openai_json,
    "react": parse_react,
}


def register_parser(style: str, fn: Callable[[str], ParseResult],
                    render: Callable[[str, dict[str, Any]], str] | None = None) -> None:
    """Add a tool-call style: its parser, and how a call is written in it (default: Hermes)."""
    PARSERS[style] = fn
    if render is not None:
        RENDERERS[style] = render


#: style -> ``render(name, arguments) -> text`` that the style's parser reads back as that call.
RENDERERS: dict[str, Callable[[str, dict[str, Any]], str]] = {
    "hermes": lambda name, args: f"<tool_call>{json.dumps({'name': name, 'arguments': args}, ensure_ascii=False)}</tool_call>",
    "openai_json": lambda name, args: json.dumps({"name": name, "parameters": args}, ensure_ascii=False),
    "react": lambda name, args: f"Action: {name}\nAction Input: {json.dumps(args, ensure_ascii=False)}",
}


def render_tool_call(name: str, arguments: dict[str, Any] | None = None, style: str | None = None) -> str:
    """One call written as a model of ``style`` writes it (expert replies, examples); Hermes for
    None or a style registered without a renderer."""
    return RENDERERS.get(style or "hermes", RENDERERS["hermes"])(name, dict(arguments or {}))


def call_example(name: str, arguments: dict[str, Any] | None = None, style: str | None = None, end: str = "") -> str:
    """An example call for an environment's running text, written after "Call a tool as": the
    call as :func:`render_tool_call` writes it in ``style``, so the style's parser reads it back.
    A one-line call (Hermes, bare JSON) comes as ``" " + call + end``; one that spans lines
    (ReAct, whose ``Action:`` must start a line) as ``":\n" + call + "\n"``, on lines of its own."""
    call = render_tool_call(name, arguments, style)
    return f":\n{call}\n" if "\n" in call else f" {call}{end}"


def tools_help(tools: Sequence[Tool], example: tuple[str, dict[str, Any]], style: str | None = None) -> str:
    """The one-line help a tool-using environment shows (its reset observation's last line and
    the help after an invalid reply): ``example`` (a ``(name, arguments)`` call) written in
    ``style`` by :func:`call_example`, then every tool of ``tools`` with its
    argument names, e.g. ``Call a tool as <tool_call>...</tool_call>; tools: search(query, k), answer(text).``"""
    listed = ", ".join(f"{tool.name}({', '.join(tool.arguments.model_fields)})" for tool in tools)
    return f"Call a tool as{call_example(*example, style, end='; ')}tools: {listed}."


def parse_tool_calls(text: str, style: str = "hermes") -> ParseResult:
    """The tool calls in ``text`` read in ``style``; unknown styles raise ``ValueError``."""
    try:
        parser = PARSERS[style]
    except KeyError:
        raise ValueError(f"unknown tool-call style {style!r}; known: {', '.join(sorted(PARSERS))}") from None
    return parser(text)


# -- replies whose calls came structured --------------------------------------------------------
class ToolAction(str):
    """A reply whose tool calls came already parsed: the reply as text, carrying its calls.

    OpenAI-compatible backends return a reply's tool calls apart from its text. The string is
    what a text-only reader sees (made by :func:`structured_action`: the text, then each call as
    a Hermes tag), so every path that takes text (``TurnEnv.step``, the action space, an
    environment that reads replies itself, a trajectory) takes it unchanged. The shared tool
    contract (:func:`turngym.tools.dispatch`) reads :attr:`calls` instead of parsing the string,
    so arguments reach the tools exactly as the backend sent them, even ones a text round trip
    would change (a string holding ``</tool_call>``). Frozen; its text slices and copies
    (``action.strip()``) are plain strings, which are parsed as any reply is.
    """

    calls: tuple[ToolCall, ...]
    """The reply's tool calls, in order, names and arguments as the backend gave them."""

    def __new__(cls, text: str, calls: Iterable[ToolCall]) -> ToolAction:
        self = super().__new__(cls, text)
        object.__setattr__(self, "calls", tuple(calls))
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a ToolAction is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a ToolAction is frozen")

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (process and Ray pools) with its calls
        return (type(self), (str(self), self.calls))

    def __repr__(self) -> str:
        return f"ToolAction({str(self)!r}, calls={list(self.calls)!r})"


def structured_action(text: str, calls: Sequence[tuple[str, Any]]) -> str:
    """The action for a reply with text ``text`` and structured tool ``calls`` (``(name,
    arguments)`` pairs, arguments a dict or a JSON string).

    Without calls: ``text``. Else the text with each call as a Hermes
    ``<tool_call>{json}</tool_call>`` tag, one a line; as a :class:`ToolAction` carrying the
    calls when every one is well formed (a non-empty string name, object arguments), else as
    plain text, whose parse reports the malformed call as it would for any reply."""
    if not calls:
        return text
    tags = ["<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>" for name, args in calls]
    rendered = "\n".join([text, *tags]) if text else "\n".join(tags)
    try:
        parsed = [_call_from_obj({"name": name, "arguments": args}) for name, args in calls]
    except ValueError:
        return rendered
    return ToolAction(rendered, parsed)


# -- picking the style for a model -------------------------------------------------------------
class StyleRule(BaseModel):
    """``style`` applies when ``pattern`` (a regex) is found in the chat template or model name."""

    pattern: str
    style: str
    on: str = "template"
    """``template`` (the tokenizer's chat template text) or ``model`` (the model name / id)."""


#: Tried in order; the chat template is checked before the model name (a template says what
#: the model was trained to write; names can mislead).
STYLE_RULES: list[StyleRule] = [
    StyleRule(pattern=r"<tool_call>", style="hermes"),
    StyleRule(pattern=r"<\|python_tag\|>|Environment: ipython|\"parameters\": dictionary", style="openai_json"),
    StyleRule(pattern=r"Action Input:", style="react"),
    StyleRule(pattern=r"(?i)qwen|hermes|smollm", style="hermes", on="model"),
    StyleRule(pattern=r"(?i)llama-?3", style="openai_json", on="model"),
    StyleRule(pattern=r"(?i)gpt-|openai", style="openai_json", on="model"),
]


def register_style_rule(pattern: str, style: str, on: str = "template", first: bool = True) -> None:
    """Add a rule mapping a chat-template or model-name pattern to a parser style."""
    rule = StyleRule(pattern=pattern, style=style, on=on)
    if first:
        STYLE_RULES.insert(0, rule)
    else:
        STYLE_RULES.append(rule)


def detect_style(tokenizer: Any = None, model_name: str | None = None, default: str = "hermes") -> str:
    """The tool-call style a model writes, from its tokenizer's chat template or its name."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates
        template = "\n".join(str(v) for v in template.values())
    name = model_name or getattr(tokenizer, "name_or_path", "") or ""
    for on, haystack in (("template", str(template)), ("model", str(name))):
        for rule in STYLE_RULES:
            if rule.on == on and haystack and re.search(rule.pattern, haystack):
                return rule.style
    return default
