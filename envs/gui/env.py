"""GUIEnv: an agent operates a real web page in headless Chromium through tools.

Each episode opens a fresh browser context (no state from earlier episodes) in a pooled
Chromium (:mod:`turngym.sandboxes.browser`), limited to the site's own origin. The agent sees the
task and an accessibility-tree snapshot with a ref per control (:mod:`turngym.envs.gui.snapshot`)
and acts with the tools of :mod:`turngym.envs.gui.actions`.

A subclass supplies the site:

- ``_origins()``: the origins the page may load from (everything else is blocked);
- ``async _open(page, task) -> str``: load the task's page and return the goal text;
- ``async _outcome(page, answer) -> Outcome``: the task's own check after each step
  (``answer`` is the text of an ``answer`` call, else None);
- ``snapshot_root``: the CSS selector of the part of the page the agent sees.

Info: ``anchor`` = :func:`~turngym.envs.gui.snapshot.page_anchor` (path + snapshot without refs),
``stratum`` = the number of actions run so far, ``success`` at the end, ``tool_calls`` (the
calls that ran), ``action_valid`` (False for a malformed reply, an unknown tool or ref, bad
arguments, or an action the page could not carry out). Replies go through the tool contract
(:func:`turngym.tools.dispatch`): the whole reply is validated before any action runs, the
actions run in order until one fails or ``answer`` is called.
``render()`` returns the current snapshot; ``screenshot()`` returns a PNG of the page;
``expert_reply()`` is the scripted solver's next reply where the task has one (every web-app
task, the MiniWoB++ core tasks), so ``scripted:expert`` evaluates and ``turngym sft`` imitates it.
"""

from __future__ import annotations

import inspect
import urllib.parse
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from turngym.envs.core import EnvUnavailable, TextSpace, TurnEnv
from turngym.envs.gui.actions import (
    HANDLERS,
    HINT_CALL,
    MAX_CALLS_PER_TURN,
    TOOLS,
    read_shorthand,
    ref_check,
)
from turngym.envs.gui.scripted import SOLVERS, solve_reply
from turngym.envs.gui.snapshot import Snapshot, compact_snapshot, page_anchor
from turngym.envs.tasks import Task
from turngym.sandboxes.browser import (
    BrowserConfig,
    BrowserPool,
    BrowserSession,
    BrowserUnavailableError,
    shared_pool,
)
from turngym.tools import ToolResult, ToolTurnOptions
from turngym.tools.base import ToolError, truncate_text
from turngym.tools.dispatch import dispatch, plain_output
from turngym.tools.parsers import call_example, render_tool_call

__all__ = ["GUIEnv", "Outcome", "GUI_INSTRUCTIONS", "GUI_INSTRUCTIONS_TEMPLATE", "gui_instructions"]

#: The instructions, ``{call}`` standing for the example call in the episode's tool-call style
#: (:func:`gui_instructions`).
GUI_INSTRUCTIONS_TEMPLATE = (
    "You operate a web page. Each turn you see the task and a snapshot of the page: one line per "
    "element; controls you can act on start with a ref such as [e12]. Act by calling tools, e.g.{call}"
    "Tools: click(ref), type(ref, text, submit=false), select(ref, option), press(key), scroll(direction), "
    "answer(text). "
    "Refs come from the latest snapshot only. Call answer(text) to give an answer or to say you are done."
)


def gui_instructions(style: str | None = None, template: str = GUI_INSTRUCTIONS_TEMPLATE) -> str:
    """``template`` with its ``{call}`` slot filled by the example click (the same one the "no tool
    call" hint shows, :data:`~turngym.envs.gui.actions.HINT_CALL`) in ``style`` (Hermes for None),
    written by :func:`~turngym.tools.parsers.call_example` so that style's parser reads it back."""
    return template.format(call=call_example(HINT_CALL.name, HINT_CALL.arguments, style, end=". "))


GUI_INSTRUCTIONS = gui_instructions()  # in Hermes, the default style


#: Up to MAX_CALLS_PER_TURN actions per reply; their notes are shown whole.
_OPTIONS = ToolTurnOptions(max_calls_per_turn=MAX_CALLS_PER_TURN, observation_chars=1 << 16)


def _require_ai_snapshots() -> None:
    """The snapshots need ``aria_snapshot(mode="ai")`` (refs), which recent Playwright has."""
    try:
        from playwright.async_api import Locator
    except ImportError:
        raise EnvUnavailable("the GUI environments need Playwright: pip install 'turngym[gui]'") from None
    if "mode" not in inspect.signature(Locator.aria_snapshot).parameters:
        raise EnvUnavailable("the GUI environments need a newer Playwright (aria_snapshot(mode='ai')): pip install -U playwright")


@dataclass
class Outcome:
    """The task's verdict after a step."""

    done: bool = False
    reward: float = 0.0
    success: bool = False
    detail: str = ""


