"""Tools: typed functions an agent can call, and what a call and its result look like.

The contract
------------
- A :class:`Tool` has a ``name``, a one-line ``description`` and a pydantic model of its
  arguments. :meth:`Tool.schema` gives the OpenAI function JSON schema, which is also what
  ``tokenizer.apply_chat_template(messages, tools=[...])`` takes.
- A :class:`ToolCall` is what a parser read from model text: a name and a dict of arguments.
  :meth:`Tool.validate` turns the dict into the typed arguments or raises :class:`ToolError`
  with one clear sentence the agent can read.
- Tool output handed back to a model is untrusted data. :func:`format_tool_output` truncates
  it to a budget and wraps it in a marker so it is never mistaken for instructions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Tool", "ToolCall", "ToolError", "format_tool_output", "truncate_text"]


class ToolError(ValueError):
    """A tool call that cannot be run as asked; the message is shown to the agent."""


class ToolCall(BaseModel):
    """One tool call read from model output."""

    model_config = ConfigDict(frozen=True)

    name: str
    """The tool's name as the model wrote it."""
    arguments: dict[str, Any] = {}
    """The arguments as the model wrote them (not yet validated)."""

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, sort_keys=True)


class Tool:
    """A typed tool: a name, a description and a pydantic model of its arguments.

    ``fn`` is optional: environments often dispatch calls themselves (a tool that changes
    environment state), while stateless tools can carry their implementation.
    """

    def __init__(
        self,
        name: str,
        description: str,
        arguments: type[BaseModel],
        fn: Callable[..., Any] | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.arguments = arguments
        self.fn = fn
        self._schema: str | None = None

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-calling schema of this tool (a fresh copy each call).

        Made once per tool: pydantic takes milliseconds to build it, and the rollout engine asks
        at every environment reset."""
        if self._schema is None:
            params = self.arguments.model_json_schema()
            params.pop("title", None)
            for prop in params.get("properties", {}).values():
                prop.pop("title", None)
            params.setdefault("properties", {})
            self._schema = json.dumps({
                "type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": params},
            })
        return json.loads(self._schema)

    def validate(self, call: ToolCall) -> BaseModel:
        """Typed arguments for ``call``, or :class:`ToolError` saying what is wrong."""
        try:
            return self.arguments.model_validate(call.arguments)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "arguments"
            raise ToolError(f"invalid arguments for {self.name}: {where}: {first['msg']}") from None

    def __call__(self, call: ToolCall) -> Any:
        if self.fn is None:
            raise ToolError(f"tool {self.name} has no implementation of its own")
        return self.fn(self.validate(call))

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


def truncate_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` characters (head and tail kept), and whether it was cut."""
    if limit <= 0 or len(text) <= limit:
        return text, False
    marker = f"\n...[{len(text) - limit} characters truncated]...\n"
    keep = max(limit - len(marker), 0)
    head = keep * 2 // 3
    tail = keep - head
    return text[:head] + marker + (text[-tail:] if tail else ""), True


def format_tool_output(name: str, output: str, limit: int = 4000) -> str:
    """Tool output as the model sees it: truncated to ``limit`` and marked as tool output."""
    body, _ = truncate_text(output, limit)
    return f"<tool_output name={json.dumps(name)}>\n{body}\n</tool_output>"
