"""Snapshot compaction, refs and anchors; parsing replies into actions (no browser needed)."""

from __future__ import annotations

import pytest

from turngym.envs.gui.actions import MAX_CALLS_PER_TURN, TOOLS, parse_actions
from turngym.envs.gui.scripted import call
from turngym.envs.gui.snapshot import (
    compact_snapshot,
    find_ref,
    find_refs,
    normalize_ref,
    page_anchor,
    strip_refs,
)

RAW = """- generic [active] [ref=f2e1]:
  - generic [ref=f2e2]:
    - generic [ref=f2e3]: Select Audrye from the list and click Submit.
    - generic [ref=f2e4]:
      - combobox [ref=f2e5]:
        - option "Clara" [selected]
        - option "Audrye"
      - button "Submit" [ref=f2e6]
      - checkbox "Email" [checked] [ref=f2e7]
      - 'link "Tab #2" [ref=f2e9] [cursor=pointer]':
        - /url: "#tabs-2"
      - generic [ref=f2e10] [cursor=pointer]: clickable text
      - paragraph [ref=f2e11]: plain text"""


def test_compaction_keeps_refs_on_controls_only_and_drops_nameless_wrappers():
    snap = compact_snapshot(RAW)
    assert snap.text.splitlines() == [
        "- generic: Select Audrye from the list and click Submit.",
        "- [e5] combobox:",
        '  - option "Clara" [selected]',
        '  - option "Audrye"',
        '- [e6] button "Submit"',
        '- [e7] checkbox "Email" [checked]',
        '- [e9] link "Tab #2":',
        '  - /url: "#tabs-2"',
        "- [e10] generic: clickable text",
        "- paragraph: plain text",
    ]
    assert snap.refs == ["e5", "e6", "e7", "e9", "e10"]
    assert snap.targets["e6"] == "f2e6"  # the document prefix is dropped for display only
    assert snap.roles["e5"] == "combobox"


def test_anchor_ignores_refs_but_not_path_or_content():
    a = compact_snapshot(RAW).text
    b = compact_snapshot(RAW.replace("f2e", "f7e").replace("e6]", "e60]")).text
    assert a != b and strip_refs(a) == strip_refs(b)
    assert page_anchor("/x", a) == page_anchor("/x", b)
    assert page_anchor("/x", a) != page_anchor("/y", a)
    assert page_anchor("/x", a) != page_anchor("/x", a.replace("Audrye", "Clara"))


def test_find_ref_by_role_and_name():
    text = compact_snapshot(RAW).text
    assert find_ref(text, "button", "Submit") == "e6"
    assert find_ref(text, "combobox") == "e5"
    assert find_ref(text, "link", "tab #", exact=False) == "e9"
    assert find_ref(text, "button", "Cancel") is None
    assert find_refs(text) == ["e5", "e6", "e7", "e9", "e10"]


@pytest.mark.parametrize("given", ["e12", "[e12]", " 12 ", "ref=e12"])
def test_normalize_ref(given):
    assert normalize_ref(given) == "e12"


REFS = {"e5": "f2e5", "e6": "f2e6"}


def test_parse_actions_maps_refs_and_keeps_order():
    parsed = parse_actions(call("select", ref="e5", option="Audrye") + call("click", ref="[e6]"), REFS)
    assert parsed.error == ""
    assert [(c.name, a.ref) for c, a in parsed.calls] == [("select", "f2e5"), ("click", "f2e6")]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("just text", "no tool call found"),
        ('<tool_call>{"name": "click", "arguments": {"ref": "e6"</tool_call>', "invalid tool call"),
        (call("click", ref="e99"), "no element with ref 'e99'"),
        (call("fly", to="moon"), "unknown tool 'fly'"),
        (call("click"), "invalid arguments for click: ref"),
        (call("scroll", direction="diagonal"), "invalid arguments for scroll: direction"),
        (call("click", ref="e6") * (MAX_CALLS_PER_TURN + 1), "at most"),
    ],
)
def test_bad_replies_are_errors_not_exceptions(reply, error):
    parsed = parse_actions(reply, REFS)
    assert parsed.calls == [] and error in parsed.error


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("click e6", [("click", "f2e6")]),
        ("type e5 hello big world", [("type", "f2e5")]),
        ("press Enter", [("press", None)]),
    ],
)
def test_one_line_shorthand(reply, expected):
    parsed = parse_actions(reply, REFS)
    assert parsed.error == ""
    assert [(c.name, getattr(a, "ref", None)) for c, a in parsed.calls] == expected
    if reply.startswith("type"):
        assert parsed.calls[0][1].text == "hello big world"


def test_tool_schemas_are_openai_functions():
    names = [t.schema()["function"]["name"] for t in TOOLS]
    assert names == ["click", "type", "select", "press", "scroll", "answer"]
    assert TOOLS[1].schema()["function"]["parameters"]["required"] == ["ref", "text"]
