"""turngym.tools — typed tools, tool-call parsers, tool output formatting and the tool contract
(:mod:`turngym.tools.dispatch`: parse -> validate -> run -> format, for every environment)."""

from turngym.tools.base import Tool, ToolCall, ToolError, format_tool_output, truncate_text
from turngym.tools.dispatch import (
    CallRecord,
    ToolResult,
    ToolTurn,
    ToolTurnOptions,
    dispatch,
    invalid_reply,
    parse_options,
    plain_output,
    read_tool_calls,
    run_tool_calls,
    validate_calls,
)
from turngym.tools.parsers import (
    ParseResult,
    ToolAction,
    call_example,
    detect_style,
    parse_tool_calls,
    register_parser,
    render_tool_call,
    structured_action,
)

__all__ = [
    "CallRecord",
    "ParseResult",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolAction",
    "ToolResult",
    "ToolTurn",
    "ToolTurnOptions",
    "call_example",
    "detect_style",
    "dispatch",
    "format_tool_output",
    "invalid_reply",
    "parse_options",
    "parse_tool_calls",
    "plain_output",
    "read_tool_calls",
    "register_parser",
    "render_tool_call",
    "run_tool_calls",
    "structured_action",
    "truncate_text",
    "validate_calls",
]
