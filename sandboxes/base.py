"""The sandbox protocol: run untrusted code, report what happened, leave nothing behind.

The contract
------------
A :class:`Sandbox` is one isolated place to run commands for one episode.

- ``exec(command, *, stdin=None, files=None, timeout=None) -> ExecResult``. ``command`` is a
  shell string (run by ``/bin/sh -c`` inside) or an argv list (run as is). ``files`` maps
  workdir-relative paths to contents written before the command runs. ``timeout`` overrides
  ``limits.timeout_s``. exec never raises for anything the command does: hangs, crashes, floods
  and limits all come back as an :class:`ExecResult`. It raises only when the sandbox itself
  cannot be used (:class:`~turngym.sandboxes.errors.SandboxError`).
- ``python(code, ...)`` is ``exec`` of Debian's ``python3`` on ``code``.
- ``put_file(path, data)`` / ``get_file(path) -> bytes``: paths are relative to the workdir
  (``/work`` inside); absolute paths must lie under it. ``..`` escapes and symlinks are refused
  with :class:`~turngym.sandboxes.errors.UnsafePath`.
- ``reset()``: kill every process of the sandbox and wipe the workdir and ``/tmp``; the next
  episode sees a fresh sandbox. ``close()``: release everything (idempotent).
- Async twins ``aexec``, ``aput_file``, ``aget_file``, ``areset``, ``aclose`` run the sync
  call in a worker thread (sandboxes are I/O bound). ``with``/``async with`` close on exit.
- Calls on one sandbox are serialised (one exec at a time); use many sandboxes for concurrency.

What every backend guarantees (the adversarial suite in tests/sandboxes checks it)
-------------------------------------------------------------------------------------
- The deadline is enforced from outside: at ``timeout`` the whole process tree (including
  children that called ``setsid``) is killed and ``status == "timeout"``.
- No process outlives ``exec``: when the command returns, stragglers it left are killed.
- stdout and stderr are read while the command runs and kept up to ``limits.output_bytes``
  each (``truncated`` is set); a command that keeps flooding past ``limits.output_kill_bytes``
  is killed (``status == "killed"``). Output is decoded as UTF-8 with replacement characters.
- ``status``: ``ok`` (exit 0), ``error`` (non-zero exit), ``timeout`` (deadline hit),
  ``oom`` (memory limit hit), ``killed`` (died by a signal it did not ask a deadline for:
  a crash, a SIGKILL, the output cap). ``exit_code`` uses the shell convention: 128+N for
  death by signal N; ``None`` when the sandbox killed the command before it exited.
"""

from __future__ import annotations

import asyncio
import posixpath
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from turngym.sandboxes.errors import SandboxClosed, UnsafePath

__all__ = [
    "Status",
    "ExecResult",
    "SandboxLimits",
    "Sandbox",
    "classify_exit",
    "decode_output",
    "CappedBuffer",
    "workdir_relative",
    "WORKDIR",
    "SANDBOX_PYTHON",
]

Status = Literal["ok", "error", "timeout", "oom", "killed"]
WORKDIR = "/work"
SANDBOX_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class ExecResult:
    """What one command did."""

    stdout: str
    stderr: str
    exit_code: int | None
    """Exit status, 128+N after death by signal N, None when the sandbox killed it first."""
    status: Status
    duration_s: float
    truncated: bool = False
    """True when stdout or stderr was longer than ``limits.output_bytes`` and was cut."""
    message: str = ""
    """What the sandbox did, for the agent's observation (e.g. "deadline of 5s exceeded")."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SandboxLimits(BaseModel):
    """Resource limits of one sandbox. Every backend enforces them from outside the command."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(10.0, gt=0)
    """Default wall-clock deadline of one exec, in seconds."""
    memory_mb: int = Field(256, gt=0)
    """Memory limit (Docker: memory = memory+swap; local: RLIMIT_AS, address space)."""
    pids: int = Field(128, gt=0)
    """Most processes + threads at once (Docker: pids cgroup; local: RLIMIT_NPROC)."""
    cpus: float = Field(1.0, gt=0)
    """CPU share (Docker: nano_cpus; local backend: not limited, only the deadline)."""
    output_bytes: int = Field(256 * 1024, gt=0)
    """Bytes of stdout and of stderr kept per exec; the rest is dropped and `truncated` set."""
    output_kill_bytes: int = Field(16 * 1024 * 1024, gt=0)
    """A command that writes more than this (stdout+stderr) is killed; stops output floods."""
    file_size_mb: int = Field(64, gt=0)
    """Largest file a command may write (RLIMIT_FSIZE; writes past it fail with EFBIG)."""
    open_files: int = Field(256, gt=0)
    """Most open file descriptors per process (RLIMIT_NOFILE)."""
    workdir_mb: int = Field(256, gt=0)
    """Size of the workdir tmpfs (Docker). /tmp gets the same size."""
    max_file_get_bytes: int = Field(64 * 1024 * 1024, gt=0)
    """Largest file get_file returns."""


