"""turngym.tools — typed tools, tool-call parsers, tool output formatting and per-turn dispatch."""

from turngym.tools.base import Tool, ToolCall, ToolError, format_tool_output, truncate_text
from turngym.tools.dispatch import (
    CallRecord,
    ToolTurn,
    ToolTurnOptions,
    invalid_reply,
    read_tool_calls,
    run_tool_calls,
)
from turngym.tools.parsers import ParseResult, detect_style, parse_tool_calls, register_parser

__all__ = [
    "CallRecord",
    "ParseResult",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolTurn",
    "ToolTurnOptions",
    "detect_style",
    "format_tool_output",
    "invalid_reply",
    "parse_tool_calls",
    "read_tool_calls",
    "register_parser",
    "run_tool_calls",
    "truncate_text",
]