class PNGSpace(spaces.Space[bytes]):
    """PNG images as bytes (a screenshot), at most ``max_bytes`` long."""

    def __init__(self, max_bytes: int = 1 << 24, seed: int | None = None) -> None:
        super().__init__(shape=None, dtype=None, seed=seed)
        self.max_bytes = max_bytes

    def contains(self, x: Any) -> bool:
        return isinstance(x, bytes) and x.startswith(_PNG_MAGIC) and len(x) <= self.max_bytes

    def sample(self, mask: Any = None, probability: Any = None) -> bytes:
        return _PNG_MAGIC + self.np_random.integers(0, 256, size=32, dtype=np.uint8).tobytes()

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"PNGSpace(max_bytes={self.max_bytes})"


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class GUIEnv(TurnEnv):
    """Base of the browser environments; see the module docstring.

    Arguments beyond :class:`TurnEnv`'s: ``snapshot_chars`` caps the snapshot shown per turn
    (head and tail kept); ``screenshot_in_info`` adds ``info["screenshot"]`` (PNG bytes) at
    every reset and step; ``observation_mode="dict"`` makes every observation
    ``{"text": ..., "screenshot": PNG bytes}`` (a :class:`gymnasium.spaces.Dict` space, for
    vision-language models; the default ``"text"`` is the plain turngym contract); ``pool`` is the browser pool to use (default: the process-wide
    :func:`~turngym.sandboxes.browser.shared_pool`, started with ``browser`` — a
    :class:`~turngym.sandboxes.browser.BrowserConfig` or its dict — if this env starts it).
    """

    #: The instructions, ``{call}`` standing for the example call in the episode's tool-call
    #: style; ``instructions`` is it in Hermes until a reset names another.
    instructions_template: ClassVar[str] = GUI_INSTRUCTIONS_TEMPLATE
    instructions = GUI_INSTRUCTIONS
    max_text_length = 1 << 16
    snapshot_root: str = "body"

    def __init__(
        self,
        suite: Any = None,
        split: str = "train",
        max_turns: int = 15,
        render_mode: str | None = None,
        snapshot_chars: int = 6000,
        screenshot_in_info: bool = False,
        browser: BrowserConfig | dict[str, Any] | None = None,
        pool: BrowserPool | None = None,
        observation_mode: str = "text",
    ) -> None:
        super().__init__(suite=suite, split=split, max_turns=max_turns, render_mode=render_mode)
        if observation_mode not in ("text", "dict"):
            raise ValueError(f"observation_mode must be 'text' or 'dict', not {observation_mode!r}")
        self.observation_mode = observation_mode
        if observation_mode == "dict":
            self.observation_space = spaces.Dict({"text": TextSpace(self.max_text_length), "screenshot": PNGSpace()})
        self.tools = list(TOOLS)
        self.snapshot_chars = snapshot_chars
        self.screenshot_in_info = screenshot_in_info
        self._browser_config = BrowserConfig.model_validate(browser) if isinstance(browser, dict) else browser
        self._pool = pool
        self.session: BrowserSession | None = None
        self.snapshot = Snapshot("")
        self.path = ""
        self.goal = ""
        self.actions_run = 0
        self._restyle()

    # -- what a site provides ---------------------------------------------------------------
    def _origins(self) -> list[str]:
        raise NotImplementedError

    async def _open(self, page: Any, task: Task) -> str:
        raise NotImplementedError

    async def _outcome(self, page: Any, answer: str | None) -> Outcome:
        raise NotImplementedError

    # -- browser plumbing -------------------------------------------------------------------
    @property
    def pool(self) -> BrowserPool:
        if self._pool is None or self._pool.closed:
            _require_ai_snapshots()
            try:
                self._pool = shared_pool(self._browser_config)
            except BrowserUnavailableError as err:
                raise EnvUnavailable(str(err)) from None
        return self._pool

    def _new_session(self) -> BrowserSession:
        if self.session is not None:
            self.session.close()
            self.session = None
        self.session = self.pool.new_session(self._origins())
        return self.session

    async def _observe(self, page: Any) -> tuple[str, Snapshot]:
        await page.wait_for_load_state("load")
        root = page.locator(self.snapshot_root)
        raw = await root.aria_snapshot(mode="ai") if await root.count() else ""
        parts = urllib.parse.urlsplit(page.url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return path, compact_snapshot(raw)

    def _page_text(self) -> str:
        body, _ = truncate_text(self.snapshot.text, self.snapshot_chars)
        return f"Page: {self.path}\n{body}"

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"anchor": page_anchor(self.path, self.snapshot.text), "stratum": self.actions_run}
        if self.screenshot_in_info:
            info["screenshot"] = self.screenshot()
        return info

    # -- the TurnEnv hooks ------------------------------------------------------------------
    def _restyle(self) -> None:
        """Instructions with the example call in the style replies are read in."""
        self.instructions = gui_instructions(self.call_style, self.instructions_template)

    def _reset_task(self, task: Task) -> tuple[str, dict[str, Any]]:
        session = self._new_session()
        self._restyle()  # the reset may have named the agent's tool-call style
        self.actions_run = 0

        async def start(page: Any) -> tuple[str, str, Snapshot]:
            goal = await self._open(page, task)
            path, snap = await self._observe(page)
            return goal, path, snap

        self.goal, self.path, self.snapshot = session.run(start)
        return f"Task: {self.goal}\n\n{self._page_text()}", self._info()

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        assert self.session is not None
        handlers = {name: self._on_page(name, fn) for name, fn in HANDLERS.items()}
        read = partial(read_shorthand, style=self.call_style)  # "no tool call" says how, in that style
        turn = dispatch(action, self.tools, handlers, _OPTIONS, style=self.call_style, read=read,
                        check=ref_check(self.snapshot.targets), whole_reply=True, final={"answer"}, show=plain_output)
        if turn.error:
            obs = f"Invalid action: {turn.error}\n\n{self._page_text()}"
            return obs, 0.0, False, {"action_valid": False, **self._info()}
        self.actions_run += len(turn.ran)
        answer = turn.info.get("answer")

        async def observe(page: Any) -> tuple[Outcome, str, Snapshot]:
            outcome = await self._outcome(page, answer)
            path, snap = await self._observe(page)
            return outcome, path, snap

        outcome, self.path, self.snapshot = self.session.run(observe)
        done = outcome.done or answer is not None
        info: dict[str, Any] = {"action_valid": turn.valid, "tool_calls": turn.ran, **self._info()}
        if done:
            info["success"] = outcome.success
        obs = turn.observation + (f"\n{outcome.detail}" if outcome.detail else "")
        obs += "\n\n" + ("Episode over." if done else self._page_text())
        return obs, (outcome.reward if done else 0.0), done, info

    def _on_page(self, name: str, fn: Any) -> Any:
        """A handler that runs tool ``name``'s coroutine on the page (the ref mapped to
        Playwright's); an action the page cannot carry out is a :class:`ToolError`."""

        def handler(args: Any) -> str | ToolResult:
            if "ref" in type(args).model_fields:
                args = args.model_copy(update={"ref": self.snapshot.targets[args.ref]})

            async def act(page: Any) -> str | ToolResult:
                try:
                    return await fn(page, args)
                except ToolError:
                    raise
                except Exception as err:  # a Playwright timeout or a detached element
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    raise ToolError(f"{name} failed: {first}") from None

            assert self.session is not None
            return self.session.run(act)

        return handler

    def _render_text(self) -> str:
        return f"Task: {self.goal}\n\n{self._page_text()}" if self.session else ""

    # -- the dict observation mode ---------------------------------------------------------------
    def _wrap(self, obs: str) -> Any:
        return {"text": obs, "screenshot": self.screenshot()} if self.observation_mode == "dict" else obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return self._wrap(obs), info

    def step(self, action: str):
        obs, reward, terminated, truncated, info = super().step(action)
        return self._wrap(obs), reward, terminated, truncated, info

    # -- extras -------------------------------------------------------------------------------
    def screenshot(self, full_page: bool = False) -> bytes:
        """A PNG of the current page (for vision-language models and ``turngym play``)."""
        if self.session is None:
            raise RuntimeError("call reset() before screenshot()")
        # caret and animations off, so one page state gives one image
        return self.session.run(
            lambda page: page.screenshot(full_page=full_page, type="png", caret="hide", animations="disabled")
        )

    def expert_reply(self) -> str | None:
        """The scripted solver's next reply for this page (:mod:`turngym.envs.gui.scripted`;
        ``scripted:expert`` in ``turngym eval``, demonstrations for ``turngym sft``), read from
        the observation the agent sees now and written in the episode's tool-call style (the
        demonstrations teach the calls the model will be read in); None when the task has no
        solver or the solver finds nothing to do on this page."""
        if self.task is None or self.session is None:
            return None
        key = self.task.metadata.get("kind") or self.task.metadata.get("task")
        if key not in SOLVERS:
            return None
        try:
            return solve_reply(self.task, f"Task: {self.goal}\n\n{self._page_text()}", self.call_style)
        except (LookupError, StopIteration, AttributeError):  # the page is not one it knows
            return None

    def example_actions(self) -> list[str]:
        ref = self.snapshot.refs[0] if self.snapshot.refs else "e1"
        return [
            render_tool_call("click", {"ref": ref}, self.call_style),
            render_tool_call("scroll", {"direction": "down"}, self.call_style),
            "I am not sure what to do.",
        ]

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        super().close()
