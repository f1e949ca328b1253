"""The GUI agent's tools and how a reply becomes browser actions.

Tools (tool calls in the episode's style, :attr:`~turngym.envs.core.TurnEnv.call_style`; Hermes,
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, unless the reset names another):

==============================  =============================================================
``click(ref)``                  click the control with that ref (at a point of it that is not
                                covered by another element, as a user would)
``type(ref, text, submit)``     replace the text of a text box (``submit``: press Enter after)
``select(ref, option)``         choose an option of a drop-down by its label (or value)
``press(key)``                  press a key on the focused element (``Enter``, ``Tab``, ...)
``scroll(direction)``           scroll the page up, down, left or right
``answer(text)``                give the final answer and end the episode
==============================  =============================================================

A one-line shorthand is accepted too (``click e12``, ``type e7 some text``, ``press Enter``),
for people playing in a terminal (``turngym play``) and for small models.

The environment steps a reply through the tool contract (:func:`turngym.tools.dispatch`, the
whole reply validated before any call runs) with the pieces here: :func:`read_shorthand` (the
one-line shorthand; when there is neither a call nor the shorthand, :func:`call_hint` says how
to call a tool in the episode's style), :func:`ref_check` (refs must come from the current
snapshot; an unknown ref is an error the agent reads) and :data:`HANDLERS` (one coroutine per tool, looked up by
name). :func:`parse_actions` is the same reading and validation on its own (refs mapped to
Playwright's), for scripts and tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, Field

from turngym.envs.gui.snapshot import normalize_ref
from turngym.tools import Tool, ToolCall, ToolError, ToolResult, read_tool_calls, validate_calls
from turngym.tools.dispatch import Check
from turngym.tools.parsers import call_example

__all__ = ["TOOLS", "HANDLERS", "ParsedActions", "parse_actions", "read_shorthand", "call_hint", "ref_check",
           "HINT_CALL", "MAX_CALLS_PER_TURN"]

#: At most this many tool calls run per reply (e.g. type into two boxes and click submit).
MAX_CALLS_PER_TURN = 8


class RefArgs(BaseModel):
    ref: str = Field(description="The ref of the element, as shown in the snapshot (e.g. e12).")


class TypeArgs(RefArgs):
    text: str = Field(description="The text to put into the field (replaces what is there).")
    submit: bool = Field(default=False, description="Press Enter after typing.")


class SelectArgs(RefArgs):
    option: str = Field(description="The label (or value) of the option to choose.")


class PressArgs(BaseModel):
    key: str = Field(description='A key name such as "Enter", "Tab", "Escape", "ArrowDown" or "Control+a".')


class ScrollArgs(BaseModel):
    direction: Literal["up", "down", "left", "right"] = Field(description="Which way to scroll.")


class AnswerArgs(BaseModel):
    text: str = Field(description="The final answer; ends the episode.")


TOOLS: list[Tool] = [
    Tool("click", "Click an element of the page by its ref.", RefArgs),
    Tool("type", "Type text into a text box by its ref (replacing its content).", TypeArgs),
    Tool("select", "Choose an option of a drop-down list by its ref and the option's label.", SelectArgs),
    Tool("press", "Press a key (on the focused element).", PressArgs),
    Tool("scroll", "Scroll the page.", ScrollArgs),
    Tool("answer", "Give the final answer (or say you are done); ends the episode.", AnswerArgs),
]
_BY_NAME = {tool.name: tool for tool in TOOLS}
_REF_TOOLS = {"click", "type", "select"}


@dataclass
class ParsedActions:
    """Validated calls of one reply, or the error that makes the reply invalid."""

    calls: list[tuple[ToolCall, BaseModel]]
    error: str = ""


_SHORTHAND_FIELDS = {  # tool -> its arguments in order; the last one takes the rest of the line
    "click": ("ref",),
    "type": ("ref", "text"),
    "select": ("ref", "option"),
    "press": ("key",),
    "scroll": ("direction",),
    "answer": ("text",),
}


def parse_shorthand(reply: str) -> ToolCall | None:
    """One line such as ``click e12``, ``type e7 hello world`` or ``answer 42`` (for people
    playing in a terminal and for small models), or None when the reply is not one."""
    line = reply.strip()
    if "\n" in line or not line:
        return None
    name, _, rest = line.partition(" ")
    fields = _SHORTHAND_FIELDS.get(name)
    if fields is None or not rest.strip():
        return None
    values = rest.strip().split(" ", len(fields) - 1)
    if len(values) < len(fields):
        return None
    return ToolCall(name=name, arguments=dict(zip(fields, values)))


#: The call the "no tool call found" hint shows: a real click, so a model can copy it as it is.
HINT_CALL = ToolCall(name="click", arguments={"ref": "e12"})


def call_hint(style: str | None = None) -> str:
    """How to call a tool, said after "no tool call found": an example call (:data:`HINT_CALL`)
    in ``style`` (Hermes for None), written by :func:`~turngym.tools.parsers.call_example`, which
    that style's parser reads back."""
    tools = ", ".join(_BY_NAME)
    return f"call one of {tools} as{call_example(HINT_CALL.name, HINT_CALL.arguments, style)}".rstrip("\n")


def read_shorthand(reply: str, calls: list[ToolCall], style: str | None = None) -> list[ToolCall]:
    """The parsed calls, else the one-line shorthand; :class:`ToolError` when there is neither,
    saying how to call a tool in ``style`` (:func:`call_hint`)."""
    if calls:
        return calls
    shorthand = parse_shorthand(reply)
    if shorthand is None:
        raise ToolError(f"no tool call found; {call_hint(style)}")
    return [shorthand]


