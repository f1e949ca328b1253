"""MiniWoB++ tasks as turngym environments.

The PyPI package ``miniwob`` ships the 130+ task pages offline (``miniwob/html/``); this module
only reads those files: it serves the folder on loopback (one server per process) and drives
the pages with Playwright itself (the package's Selenium driver is not used, so ``miniwob`` can
be installed with ``--no-deps``). Rewards come from the task's own JavaScript (``core.js``):

- ``Math.seedrandom(seed)`` then ``core.startEpisodeReal()`` generates the problem
  deterministically; ``core.getUtterance()`` is the instruction;
- the page sets ``WOB_DONE_GLOBAL`` and ``WOB_RAW_REWARD_GLOBAL`` (in [-1, 1], > 0 is success)
  when the agent finishes; ``WOB_REWARD_GLOBAL`` is the same reward shrunk by elapsed time,
  used only with ``time_penalty=True`` (an LLM's thinking time is not the agent's skill here).
- ``core.EPISODE_MAX_TIME`` (10 s in the original) is raised to ``episode_time_limit_s``.

Suites (task ids ``"<task>/<seed>"``):

- ``miniwob``: every task that tools on refs can do (not the drag/draw/coordinate tasks of
  :data:`POINTER_TASKS`), seeds 0-49 train and 10000-10019 test;
- ``miniwob-core``: :data:`CORE_TASKS`, the same seeds;
- ``miniwob-heldout``: a task split — about one task in five (chosen by a hash of its name) is
  test-only (seeds 10000-10019), the rest train (seeds 0-49).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import threading
from pathlib import Path
from typing import Any

from turngym.envs.core import EnvUnavailable
from turngym.envs.gui.env import GUIEnv, Outcome
from turngym.envs.tasks import Task, TaskSuite

__all__ = [
    "CORE_TASKS",
    "POINTER_TASKS",
    "MiniWoBEnv",
    "miniwob_html_dir",
    "miniwob_task_names",
    "load_miniwob",
    "load_miniwob_core",
    "load_miniwob_heldout",
]

#: Easy tasks whose controls all show up in the snapshot; the scripted-policy tests solve these.
CORE_TASKS = [
    "click-button", "click-test", "click-test-2", "enter-text", "focus-text", "focus-text-2",
    "click-checkboxes", "login-user", "choose-list", "enter-password", "click-option",
]

#: Tasks that need mouse drags, drawing or pixel coordinates, which ref-based tools cannot do.
POINTER_TASKS = frozenset(
    {
        "bisect-angle", "chase-circle", "circle-center", "click-pie", "click-pie-nodelay",
        "click-shape", "count-shape", "drag-box", "drag-circle", "drag-cube", "drag-items",
        "drag-items-grid", "drag-shapes", "drag-shapes-2", "drag-single-shape", "drag-sort-numbers",
        "draw-circle", "draw-line", "find-midpoint", "grid-coordinate", "highlight-text",
        "highlight-text-2", "identify-shape", "moving-items", "resize-textarea", "right-angle",
        "simon-says", "use-colorwheel", "use-colorwheel-2", "visual-addition", "click-color",
        "click-shades", "hover-shape", "count-sides",
    }
)

TRAIN_SEEDS = range(0, 50)
TEST_SEEDS = range(10_000, 10_020)


def miniwob_html_dir() -> Path:
    """The ``html`` folder of the installed ``miniwob`` package (found without importing it)."""
    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        raise EnvUnavailable("the MiniWoB++ environments need the `miniwob` package: pip install --no-deps miniwob")
    html = Path(next(iter(spec.submodule_search_locations))) / "html"
    if not (html / "miniwob").is_dir():
        raise EnvUnavailable(f"the miniwob package at {html.parent} ships no html/miniwob folder")
    return html


def miniwob_task_names(include_pointer: bool = False) -> list[str]:
    names = sorted(p.stem for p in (miniwob_html_dir() / "miniwob").glob("*.html"))
    return [n for n in names if include_pointer or n not in POINTER_TASKS]


def _tasks(names: list[str], seeds: range, split: str) -> list[Task]:
    return [
        Task(id=f"{name}/{seed}", prompt="", metadata={"task": name, "seed": seed}, split=split)
        for name in names
        for seed in seeds
    ]


def load_miniwob() -> TaskSuite:
    names = miniwob_task_names()
    return TaskSuite("miniwob", _tasks(names, TRAIN_SEEDS, "train") + _tasks(names, TEST_SEEDS, "test"))


def load_miniwob_core() -> TaskSuite:
    return TaskSuite("miniwob-core", _tasks(CORE_TASKS, TRAIN_SEEDS, "train") + _tasks(CORE_TASKS, TEST_SEEDS, "test"))


def _heldout(name: str) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 5 == 0


def load_miniwob_heldout() -> TaskSuite:
    names = miniwob_task_names()
    train = [n for n in names if not _heldout(n)]
    test = [n for n in names if _heldout(n)]
    return TaskSuite("miniwob-heldout", _tasks(train, TRAIN_SEEDS, "train") + _tasks(test, TEST_SEEDS, "test"))


# -- the loopback server for the shipped pages ------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


_server: http.server.ThreadingHTTPServer | None = None
_server_lock = threading.Lock()


def miniwob_origin() -> str:
    """``http://127.0.0.1:PORT`` of this process's server of the MiniWoB++ pages (started once)."""
    global _server
    with _server_lock:
        if _server is None:
            handler = functools.partial(_QuietHandler, directory=str(miniwob_html_dir()))
            _server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            _server.daemon_threads = True
            threading.Thread(target=_server.serve_forever, name="turngym-miniwob-http", daemon=True).start()
        return f"http://127.0.0.1:{_server.server_address[1]}"


