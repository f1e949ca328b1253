"""Reading a move from a model's reply, for the grid puzzles.

A reply names one move, either as ``<action>up</action>`` or as a tool call
``<tool_call>{"name": "move", "arguments": {"direction": "up"}}</tool_call>``; a reply that is
nothing but a direction word is accepted too (tiny models). Everything else is invalid and the
environment answers with :data:`INVALID_HELP`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

from turngym.tools import Tool, ToolError, parse_tool_calls

__all__ = ["DIRECTIONS", "MOVE_TOOL", "INVALID_HELP", "parse_move"]

#: Direction name -> (row delta, column delta).
DIRECTIONS: dict[str, tuple[int, int]] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


class MoveArgs(BaseModel):
    direction: Literal["up", "down", "left", "right"]
    """Which way to move."""


MOVE_TOOL = Tool("move", "Move one square up, down, left or right.", MoveArgs)
INVALID_HELP = "Reply with exactly one move: <action>up</action>, <action>down</action>, <action>left</action> or <action>right</action>."

_ACTION_TAG = re.compile(r"<action>\s*(.*?)\s*</action>", re.DOTALL | re.IGNORECASE)


def parse_move(reply: str) -> tuple[str | None, str]:
    """``(direction, "")`` for a well-formed reply, else ``(None, why it is invalid)``."""
    tags = _ACTION_TAG.findall(reply)
    if tags:
        moves = {t.strip().lower() for t in tags}
        if len(moves) > 1:
            return None, f"one move per reply, got {len(tags)}"
        move = moves.pop()
        if move not in DIRECTIONS:
            return None, f"unknown move {move!r}"
        return move, ""
    if "<tool_call>" in reply:
        parsed = parse_tool_calls(reply)
        if parsed.errors:
            return None, parsed.errors[0]
        if len(parsed.calls) != 1:
            return None, f"one move per reply, got {len(parsed.calls)} tool calls"
        call = parsed.calls[0]
        if call.name != MOVE_TOOL.name:
            return None, f"unknown tool {call.name!r}"
        try:
            return MOVE_TOOL.validate(call).direction, ""  # type: ignore[attr-defined]
        except ToolError as err:
            return None, str(err)
    word = reply.strip().strip(".!").lower()
    if word in DIRECTIONS:
        return word, ""
    return None, "no move found"
