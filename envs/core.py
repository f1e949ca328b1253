"""The turngym environment contract.

Every turngym environment is a :class:`gymnasium.Env` whose observations and actions are
text, and subclasses :class:`TurnEnv`.

Observations and actions
------------------------
- ``observation``: the new text the agent sees this turn (a tool result, the board, an error
  message). The first observation (from ``reset``) contains the task.
- ``action``: the model's raw reply, as text. An environment whose replies act through tools
  reads them with the one tool contract, :func:`turngym.tools.dispatch` (parse -> validate ->
  run -> format), in the parser style :attr:`TurnEnv.call_style`; a reply that cannot be read
  is answered with an error observation and ``info["action_valid"] = False`` — never an
  exception. A reply whose tool calls the model's backend returned structured comes as a
  :class:`turngym.tools.ToolAction`: still that text (the calls as Hermes tags), carrying the
  calls, which the tool contract runs as given instead of parsing the text; an environment that
  reads replies itself reads the text.
- Both spaces are :class:`TextSpace`: any Python string up to ``max_length`` characters.
  ``TurnEnv.step`` holds every environment to them: a reply no environment can read (longer
  than the action space, or not valid Unicode: a lone surrogate) is answered as invalid
  without reaching ``_step``, and an observation is cut (head and tail kept) to fit.

``reset(seed=None, options=None)``
    ``options={"task": Task | task_id}`` picks the task; without it a task of the env's
    ``split`` is drawn with ``self.np_random``. Same seed + same task + same actions => the
    same observations, rewards and infos. ``options["tool_call_style"]`` is the syntax the
    agent's model writes tool calls in (the agent reads it from the model's chat template,
    :func:`turngym.tools.detect_style`); the environment reads replies in it unless it was made
    with an explicit ``tool_call_style``.

``step(action) -> (observation, reward, terminated, truncated, info)``
    ``terminated``: the task ended (solved, failed, answered). ``truncated``: the turn budget
    (``max_turns``) ran out.

The ``info`` keys (see :data:`INFO_KEYS`), present where meaningful:

==================  ==========================================================================
``task_id``         str: the id of the current task (every reset and step).
``action_valid``    bool: False when the reply could not be parsed into an action (every step).
``tool_calls``      list of dicts ``{"name", "arguments"}``: the calls that ran this step, in
                    order, with their validated arguments (a call that was invalid, failed
                    or was skipped is not listed; an invalid reply has ``[]``).
``anchor``          hashable: the raw environment state *before* the action (no history, no
                    prompt template) — GiGPO groups steps by it. Set by ``reset`` for the first
                    step and by every ``step`` for the step that follows, so the agent records
                    the anchor of the state it acts in.
``stratum``         hashable: structural features of the trajectory so far (e.g. the number of
                    search calls) — Stratified GRPO normalises within strata.
``success``         bool: whether the task was solved (at episode end).
==================  ==========================================================================

What a subclass provides
------------------------
- ``tools``: the tools the agent may call (their schemas go into its prompt), possibly empty;
  every reply that acts goes through :func:`turngym.tools.dispatch` with ``style=self.call_style``,
  its handlers returning text or a :class:`turngym.tools.ToolResult` (reward, termination).
- ``instructions``: how to act in this environment (the agent's system prompt).
- ``_reset_task(task) -> (observation, info)`` and ``_step(action) -> (observation, reward,
  terminated, info)``; the base class counts turns, truncates at ``max_turns`` and fills
  ``task_id`` and ``action_valid``.
- ``example_actions()``: a few well-formed replies (used by the conformance checker).
- ``expert_reply()`` (optional): what a solver would reply now (demonstrations, baselines).
"""

from __future__ import annotations

import functools
import string
from collections.abc import Hashable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from turngym.envs.tasks import SuiteError, Task, TaskSuite, load_suite
from turngym.tools.base import Tool, truncate_text
from turngym.tools.parsers import PARSERS

__all__ = ["INFO_KEYS", "EnvUnavailable", "TextSpace", "TurnEnv", "canonical_anchor", "unreadable_reason"]


class EnvUnavailable(RuntimeError):
    """A component the environment needs is missing here (a Lean toolchain, Docker, a browser).

    The message is one sentence that says how to get it. Conformance tests skip such
    environments with that message as the reason.
    """

INFO_KEYS: dict[str, str] = {
    "task_id": "str: the id of the current task",
    "action_valid": "bool: False when the reply could not be parsed",
    "tool_calls": "list[dict]: the tool calls that ran this step",
    "anchor": "hashable: raw environment state before the next action (GiGPO)",
    "stratum": "hashable: structural features of the trajectory so far (Stratified GRPO)",
    "success": "bool: whether the task was solved (at episode end)",
}

_SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation + " \n"


@functools.cache
def _sample_charset_tables() -> dict[str, Any]:
    """The state of a ``Text`` space over the sample charset, less its RNG and length bound."""
    state = dict(vars(spaces.Text(1, min_length=0, charset=_SAMPLE_CHARSET)))
    for key in ("_np_random", "max_length"):
        state.pop(key, None)
    return state


class TextSpace(spaces.Text):
    """Any Python string of at most ``max_length`` characters.

    Gymnasium's ``Text`` restricts characters to a charset; model replies and tool output can
    hold any character, so ``contains`` only checks the type and the length. ``sample`` draws
    printable ASCII.
    """

    def __init__(self, max_length: int = 1 << 20, seed: int | None = None) -> None:
        # Gymnasium's Text builds its charset tables (a numpy int per character, ~60 us) in every
        # space, and every environment has two, made per episode: the tables, which depend only
        # on the charset and are never written, are built once and shared; the RNG is this
        # space's own.
        self.__dict__.update(_sample_charset_tables())
        spaces.Space.__init__(self, dtype=str, seed=seed)
        self.max_length = int(max_length)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length})"


