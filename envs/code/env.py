"""CodeEnv: write a Python function, run code in a sandbox, submit it to hidden tests.

Tools (called in the model's tool-call style, Hermes ``<tool_call>{"name": ..., "arguments":
{...}}</tool_call>`` by default; several per reply allowed up to ``max_calls_per_turn``; run
through the tool contract, :func:`turngym.tools.dispatch`):

- ``python(code)``: run a Python program in the episode's sandbox; stdout, stderr and how it
  ended come back (truncated to ``output_chars``).
- ``bash(cmd)``: run a shell command there (files written by earlier calls are still there).
- ``submit(code)``: grade ``code`` (the whole solution: the function and what it needs)
  against the task's hidden tests, in a fresh grading sandbox, with the tests in a process the
  submission's code never runs in (see :mod:`turngym.envs.code.grader`). The task's prompt is
  the tests' trusted context (the helpers they call are the prompt's, not the submission's;
  ``metadata["test_context"]`` overrides it). The observation says how many tests passed,
  never which inputs they use. The episode ends when every test passes or after ``max_submissions``;
  otherwise the agent may fix and resubmit.

Shortcut: a reply with no tool call, a fenced ```python block and the word "submit" outside
the fence submits the last fenced block.

Sandboxes: each environment keeps one warm sandbox of ``backend`` ("docker" by default, or
"local") for its episodes: reused across an episode's turns, reset (processes killed, files
wiped) before the next episode. Grading uses another sandbox from a shared pool, reset after
every grading. Both run their execs through the fork server inside each warm sandbox
(``fork_server=True``, the default; ``False`` starts every exec the old way, one ``docker exec``
or bubblewrap start, for comparisons). Deadlines: ``exec_timeout_s`` per run, ``episode_exec_s``
of run time per episode (then python/bash refuse; submit still works), ``test_timeout_s`` per
hidden test.

Reward (at the submission that ends the episode; 0 otherwise): 1 if every hidden test passes
else 0 (``reward="binary"``), or the fraction passed (``reward="fraction"``). A submission on
the last turn ends the episode too. Info: ``stratum`` = python/bash executions so far;
``anchor`` = (task id, outcome vector of the last submission, () before one); after a
submission ``tests`` (per-test booleans), ``tests_passed``, ``tests_total``, ``submissions``;
``success`` at the end.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from turngym.envs.code.grader import GradeResult, grade
from turngym.envs.core import EnvUnavailable, TurnEnv
from turngym.envs.tasks import SuiteError, Task, TaskSuite
from turngym.sandboxes import (
    ExecResult,
    Sandbox,
    SandboxLimits,
    SandboxPool,
    make_sandbox,
    shared_pool,
)
from turngym.sandboxes.errors import SandboxUnavailable
from turngym.tools import ToolResult, ToolTurnOptions
from turngym.tools.base import Tool, ToolCall, ToolError
from turngym.tools.dispatch import dispatch, invalid_reply, parse_options
from turngym.tools.parsers import call_example, render_tool_call, tools_help

__all__ = ["CodeEnv", "CodeOptions", "CODE_TOOLS", "grading_pool"]


class PythonArgs(BaseModel):
    code: str = Field(min_length=1)
    """A complete Python program to run."""


class BashArgs(BaseModel):
    cmd: str = Field(min_length=1)
    """A shell command."""


class SubmitArgs(BaseModel):
    code: str = Field(min_length=1)
    """The complete solution: the requested function and everything it needs."""


PYTHON_TOOL = Tool("python", "Run a Python program in your sandbox; returns its stdout, stderr and exit status.", PythonArgs)
BASH_TOOL = Tool("bash", "Run a shell command in your sandbox; returns its stdout, stderr and exit status.", BashArgs)
SUBMIT_TOOL = Tool("submit", "Submit your complete solution to be graded by hidden tests.", SubmitArgs)
CODE_TOOLS = [PYTHON_TOOL, BASH_TOOL, SUBMIT_TOOL]


def code_help(style: str | None = None) -> str:
    """How to call the tools (the reset observation's last line, the help after an invalid
    reply), with the example call in ``style`` (Hermes for None)."""
    return tools_help(CODE_TOOLS, ("python", {"code": "..."}), style)


def _styled_instructions(template: str, style: str | None = None) -> str:
    return template.format(call=call_example("python", {"code": "print(1)"}, style, end="."))


HELP = code_help()  # in Hermes, the default style
_FENCE = re.compile(r"```(?:python|py)\s*\n(.*?)```", re.DOTALL)


def _fenced_submit(action: str, calls: list[ToolCall]) -> list[ToolCall]:
    """No tool call, a fenced python block and the word "submit" outside it: submit the last block."""
    if calls:
        return calls
    fences = _FENCE.findall(action)
    if fences and re.search(r"\bsubmit\b", _FENCE.sub("", action), re.IGNORECASE):
        return [ToolCall(name="submit", arguments={"code": fences[-1]})]
    return []


class CodeOptions(ToolTurnOptions):
    """The code environment's options (keyword arguments of ``turngym.make``); the per-turn
    tool options (observation_chars, max_calls_per_turn, tool_call_style) come from
    :class:`~turngym.tools.ToolTurnOptions`."""

    model_config = ConfigDict(extra="forbid")

    backend: str = "docker"
    """Sandbox backend: "docker" (default), "local", or any registered with register_backend."""
    reward: Literal["binary", "fraction"] = "binary"
    """1 only when every hidden test passes, or the fraction of hidden tests passed."""
    max_submissions: int = Field(default=3, ge=1)
    """Submissions per episode; the last one ends the episode whatever its result."""
    exec_timeout_s: float = Field(default=10.0, gt=0)
    """Deadline of one python/bash run."""
    episode_exec_s: float = Field(default=120.0, gt=0)
    """Total run time of python/bash per episode; afterwards only submit works."""
    test_timeout_s: float = Field(default=5.0, gt=0)
    """Deadline of one hidden test at grading."""
    output_chars: int = Field(default=4000, ge=200)
    """Characters of one tool result shown to the agent (head and tail kept)."""
    grading_pool_size: int = Field(default=2, ge=1)
    """Warm grading sandboxes shared by every environment of this backend, limits and fork_server."""
    fork_server: bool = True
    """Run the episode's and the grading sandboxes' execs through the fork server inside each
    warm sandbox (a Docker exec ~5 ms instead of ~80 ms); False takes the path before it, one
    ``docker exec`` / bubblewrap start per exec (to compare: ``python bench/code.py``)."""
    limits: dict[str, Any] = Field(default_factory=dict)
    """SandboxLimits fields for both the episode and the grading sandboxes (memory_mb, ...)."""


def _sandbox_options(fork_server: bool) -> dict[str, Any]:
    """``make_sandbox`` options: ``fork_server`` only when turned off, so that a backend
    registered without that option (register_backend) still builds with the default."""
    return {} if fork_server else {"fork_server": False}


def grading_pool(backend: str, limits: SandboxLimits, size: int = 2, *,
                 fork_server: bool = True) -> SandboxPool:
    """The process-wide pool of grading sandboxes for ``backend``, ``limits`` and ``fork_server``
    (made once, in the :func:`~turngym.sandboxes.shared_pool` registry, which closes it at exit)."""
    key = ("code-grading", backend, limits.model_dump_json(), fork_server)
    options = _sandbox_options(fork_server)
    return shared_pool(key, lambda: SandboxPool(lambda: make_sandbox(backend, limits, **options), size=size,
                                                acquire_timeout=600.0))


class CodeEnv(TurnEnv):
    """Programming tasks with python, bash and submit tools, graded by hidden tests."""

    description = "Write, run and fix Python in a sandbox; hidden tests grade the submission."
    #: The instructions, ``{call}`` standing for the example call in the episode's tool-call
    #: style; ``instructions`` is it in Hermes until a reset names another.
    instructions_template: ClassVar[str] = (
        "Solve the programming task: write the requested Python function. You have a sandbox: "
        "python(code) runs a Python program and bash(cmd) a shell command, and you see their output. "
        "Test your code there, then submit(code) the complete solution (the function and any imports "
        "or helpers it needs). Hidden tests grade the submission; if some fail you may fix it and "
        "submit again, a limited number of times. "
        "Call a tool as{call}"
    )
    instructions = _styled_instructions(instructions_template)

    def __init__(self, suite: str | TaskSuite | None = "code", split: str = "test", max_turns: int = 10,
                 render_mode: str | None = None, **options: Any) -> None:
        super().__init__(suite=suite, split=split, max_turns=max_turns, render_mode=render_mode)
        self.options = parse_options(CodeOptions, "CodeEnv", options)
        self.limits = parse_options(SandboxLimits, "CodeEnv", self.options.limits)
        self.tool_call_style = self.options.tool_call_style
        self._restyle()
        self.tools = list(CODE_TOOLS)
        self._handlers = {"python": self._python, "bash": self._bash, "submit": self._submit}
        self._sandbox: Sandbox | None = None
        self._dirty = False
        self.executions = 0
        self.exec_time = 0.0
        self.submissions = 0
        self.last_outcome: tuple[bool, ...] = ()

    # -- sandboxes -----------------------------------------------------------------------
    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None or self._sandbox.closed:
            try:
                self._sandbox = make_sandbox(self.options.backend, self.limits,
                                             **_sandbox_options(self.options.fork_server))
            except SandboxUnavailable as err:
                raise EnvUnavailable(str(err)) from None
        return self._sandbox

    def _grade(self, code: str) -> GradeResult:
        assert self.task is not None
        try:
            pool = grading_pool(self.options.backend, self.limits, self.options.grading_pool_size,
                                fork_server=self.options.fork_server)
        except SandboxUnavailable as err:
            raise EnvUnavailable(str(err)) from None
        meta = self.task.metadata
        # the prompt is trusted: helpers it defines (HumanEval's poly, encode_cyclic) are the
        # task's in the tests, whatever the submission redefines
        context = meta.get("test_context", self.task.prompt)
        with pool.sandbox() as sandbox:  # checkin resets it: the next grading gets a fresh one
            return grade(sandbox, code, list(meta["tests"]), meta.get("entry_point"),
                         self.options.test_timeout_s, context=context)

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
        super().close()

    # -- the episode ---------------------------------------------------------------------
    def _restyle(self) -> None:
        """Instructions and help with the example call in the style replies are read in."""
        self.instructions = _styled_instructions(self.instructions_template, self.call_style)
        self.help = code_help(self.call_style)

    def _info(self) -> dict[str, Any]:
        assert self.task is not None
        return {"stratum": self.executions, "anchor": (self.task.id, self.last_outcome)}

    def _reset_task(self, task: Task) -> tuple[str, dict[str, Any]]:
        if not task.metadata.get("tests"):
            raise SuiteError(f"task {task.id!r} has no hidden tests (metadata.tests)")
        if self._dirty and self._sandbox is not None and not self._sandbox.closed:
            self._sandbox.reset()  # the previous episode's processes and files go
        _ = self.sandbox  # start it now (and fail now, with EnvUnavailable, if it cannot)
        self._dirty = False
        self._restyle()  # the reset may have named the agent's tool-call style
        self.executions, self.exec_time, self.submissions = 0, 0.0, 0
        self.last_outcome = ()
        obs = (f"Write this Python function:\n\n{task.prompt}\n"
               f"{len(task.metadata['tests'])} hidden tests grade your submission; you may submit "
               f"{self.options.max_submissions} times.\n{self.help}")
        return obs, self._info()

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        turn = dispatch(action, self.tools, self._handlers, self.options, style=self.call_style, read=_fenced_submit,
                        output_chars=self.options.output_chars, final={"submit"})
        if turn.error:
            return invalid_reply(turn.error, self.help), 0.0, False, {"action_valid": False, **self._info()}
        info: dict[str, Any] = {"action_valid": turn.valid, "tool_calls": turn.ran, **turn.info, **self._info()}
        return turn.observation, turn.reward, turn.terminated, info

    # -- the tools -----------------------------------------------------------------------
    def _run(self, run: Any) -> str:
        left = self.options.episode_exec_s - self.exec_time
        if left <= 0:
            raise ToolError("this episode's run time is used up; submit your solution")
        self._dirty = True
        self.executions += 1
        result: ExecResult = run(min(self.options.exec_timeout_s, left))
        self.exec_time += result.duration_s
        return _describe(result)

    def _python(self, args: PythonArgs) -> str:
        return self._run(lambda timeout: self.sandbox.python(args.code, timeout=timeout))

    def _bash(self, args: BashArgs) -> str:
        return self._run(lambda timeout: self.sandbox.exec(args.cmd, timeout=timeout))

    def _submit(self, args: SubmitArgs) -> ToolResult:
        self.submissions += 1
        result = self._grade(args.code)
        self.last_outcome = result.passed
        passed, total = sum(result.passed), len(result.passed)
        graded = {"tests": list(result.passed), "tests_passed": passed, "tests_total": total,
                  "submissions": self.submissions}
        solved = result.all_passed
        last = self.submissions >= self.options.max_submissions or self.turn >= self.max_turns
        text = f"{passed} of {total} hidden tests passed."
        if solved or last:
            score = result.fraction if self.options.reward == "fraction" else float(solved)
            return ToolResult(text + (" Solved." if solved else " No submissions left."), score, True,
                              {**graded, "success": solved})
        left = self.options.max_submissions - self.submissions
        return ToolResult(text + f" You may fix your solution and submit again ({left} left).", info=graded)

    # -- helpers for solvers and checks --------------------------------------------------------
    def expert_reply(self) -> str | None:
        """Submit the reference solution (demonstrations for ``turngym sft``, ``scripted:expert``)."""
        if self.task is None or not self.task.answer:
            return None
        return render_tool_call("submit", {"code": str(self.task.answer)}, self.call_style)

    def example_actions(self) -> list[str]:
        return [
            render_tool_call("python", {"code": "print(sum(range(10)))"}, self.call_style),
            render_tool_call("bash", {"cmd": "echo hello; ls"}, self.call_style),
            render_tool_call("python", {"code": "raise ValueError('boom')"}, self.call_style),
            "no tool call here",
            render_tool_call("submit", {"code": "def f():\n    return 0\n"}, self.call_style),
        ]


def _describe(result: ExecResult) -> str:
    """A run's result as the agent reads it: how it ended, then stdout and stderr."""
    ending = {"ok": "exit code 0", "error": f"exit code {result.exit_code}"}.get(
        result.status, f"{result.status}: {result.message}".rstrip(": "))
    parts = [f"[{ending}]"]
    if result.stdout:
        parts.append(f"stdout:\n{result.stdout.rstrip()}")
    if result.stderr:
        parts.append(f"stderr:\n{result.stderr.rstrip()}")
    if result.truncated:
        parts.append("(output was cut at the sandbox's limit)")
    return "\n".join(parts)
