"""Pass/fail for graders built on sandboxes: exit status 0 alone is not a pass.

A program under test can ``exit(0)`` / ``os._exit(0)`` before the grader's assertions run and
still exit 0. :func:`with_sentinel` appends a line that prints a fresh random nonce *after*
the checks; :func:`passed` requires status ``ok`` *and* that nonce on stdout's last line.
The nonce is made after the program was written, so premature exits, crashes, and tricks that
print a fixed "OK" do not pass. (Code running in the same process can still inspect its own
source to find the nonce; graders that need more run the checks in a separate exec.)
"""

from __future__ import annotations

import secrets

from turngym.sandboxes.base import ExecResult

__all__ = ["with_sentinel", "passed"]


def with_sentinel(program_and_checks: str) -> tuple[str, str]:
    """(code to run, nonce): the code prints the nonce only if every check before it ran."""
    nonce = "TURNGYM-PASS-" + secrets.token_hex(16)
    return f"{program_and_checks}\nprint({nonce!r}, flush=True)\n", nonce


def passed(result: ExecResult, nonce: str) -> bool:
    lines = result.stdout.rstrip("\n").splitlines()
    return result.status == "ok" and not result.truncated and bool(lines) and lines[-1] == nonce