def unreadable_reason(action: str, max_length: int) -> str:
    """Why no environment can act on ``action`` (it is not valid Unicode, or longer than the
    action space allows), or ``""`` when it is text an environment may read.

    A lone surrogate (``"\\udcff"``) cannot be encoded, so it would fail inside whatever the
    environment hands the reply to (a file, a process, a browser); such a reply cannot come
    from a tokenizer's decoding, only from a broken client or an adversary.
    """
    if len(action) > max_length:
        return f"the reply has {len(action)} characters; at most {max_length} are read"
    try:
        action.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"the reply is not valid Unicode text: {err.reason} at character {err.start}"
    return ""


def canonical_anchor(value: Any) -> Hashable:
    """A hashable canonical form of an anchor or stratum (see docs/algorithms.md, section 3, step 2)."""
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(canonical_anchor(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), canonical_anchor(v)) for k, v in value.items()))
    if isinstance(value, np.ndarray):
        return (value.tobytes(), value.shape, str(value.dtype))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Hashable):
        return value
    raise TypeError(f"cannot make a canonical anchor from {type(value).__name__}")


class TurnEnv(gym.Env[str, str]):
    """Base class of turngym environments; see the module docstring for the contract."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 4}
    #: One-line description shown by ``turngym envs``.
    description: ClassVar[str] = ""
    #: How to act in this environment: the agent's system prompt.
    instructions: str = ""
    #: Upper bound on observation/action length in characters.
    max_text_length: ClassVar[int] = 1 << 20
    #: The tool-call style replies are read in, fixed by the environment's own option; None:
    #: the style the agent names at reset (``options["tool_call_style"]``), else "hermes".
    tool_call_style: str | None = None

    def __init__(
        self,
        suite: str | TaskSuite | None = None,
        split: str = "train",
        max_turns: int = 20,
        render_mode: str | None = None,
    ) -> None:
        self.observation_space = TextSpace(self.max_text_length)
        self.action_space = TextSpace(self.max_text_length)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self._suite_ref = suite
        self._suite: TaskSuite | None = suite if isinstance(suite, TaskSuite) else None
        self.split = split
        self.max_turns = max_turns
        self.task: Task | None = None
        self.turn = 0
        self.tools: list[Tool] = list(getattr(self, "tools", []))
        self._last_obs = ""
        self._state_info: dict[str, Any] = {}
        self._agent_style: str | None = None

    # -- suites ----------------------------------------------------------------------------
    @property
    def suite(self) -> TaskSuite:
        if self._suite is None:
            if self._suite_ref is None:
                raise SuiteError(f"{type(self).__name__} has no task suite; pass suite=...")
            self._suite = load_suite(self._suite_ref)
        return self._suite

    def _select_task(self, options: dict[str, Any] | None) -> Task:
        choice = (options or {}).get("task")
        if isinstance(choice, Task):
            return choice
        if isinstance(choice, str):
            return self.suite.get(choice)
        if choice is not None:
            raise TypeError("options['task'] must be a Task or a task id")
        tasks = self.suite.split(self.split)
        return tasks[int(self.np_random.integers(len(tasks)))]

    # -- the gymnasium API ------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        style = (options or {}).get("tool_call_style")
        if style is not None:
            if style not in PARSERS:
                raise ValueError(f"unknown tool-call style {style!r}; known: {', '.join(sorted(PARSERS))}")
            self._agent_style = style
        self.task = self._select_task(options)
        self.turn = 0
        obs, info = self._reset_task(self.task)
        info = {"task_id": self.task.id, **info}
        self._remember_state(info)
        self._last_obs = obs
        return obs, info

    def step(self, action: str):
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"actions are text; got {type(action).__name__}")
        self.turn += 1
        why = unreadable_reason(action, self.max_text_length)
        if why:  # no subclass can act on it: answered here, the state unchanged
            obs, reward, terminated, info = f"Invalid reply ({why}).", 0.0, False, {"action_valid": False, **self._state_info}
        else:
            obs, reward, terminated, info = self._step(action)
        if isinstance(obs, str):  # replies and tool output can be any size; the observation space is not
            obs = truncate_text(obs, self.max_text_length)[0]
        truncated = not terminated and self.turn >= self.max_turns
        info = {"task_id": self.task.id, "action_valid": True, "tool_calls": [], **info}
        if (terminated or truncated) and "success" not in info:
            info["success"] = False
        self._remember_state(info)
        self._last_obs = obs
        return obs, float(reward), bool(terminated), bool(truncated), info

    @property
    def call_style(self) -> str:
        """The parser style this environment reads tool calls in (see ``tool_call_style``)."""
        return self.tool_call_style or getattr(self, "_agent_style", None) or "hermes"

    def _remember_state(self, info: dict[str, Any]) -> None:
        """Keep the anchor and stratum of the state the next action is taken in, for a reply
        the base class answers itself (the state does not change, so neither do they)."""
        self._state_info = {k: info[k] for k in ("anchor", "stratum") if k in info}

    def render(self) -> str | None:
        text = self._render_text()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    # -- what subclasses implement -------------------------------------------------------------
    def _reset_task(self, task: Task) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        raise NotImplementedError

    def _render_text(self) -> str:
        return self._last_obs

    def example_actions(self) -> list[str]:
        """A few well-formed replies for this environment (used by ``turngym check``)."""
        return []

    def expert_reply(self) -> str | None:
        """A reply a solver would give in the current state, or None when there is no solver.

        Optional. Environments with a solver (the grid puzzles) implement it; it supplies the
        demonstrations for a supervised warm start (``turngym sft``) and the ``scripted:expert``
        policy of ``turngym eval``. It must not change the environment's state.
        """
        return None
