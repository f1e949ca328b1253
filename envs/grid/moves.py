"""Reading a move from a model's reply, for the grid puzzles.

A reply names one move, either as ``<action>up</action>`` or as a call of the ``move`` tool in
the model's tool-call style (``<tool_call>{"name": "move", "arguments": {"direction": "up"}}
</tool_call>`` for Hermes); a reply that is nothing but a direction word is accepted too (tiny
models). :func:`read_move` is the grid's shortcut reader for :func:`turngym.tools.dispatch`;
everything it rejects is invalid and the environment answers with :data:`INVALID_HELP`.

:class:`MoveEnv` is the base of the grid puzzles: it declares the ``move`` tool and steps every
reply through the tool contract; a puzzle gives its board and what a move does (a handler that
returns a :class:`~turngym.tools.ToolResult`: the new board, the reward, whether it ended).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel

from turngym.envs.core import TurnEnv
from turngym.tools import ToolResult, ToolTurnOptions
from turngym.tools.base import Tool, ToolCall, ToolError
from turngym.tools.dispatch import dispatch, plain_output, read_tool_calls, validate_calls

__all__ = ["DIRECTIONS", "MOVE_TOOL", "MOVE_OPTIONS", "INVALID_HELP", "MoveArgs", "MoveEnv", "invalid_move",
           "parse_move", "read_move"]

#: Direction name -> (row delta, column delta).
DIRECTIONS: dict[str, tuple[int, int]] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


class MoveArgs(BaseModel):
    direction: Literal["up", "down", "left", "right"]
    """Which way to move."""


MOVE_TOOL = Tool("move", "Move one square up, down, left or right.", MoveArgs)
INVALID_HELP = "Reply with exactly one move: <action>up</action>, <action>down</action>, <action>left</action> or <action>right</action>."
#: One move per reply; the board is the whole observation.
MOVE_OPTIONS = ToolTurnOptions(max_calls_per_turn=1, observation_chars=1 << 20)

_ACTION_TAG = re.compile(r"<action>\s*(.*?)\s*</action>", re.DOTALL | re.IGNORECASE)


def read_move(reply: str, calls: list[ToolCall]) -> list[ToolCall]:
    """The one move call of a reply (``<action>`` tags first, then a tool call, then a bare
    direction word); :class:`ToolError` saying why there is none."""
    tags = _ACTION_TAG.findall(reply)
    if tags:
        moves = {t.strip().lower() for t in tags}
        if len(moves) > 1:
            raise ToolError(f"one move per reply, got {len(tags)}")
        move = moves.pop()
        if move not in DIRECTIONS:
            raise ToolError(f"unknown move {move!r}")
        return [ToolCall(name=MOVE_TOOL.name, arguments={"direction": move})]
    if calls:
        if len(calls) != 1:
            raise ToolError(f"one move per reply, got {len(calls)} tool calls")
        if calls[0].name != MOVE_TOOL.name:
            raise ToolError(f"unknown tool {calls[0].name!r}")
        return calls
    word = reply.strip().strip(".!").lower()
    if word in DIRECTIONS:
        return [ToolCall(name=MOVE_TOOL.name, arguments={"direction": word})]
    raise ToolError("no move found")


def invalid_move(why: str, board: str) -> str:
    """The observation for a reply without a move (a trained recipe reads this wording)."""
    return f"Invalid action ({why}). {INVALID_HELP}\n{board}"


def parse_move(reply: str, style: str = "hermes") -> tuple[str | None, str]:
    """``(direction, "")`` for a well-formed reply, else ``(None, why it is invalid)``."""
    calls, why = read_tool_calls(reply, style, read_move)
    if not calls:
        return None, why
    try:
        [(_, args)] = validate_calls(calls, [MOVE_TOOL])
    except ToolError as err:
        return None, str(err)
    return args.direction, ""  # type: ignore[attr-defined]


class MoveEnv(TurnEnv):
    """A grid puzzle: one move per reply; subclasses give ``_board()`` and ``_move(args)``."""

    tools = [MOVE_TOOL]
    invalid_penalty: float = 0.0

    def _board(self) -> str:
        raise NotImplementedError

    def _move(self, args: MoveArgs) -> ToolResult:
        """Make the move; the result's output is the observation (the board after it)."""
        raise NotImplementedError

    def _check_move(self, name: str, args: MoveArgs) -> MoveArgs:
        """A move the board forbids raises :class:`ToolError` (the reply is then invalid and
        nothing moves); every move is allowed unless a puzzle says otherwise."""
        return args

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        board = self._board()
        turn = dispatch(action, self.tools, {MOVE_TOOL.name: self._move}, MOVE_OPTIONS, style=self.call_style,
                        read=read_move, whole_reply=True, show=plain_output, check=self._check_move)
        if not turn.valid:
            penalty = -self.invalid_penalty if self.invalid_penalty else 0.0
            return invalid_move(turn.error, board), penalty, False, {"action_valid": False, "anchor": board}
        return turn.observation, turn.reward, turn.terminated, {**turn.info, "anchor": self._board(), "tool_calls": turn.ran}
