"""What a GUI agent sees: an accessibility-tree snapshot of the page with a ref per control.

The snapshot comes from Playwright's ``aria_snapshot(mode="ai")`` (the accessibility tree as
YAML-like lines, each element tagged ``[ref=eN]``; Playwright keeps an element's ref while the
element lives, so refs are stable across steps). :func:`compact_snapshot` rewrites it for a
model:

- interactive elements (buttons, links, text boxes, check boxes, options, tabs, anything with a
  pointer cursor, ...) lead with their ref: ``- [e12] button "Add to cart"``; the agent's tools
  take that ref;
- refs of everything else, cursor and focus markers are dropped, and nameless ``generic``
  wrappers are removed with their children moved up a level, so the text stays short.

:func:`page_anchor` hashes the page path and the snapshot *without* refs, so one page state has
one anchor however the agent got there. :func:`find_ref` lets scripted policies pick a control
by role and name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

__all__ = [
    "INTERACTIVE_ROLES",
    "Snapshot",
    "compact_snapshot",
    "find_ref",
    "find_refs",
    "normalize_ref",
    "page_anchor",
    "strip_refs",
]

INTERACTIVE_ROLES = frozenset(
    {
        "button", "link", "textbox", "searchbox", "checkbox", "radio", "combobox", "listbox",
        "option", "menuitem", "menuitemcheckbox", "menuitemradio", "tab", "slider", "spinbutton",
        "switch", "treeitem", "gridcell",
    }
)

_LINE = re.compile(r"^(?P<indent>\s*)- (?P<body>.*)$")
_QUOTED = re.compile(r"^'(?P<inner>(?:[^']|'')*)'(?P<rest>.*)$")
_REF = re.compile(r"\s*\[ref=(?P<ref>[a-z0-9]+)\]")
_NOISE = re.compile(r"\s*\[(?:cursor=pointer|active)\]")
_OUR_REF = re.compile(r"\[(?P<ref>[a-z]*\d+[a-z0-9]*)\] ")


@dataclass
class Snapshot:
    """A compacted snapshot: its text and the refs of the controls in it (in page order)."""

    text: str
    refs: list[str] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)
    """ref -> role, for the controls."""
    targets: dict[str, str] = field(default_factory=dict)
    """ref shown -> Playwright's ``aria-ref`` (which carries a per-document prefix, ``f3e12``)."""


def _split_body(body: str) -> tuple[str, str]:
    """``(key, tail)``: the element part and what follows it (``": text"`` or ``":"``)."""
    quoted = _QUOTED.match(body)
    if quoted:
        return quoted.group("inner").replace("''", "'"), quoted.group("rest")
    # The key ends at the first ':' outside double quotes and brackets.
    depth, in_str = 0, False
    for i, ch in enumerate(body):
        if ch == '"' and (i == 0 or body[i - 1] != "\\"):
            in_str = not in_str
        elif not in_str and ch == "[":
            depth += 1
        elif not in_str and ch == "]":
            depth -= 1
        elif not in_str and depth == 0 and ch == ":":
            return body[:i], body[i:]
    return body, ""


_DOC_PREFIX = re.compile(r"^(f\d+)e\d+$")


def compact_snapshot(raw: str) -> Snapshot:
    """Rewrite a Playwright ``mode="ai"`` snapshot as described in the module docstring.

    Playwright prefixes refs with a counter of the documents the page has loaded (``f3e12`` on
    the fourth page); the main document's prefix is dropped, so refs read ``e12`` on every page.
    """
    out: list[str] = []
    refs: list[str] = []
    roles: dict[str, str] = {}
    targets: dict[str, str] = {}
    first = _REF.search(raw)
    prefix_match = _DOC_PREFIX.match(first.group("ref")) if first else None
    prefix = prefix_match.group(1) if prefix_match else ""
    removed: list[int] = []  # indents of dropped wrappers that enclose the current line
    for line in raw.splitlines():
        m = _LINE.match(line)
        if not m:  # continuation of a multi-line text value
            out.append(line)
            continue
        indent = len(m.group("indent"))
        while removed and removed[-1] >= indent:
            removed.pop()
        key, tail = _split_body(m.group("body"))
        ref_match = _REF.search(key)
        pointer = "[cursor=pointer]" in key
        key = _NOISE.sub("", _REF.sub("", key)).strip()
        role = key.split(" ", 1)[0] if key else ""
        if key == "generic" and tail.strip() in ("", ":"):
            removed.append(indent)
            continue
        new_indent = " " * (indent - 2 * len(removed))
        if ref_match and (role in INTERACTIVE_ROLES or pointer):
            target = ref_match.group("ref")
            ref = target[len(prefix):] if prefix and _DOC_PREFIX.match(target) and target.startswith(prefix + "e") else target
            refs.append(ref)
            targets[ref] = target
            roles[ref] = role
            key = f"[{ref}] {key}"
        out.append(f"{new_indent}- {key}{tail}")
    return Snapshot("\n".join(out), refs, roles, targets)


def strip_refs(text: str) -> str:
    """The snapshot text without refs (refs depend on history; the page state does not)."""
    return _OUR_REF.sub("", text)


def page_anchor(path: str, snapshot_text: str) -> str:
    """A canonical hash of the page state: its path (no host or port) and its snapshot."""
    digest = hashlib.sha256()
    digest.update(path.encode())
    digest.update(b"\0")
    digest.update(strip_refs(snapshot_text).encode())
    return digest.hexdigest()[:32]


def normalize_ref(ref: str) -> str:
    """``"[e12]"``, ``"e12"`` and ``"12"`` all name ref ``e12``."""
    ref = ref.strip().strip("[]").strip()
    if ref.startswith("ref="):
        ref = ref[4:]
    return f"e{ref}" if ref.isdigit() else ref


_CONTROL = re.compile(r'^\s*- \[(?P<ref>[^\]]+)\] (?P<role>[a-z-]+)(?: "(?P<name>(?:[^"\\]|\\.)*)")?')


def find_refs(text: str, role: str | None = None, name: str | None = None, exact: bool = True) -> list[str]:
    """Refs of the controls in ``text`` with ``role`` and accessible ``name`` (page order)."""
    found = []
    for line in text.splitlines():
        m = _CONTROL.match(line)
        if not m or (role is not None and m.group("role") != role):
            continue
        if name is not None:
            have = (m.group("name") or "").replace('\\"', '"')
            if (have != name) if exact else (name.lower() not in have.lower()):
                continue
        found.append(m.group("ref"))
    return found


def find_ref(text: str, role: str | None = None, name: str | None = None, exact: bool = True) -> str | None:
    """The first ref :func:`find_refs` finds, or None."""
    refs = find_refs(text, role, name, exact)
    return refs[0] if refs else None