def ref_check(refs: dict[str, str]) -> Check:
    """Validation of the ref of click/type/select against the refs of the current snapshot (the
    ref written as ``e12``, whatever brackets the model used)."""

    def check(name: str, args: BaseModel) -> BaseModel:
        if name not in _REF_TOOLS:
            return args
        ref = normalize_ref(args.ref)  # type: ignore[attr-defined]
        if ref not in refs:
            shown = ", ".join(list(refs)[:30]) + (", ..." if len(refs) > 30 else "")
            raise ToolError(f"no element with ref {args.ref!r} on this page (refs: {shown or 'none'})")  # type: ignore[attr-defined]
        return args.model_copy(update={"ref": ref})

    return check


def parse_actions(reply: str, refs: dict[str, str], style: str = "hermes") -> ParsedActions:
    """Parse and validate the tool calls in ``reply`` against the current page's ``refs``.

    ``refs`` maps each ref shown to the agent to the element's Playwright ``aria-ref``; the
    validated arguments carry the latter.
    """
    calls, why = read_tool_calls(reply, style, partial(read_shorthand, style=style))
    if not calls:
        return ParsedActions([], why)
    try:
        validated = validate_calls(calls, TOOLS, ref_check(refs), MAX_CALLS_PER_TURN)
    except ToolError as err:
        return ParsedActions([], str(err))
    return ParsedActions([(call, args.model_copy(update={"ref": refs[args.ref]}) if call.name in _REF_TOOLS else args)  # type: ignore[attr-defined]
                          for call, args in validated])


# -- handlers: one coroutine per tool, run on the browser thread ---------------------------------
def _locator(page: Any, ref: str) -> Any:
    return page.locator(f"aria-ref={ref}")


# Where a user would click: a point of the element where the top-most element (what
# elementFromPoint, like the mouse, hits) is the element itself or inside it. Playwright clicks
# the centre and, when another element covers the centre, waits its whole timeout for it to
# move; a user clicks the part they can see. Points are tried nearest the centre first, over a
# grid on each of the element's boxes, within the viewport. The result is relative to the
# padding box, as Playwright's click(position=...) takes it; null when no point is visible.
_VISIBLE_POINT = """el => {
  const root = el.getRootNode();
  const probe = root.elementFromPoint ? root : document;
  const box = el.getBoundingClientRect();
  const style = getComputedStyle(el);
  const cx = box.left + box.width / 2, cy = box.top + box.height / 2;
  const points = [[cx, cy]];
  for (const r of el.getClientRects()) {
    for (let i = 0; i <= 10; i++) {
      for (let j = 0; j <= 10; j++) {
        points.push([r.left + 1 + (r.width - 2) * i / 10, r.top + 1 + (r.height - 2) * j / 10]);
      }
    }
  }
  points.sort((a, b) => Math.hypot(a[0] - cx, a[1] - cy) - Math.hypot(b[0] - cx, b[1] - cy));
  for (const [x, y] of points) {
    if (x < 0 || y < 0 || x >= window.innerWidth || y >= window.innerHeight) continue;
    const top = probe.elementFromPoint(x, y);
    if (top !== null && (top === el || el.contains(top))) {
      return {x: x - box.left - (parseFloat(style.borderLeftWidth) || 0),
              y: y - box.top - (parseFloat(style.borderTopWidth) || 0)};
    }
  }
  return null;
}"""


async def _click(page: Any, args: RefArgs) -> str:
    target = _locator(page, args.ref)
    await target.scroll_into_view_if_needed()
    point = await target.evaluate(_VISIBLE_POINT)
    # No visible point (hidden, or covered whole): the plain click, which waits for the element
    # to become clickable and otherwise reports what is in the way.
    await (target.click(position=point) if point else target.click())
    return "clicked"


async def _type(page: Any, args: TypeArgs) -> str:
    target = _locator(page, args.ref)
    if not await target.is_editable():  # fill() would wait its whole deadline for that
        raise ToolError("that element does not take text; type into a textbox")
    await target.fill(args.text)
    if args.submit:
        await target.press("Enter")
    shown = args.text if len(args.text) <= 40 else args.text[:37] + "..."
    return f"typed {shown!r}" + (" and pressed Enter" if args.submit else "")


async def _select(page: Any, args: SelectArgs) -> str:
    target = _locator(page, args.ref)
    options = await target.evaluate("el => el.options ? Array.from(el.options).map(o => [o.label, o.value]) : null")
    if options is None:
        raise ToolError("that element is not a drop-down list")
    wanted = args.option.strip()
    value = next((v for label, v in options if label.strip() == wanted), None)
    value = value if value is not None else next((v for _, v in options if v == wanted), None)
    value = value if value is not None else next((v for label, v in options if label.strip().lower() == wanted.lower()), None)
    if value is None:
        labels = ", ".join(repr(label.strip()) for label, _ in options)
        raise ToolError(f"the drop-down has no option {args.option!r} (options: {labels})")
    await target.select_option(value=value)
    return f"selected {args.option!r}"


async def _press(page: Any, args: PressArgs) -> str:
    await page.keyboard.press(args.key)
    return f"pressed {args.key}"


_SCROLL = {"up": (0, -400), "down": (0, 400), "left": (-400, 0), "right": (400, 0)}


async def _scroll(page: Any, args: ScrollArgs) -> str:
    dx, dy = _SCROLL[args.direction]
    await page.evaluate("([dx, dy]) => window.scrollBy(dx, dy)", [dx, dy])
    return f"scrolled {args.direction}"


async def _answer(page: Any, args: AnswerArgs) -> ToolResult:
    return ToolResult("answered", info={"answer": args.text})


HANDLERS: dict[str, Callable[[Any, Any], Awaitable[str | ToolResult]]] = {
    "click": _click,
    "type": _type,
    "select": _select,
    "press": _press,
    "scroll": _scroll,
    "answer": _answer,
}