_START = """([seed, limitMs]) => {
  Math.seedrandom(seed);
  core.EPISODE_MAX_TIME = limitMs;
  core.startEpisodeReal();
  return core.getUtterance();
}"""
_STATE = "() => [WOB_DONE_GLOBAL, WOB_RAW_REWARD_GLOBAL, WOB_REWARD_GLOBAL, WOB_REWARD_REASON]"


class MiniWoBEnv(GUIEnv):
    """A MiniWoB++ task page; the reward is the page's own."""

    description = "MiniWoB++ web tasks (offline pages from the `miniwob` package) in headless Chromium."
    snapshot_root = "#wrap"  # the task; not the reward/timer display beside it

    def __init__(
        self,
        suite: Any = "miniwob",
        split: str = "train",
        max_turns: int = 10,
        episode_time_limit_s: float = 600.0,
        time_penalty: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(suite=suite, split=split, max_turns=max_turns, **kwargs)
        self.episode_time_limit_s = episode_time_limit_s
        self.time_penalty = time_penalty

    def _origins(self) -> list[str]:
        return [miniwob_origin()]

    async def _open(self, page: Any, task: Task) -> str:
        name, seed = task.metadata["task"], task.metadata["seed"]
        await page.goto(f"{miniwob_origin()}/miniwob/{name}.html")
        await page.wait_for_function("() => typeof core !== 'undefined' && typeof genProblem === 'function'")
        utterance = await page.evaluate(_START, [str(seed), int(self.episode_time_limit_s * 1000)])
        await page.wait_for_function("() => WOB_TASK_READY")
        return utterance

    async def _outcome(self, page: Any, answer: str | None) -> Outcome:
        done, raw, timed, reason = await page.evaluate(_STATE)
        if not done:
            return Outcome(detail="(you gave an answer, but this task is done through the page)" if answer is not None else "")
        reward = float(timed if self.time_penalty else raw)
        return Outcome(done=True, reward=reward, success=float(raw) > 0, detail=f"The task ended with reward {reward:g}.")