def classify_exit(exit_code: int | None, *, timed_out: bool, oom: bool, killed: bool) -> Status:
    """The status of a finished command. Pure; the order of the checks is the contract.

    ``timed_out``/``killed`` say the sandbox killed it (deadline / output flood),
    ``oom`` that the memory limit was hit during it.
    """
    if timed_out:
        return "timeout"
    if oom:
        return "oom"
    if killed or exit_code is None or exit_code > 128:
        return "killed"
    return "ok" if exit_code == 0 else "error"


def decode_output(data: bytes) -> str:
    """Bytes from a command as text: UTF-8, invalid sequences replaced (never raises)."""
    return data.decode("utf-8", errors="replace")


class CappedBuffer:
    """Keeps the first ``cap`` bytes written to it and counts everything."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.total = 0
        self._parts: list[bytes] = []
        self._kept = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - self._kept
        if room > 0:
            part = data[:room]
            self._parts.append(part)
            self._kept += len(part)

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def workdir_relative(path: str) -> str:
    """``path`` as a normalised path relative to the workdir, or :class:`UnsafePath`.

    Accepts ``"a/b.py"`` and ``"/work/a/b.py"``; refuses anything that leaves the workdir.
    """
    if not path or "\x00" in path:
        raise UnsafePath(f"invalid file path {path!r}.")
    if path.startswith("/"):
        norm = posixpath.normpath(path)
        if norm != WORKDIR and not norm.startswith(WORKDIR + "/"):
            raise UnsafePath(f"file path {path!r} is outside the sandbox workdir {WORKDIR}.")
        rel = posixpath.relpath(norm, WORKDIR)
    else:
        rel = posixpath.normpath(path)
    if rel in (".", "") or rel == ".." or rel.startswith("../"):
        raise UnsafePath(f"file path {path!r} is outside the sandbox workdir {WORKDIR}.")
    return rel


class Sandbox(ABC):
    """One isolated place to run commands (see the module docstring for the contract)."""

    limits: SandboxLimits

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._lock = threading.RLock()
        self._closed = False

    # -- what a backend implements -------------------------------------------------------
    @abstractmethod
    def _exec(self, argv: list[str], stdin: bytes | None, timeout: float) -> ExecResult: ...

    @abstractmethod
    def _put_file(self, rel: str, data: bytes) -> None: ...

    @abstractmethod
    def _get_file(self, rel: str) -> bytes: ...

    @abstractmethod
    def _reset(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    # -- the public protocol --------------------------------------------------------------
    def exec(
        self,
        command: str | Sequence[str],
        *,
        stdin: str | bytes | None = None,
        files: Mapping[str, str | bytes] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]
        if not argv:
            raise ValueError("exec needs a command.")
        data = stdin.encode() if isinstance(stdin, str) else stdin
        with self._lock:
            self._check_open()
            for path, content in (files or {}).items():
                self._put_file(workdir_relative(path), _as_bytes(content))
            return self._exec(argv, data, float(timeout or self.limits.timeout_s))

    def python(self, code: str, *, stdin: str | bytes | None = None,
               timeout: float | None = None) -> ExecResult:
        """Run ``code`` with the sandbox's python3 (Debian's /usr/bin/python3)."""
        if len(code.encode()) > 100_000:  # argv strings are capped by the kernel (128 KiB)
            return self.exec([SANDBOX_PYTHON, ".turngym_main.py"], stdin=stdin, timeout=timeout,
                             files={".turngym_main.py": code})
        return self.exec([SANDBOX_PYTHON, "-c", code], stdin=stdin, timeout=timeout)

    def put_file(self, path: str, data: str | bytes) -> None:
        with self._lock:
            self._check_open()
            self._put_file(workdir_relative(path), _as_bytes(data))

    def get_file(self, path: str) -> bytes:
        with self._lock:
            self._check_open()
            return self._get_file(workdir_relative(path))

    def reset(self) -> None:
        with self._lock:
            self._check_open()
            self._reset()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxClosed(f"{type(self).__name__} was used after close().")

    # -- async twins ----------------------------------------------------------------------
    async def aexec(self, command: str | Sequence[str], **kwargs) -> ExecResult:
        return await asyncio.to_thread(self.exec, command, **kwargs)

    async def apython(self, code: str, **kwargs) -> ExecResult:
        return await asyncio.to_thread(self.python, code, **kwargs)

    async def aput_file(self, path: str, data: str | bytes) -> None:
        await asyncio.to_thread(self.put_file, path, data)

    async def aget_file(self, path: str) -> bytes:
        return await asyncio.to_thread(self.get_file, path)

    async def areset(self) -> None:
        await asyncio.to_thread(self.reset)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- lifetime -------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __del__(self) -> None:  # last resort; close() is the contract
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)
