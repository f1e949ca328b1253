"""Grading a submitted program against hidden tests, in a fresh sandbox, so it cannot be gamed.

How a submission is graded (:func:`grade`):

- The grading sandbox is not the agent's: it is a fresh one (a new sandbox, or one from a
  :class:`~turngym.sandboxes.SandboxPool` that was reset — processes killed, workdir and /tmp
  wiped — since its last use). Nothing the agent did in its own sandbox is visible.
- One exec writes, pristine, the harness (``harness.py``, shipped with turngym) and
  ``grade.json`` (the candidate's source, the entry point and the hidden tests' sources) and
  runs ``python3 -I -S -B harness.py``: isolated mode (no PYTHON* variables, no user site, the
  script's directory not on ``sys.path``) and no ``site`` import, so a dropped
  ``sitecustomize.py``, ``usercustomize.py``, ``conftest.py`` or a module shadowing the standard
  library does nothing. pytest is not used and no tool's summary line is read.
- The harness reads the tests and one fresh random nonce per test (from stdin) before any
  candidate code runs, then runs every test in its own forked process, which imports the
  candidate as a module and runs the test body; only after the body returns does the harness
  write ``PASS <nonce>`` for that test. Exiting early (``exit(0)``, ``sys.exit(0)``,
  ``os._exit(0)``), crashing, timing out, editing or deleting test files (they were read into
  memory already, and each grading writes them anew), printing a fake summary, patching
  builtins or the modules a test uses, or returning objects whose ``__eq__`` always says True
  all leave the nonce unwritten. The assert helpers are closures over references taken before
  the candidate ran, so patching ``builtins``, ``operator`` or the harness's own globals does
  not change them.
- Consequence for task authors: asserted values must be plain built-in values (numbers,
  strings, bytes, None, and lists/tuples/dicts/sets of them); a test that compares instances of
  other classes fails. All 164 HumanEval checks and the packaged suite satisfy this.

Residual risk, stated plainly: candidate code runs in the same process as its test, so code
written to attack this harness specifically (scanning its own memory for the nonce) could
forge a pass; the sandbox bounds what such code can do, and training data should not reward it
twice. Reward models with stricter needs can run the tests outside the candidate's process.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from importlib import resources

from turngym.sandboxes.base import SANDBOX_PYTHON, ExecResult, Sandbox

__all__ = ["GradeResult", "grade", "harness_source", "NONCE_HEX_CHARS"]

NONCE_HEX_CHARS = 32
_PASS_LINE = re.compile(r"^PASS ([0-9a-f]{%d})$" % NONCE_HEX_CHARS, re.MULTILINE)
_HARNESS_DIR = ".grader"


@dataclass(frozen=True)
class GradeResult:
    """The verdict on one submission."""

    passed: tuple[bool, ...]
    """Per hidden test: did it pass."""
    errors: tuple[str, ...] = ()
    """Why tests failed, as the harness reported it (for logs; never shown as a pass signal)."""
    status: str = "ok"
    """The grading exec's sandbox status (ok, error, timeout, oom, killed)."""
    duration_s: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def all_passed(self) -> bool:
        return bool(self.passed) and all(self.passed)

    @property
    def fraction(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


def harness_source() -> str:
    return resources.files("turngym.envs.code").joinpath("harness.py").read_text(encoding="utf-8")


def grade(sandbox: Sandbox, solution: str, tests: list[str], entry_point: str | None = None,
          test_timeout_s: float = 5.0) -> GradeResult:
    """Run ``tests`` (Python sources, each a test body) against ``solution`` in ``sandbox``.

    ``sandbox`` must be fresh (new or reset); the caller resets or discards it afterwards.
    Each test body sees the entry point under its own name and as ``candidate``.
    """
    if not tests:
        return GradeResult(passed=(), status="ok")
    nonces = [secrets.token_hex(NONCE_HEX_CHARS // 2) for _ in tests]
    job = {"solution": solution, "tests": list(tests), "entry_point": entry_point,
           "test_timeout_s": test_timeout_s}
    budget = test_timeout_s * len(tests) + 10.0
    result = _run(sandbox, job, nonces, budget)
    seen = set(_PASS_LINE.findall(result.stdout))
    passed = tuple(nonce in seen for nonce in nonces)
    errors = tuple(line for line in result.stderr.splitlines() if line.startswith("test "))[:len(tests)]
    return GradeResult(passed=passed, errors=errors, status=result.status, duration_s=result.duration_s)


def _run(sandbox: Sandbox, job: dict, nonces: list[str], budget: float) -> ExecResult:
    files = {f"{_HARNESS_DIR}/harness.py": harness_source(), f"{_HARNESS_DIR}/grade.json": json.dumps(job)}
    return sandbox.exec(
        ["/bin/sh", "-c", f"cd {_HARNESS_DIR} && exec {SANDBOX_PYTHON} -I -S -B harness.py"],
        stdin="".join(nonces), files=files, timeout=budget)
