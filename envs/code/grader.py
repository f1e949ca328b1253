"""Grading a submitted program against hidden tests, where the program cannot touch the verdict.

How a submission is graded (:func:`grade`):

- The grading sandbox is not the agent's: it is a fresh one (a new sandbox, or one from a
  :class:`~turngym.sandboxes.SandboxPool` that was reset — processes killed, workdir and /tmp
  wiped — since its last use). Nothing the agent did in its own sandbox is visible.
- One exec runs the harness (``harness.py``, shipped with turngym) as
  ``python3 -I -S -B -c HARNESS``: isolated mode and no ``site``, so a dropped
  ``sitecustomize.py``, ``conftest.py`` or a module shadowing the standard library does nothing.
  The job (the hidden tests, the trusted context, the solution and one fresh random nonce per
  test) travels on the exec's stdin; **no file** holding a test is ever written in the sandbox.
- Inside, two processes (see :mod:`turngym.envs.code.harness`): the **test side** makes itself
  non-dumpable before it reads the job, so no other process of the sandbox can read its memory,
  files or environment; it starts the **candidate side** as a fresh interpreter (exec, not fork),
  which loads the solution and forks one copy per test. The tests run on the test side and call
  the solution's functions through a socket: arguments and return values cross as plain data
  (tagged JSON rebuilt as exact built-in values), so forged ``__eq__``/``__bool__`` objects,
  patched builtins, operator or ``sys.modules``, frame walking, ``gc`` or ``/proc/*/mem`` scans,
  signals, atexit hooks, threads and forks that outlive a call all stay where they can reach no
  test, no expected value and no nonce. A test passes only when its body returns normally within
  ``test_timeout_s`` and the candidate's process behaved (did not die, hang or send malformed
  data during it); then the test side writes ``PASS <nonce>`` on its own stdout.
- ``context`` is trusted source run before each test on the test side (the environment passes
  the task's prompt): the helper functions it defines are the task's own, so a solution cannot
  redefine a helper the tests rely on (HumanEval's ``encode_cyclic``, ``poly``). Every other
  function of the solution that a test names is called in the candidate's process.
- Consequences for task authors: the tests may pass the solution, and get back from it, only
  plain data (numbers, strings, bytes, None, and lists/tuples/dicts/sets of them); a function
  that returns an instance of another class, a generator or a callable fails the test, and
  in-place changes to an argument are not seen by the test. All 164 HumanEval checks and the
  packaged suite satisfy this (tests/code checks it).

Residual limits, stated plainly: the isolation rests on the sandbox giving the candidate no
capability (Docker: ``cap_drop=ALL``; bubblewrap: ``--cap-drop ALL``) and on the kernel's
dumpable check. The local backend without bubblewrap (``isolation="rlimits"``) as a non-root
user runs the candidate as the same user as turngym itself, with no pid namespace: use Docker
or bubblewrap for grading that must hold against a hostile policy.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from importlib import resources

from turngym.envs.code.harness import encode
from turngym.sandboxes.base import SANDBOX_PYTHON, Sandbox

__all__ = ["GradeResult", "grade", "harness_source", "NONCE_HEX_CHARS"]

NONCE_HEX_CHARS = 32
# Anywhere in stdout: bytes a candidate managed to put before the line cannot hide a real pass,
# and without the nonce nothing it writes counts.
_PASS = re.compile(r"PASS ([0-9a-f]{%d})" % NONCE_HEX_CHARS)


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
          test_timeout_s: float = 5.0, context: str | None = None) -> GradeResult:
    """Run ``tests`` (Python sources, each a test body) against ``solution`` in ``sandbox``.

    ``sandbox`` must be fresh (new or reset); the caller resets or discards it afterwards.
    Each test body sees the entry point under its own name and as ``candidate``, and what
    ``context`` (trusted source, e.g. the task's prompt; ignored when it is not valid Python)
    defines. Loading the solution has ``test_timeout_s`` too.
    """
    if not tests:
        return GradeResult(passed=(), status="ok")
    nonces = [secrets.token_hex(NONCE_HEX_CHARS // 2) for _ in tests]
    job = {"nonces": nonces, "solution": solution, "tests": list(tests), "entry_point": entry_point,
           "test_timeout_s": float(test_timeout_s), "context": context}
    budget = test_timeout_s * (len(tests) + 1) + 10.0
    result = sandbox.exec([SANDBOX_PYTHON, "-I", "-S", "-B", "-c", harness_source()],
                          stdin=encode(job), timeout=budget)
    seen = set(_PASS.findall(result.stdout))
    passed = tuple(nonce in seen for nonce in nonces)
    errors = tuple(line for line in result.stderr.splitlines() if line.startswith("test "))[:len(tests)]
    return GradeResult(passed=passed, errors=errors, status=result.status, duration_s=result.duration_s)
