"""One Chromium for the whole GUI test session, and a check that none is left afterwards."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("playwright", reason="the GUI tests need Playwright: pip install 'turngym[gui]'")
if not Path("/usr/bin/chromium").is_file():
    pytest.skip("the GUI tests need Chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)

from turngym.sandboxes.browser import BrowserConfig, BrowserPool, close_shared_pool  # noqa: E402


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def chromium_descendants(root: int | None = None) -> set[int]:
    """Live Chromium processes started (directly or not) by process ``root`` (default: us)."""
    root = os.getpid() if root is None else root
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            stack.append(child)
            try:
                exe = os.readlink(f"/proc/{child}/exe")
            except OSError:
                exe = ""
            if "chrom" in os.path.basename(exe):
                found.add(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids in ``pids`` that still run (zombies count as gone)."""
    left = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(pid)
    return left


def wait_gone(pids: set[int], timeout: float = 20.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the real condition: the processes are gone
    return alive(pids)


class ChromiumTracker:
    """Collects the pids of the Chromium processes this test session started."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def record(self) -> None:
        self.seen |= chromium_descendants()

    descendants = staticmethod(chromium_descendants)
    wait_gone = staticmethod(wait_gone)


@pytest.fixture(scope="session", autouse=True)
def chromium_tracker():
    """Set up first and torn down last: after the session every Chromium we started is gone."""
    tracker = ChromiumTracker()
    yield tracker
    tracker.record()
    close_shared_pool()  # environments made with turngym.make use the process-wide pool
    left = wait_gone(tracker.seen | chromium_descendants())
    assert not left, f"Chromium processes left after the tests: {sorted(left)}"


@pytest.fixture(scope="session")
def pool(chromium_tracker):
    """One Chromium shared by the GUI tests."""
    browser = BrowserPool(BrowserConfig(action_timeout_s=3.0))
    chromium_tracker.record()
    yield browser
    chromium_tracker.record()
    browser.close()
