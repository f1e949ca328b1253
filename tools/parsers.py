"""Turning model text into tool calls.

``parse_tool_calls(text, style)`` returns a :class:`ParseResult`: the calls found and the
errors met. It never raises on model output: malformed text is an observation for the agent
(``info["action_valid"] = False``), not a crash. Styles are registered in ``PARSERS``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from pydantic import BaseModel

from turngym.tools.base import ToolCall

__all__ = ["ParseResult", "PARSERS", "parse_tool_calls", "register_parser"]


class ParseResult(BaseModel):
    calls: list[ToolCall] = []
    errors: list[str] = []

    @property
    def ok(self) -> bool:
        return bool(self.calls) and not self.errors


_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def _call_from_obj(obj: object) -> ToolCall:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise ValueError('a tool call must be a JSON object with a string "name"')
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
        args = json.loads(args) if args.strip() else {}
    if not isinstance(args, dict):
        raise ValueError('"arguments" must be a JSON object')
    return ToolCall(name=obj["name"], arguments=args)


def parse_hermes(text: str) -> ParseResult:
    """Hermes / Qwen style: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``."""
    result = ParseResult()
    for body in _HERMES.findall(text):
        try:
            result.calls.append(_call_from_obj(json.loads(body)))
        except (json.JSONDecodeError, ValueError) as err:
            result.errors.append(f"invalid tool call: {err}")
    return result


PARSERS: dict[str, Callable[[str], ParseResult]] = {"hermes": parse_hermes}


def register_parser(style: str, fn: Callable[[str], ParseResult]) -> None:
    PARSERS[style] = fn


def parse_tool_calls(text: str, style: str = "hermes") -> ParseResult:
    try:
        parser = PARSERS[style]
    except KeyError:
        raise ValueError(f"unknown tool-call style {style!r}; known: {', '.join(sorted(PARSERS))}") from None
    return parser(text)
