"""turngym.tools — typed tools, tool-call parsers and tool output formatting."""

from turngym.tools.base import Tool, ToolCall, ToolError, format_tool_output, truncate_text
from turngym.tools.parsers import ParseResult, detect_style, parse_tool_calls, register_parser

__all__ = [
    "ParseResult",
    "Tool",
    "ToolCall",
    "ToolError",
    "detect_style",
    "format_tool_output",
    "parse_tool_calls",
    "register_parser",
    "truncate_text",
]
