"""Launching prover processes with limits enforced from outside.

This is a deliberately small helper until prover processes move onto ``turngym.sandboxes``
(``LocalSandbox``/``DockerSandbox``): a command *prefix* (``["bwrap", ...]``,
``["docker", "run", "-i", "--rm", IMAGE]``, ``["prlimit", ...]``) says where the prover runs.

Limits, all from outside the prover:
- a deadline per command: the whole process group is killed (``start_new_session=True`` +
  ``os.killpg``), so a prover's children die with it;
- an address-space limit (``RLIMIT_AS``) set in the child before ``exec``;
- output read with a cap while it is read (no pipe stalls, no unbounded memory).
"""

from __future__ import annotations

import os
import resource
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict

__all__ = ["ProcessLimits", "RunResult", "run_limited", "InteractiveProcess"]


class ProcessLimits(BaseModel):
    """Limits for one prover process."""

    model_config = ConfigDict(frozen=True)

    timeout: float = 30.0
    """Seconds one command (one coqc run, one REPL request) may take before the group is killed."""
    memory_bytes: int | None = 4 << 30
    """Address-space limit (``RLIMIT_AS``) of the process; None for no limit (e.g. with a
    ``docker run`` prefix, where the container's ``--memory`` limit applies instead)."""
    output_bytes: int = 4 << 20
    """At most this many bytes of output are kept per stream; more kills the process."""


class RunResult(BaseModel):
    stdout: str
    stderr: str
    exit_code: int | None
    status: str
    """``ok`` (exit 0), ``error`` (other exit), ``timeout``, ``killed`` (signal / output cap)."""
    duration: float
    truncated: bool = False


def _preexec(memory_bytes: int | None) -> Callable[[], None] | None:
    if memory_bytes is None:
        return None

    def limit() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return limit


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_limited(
    argv: Sequence[str],
    limits: ProcessLimits,
    prefix: Sequence[str] = (),
    stdin: str | None = None,
    cwd: str | None = None,
) -> RunResult:
    """Run ``prefix + argv`` to completion under ``limits``."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [*prefix, *argv],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_preexec(limits.memory_bytes),
    )
    if stdin is not None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    sel = selectors.DefaultSelector()
    for stream in buffers:
        sel.register(stream, selectors.EVENT_READ)
    deadline = start + limits.timeout
    status, truncated = None, False
    while sel.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            status = "timeout"
            break
        for key, _ in sel.select(remaining):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            buf = buffers[key.fileobj]
            buf += chunk
            if len(buf) > limits.output_bytes:
                del buf[limits.output_bytes:]
                status, truncated = "killed", True
        if truncated:
            break
    sel.close()
    if status is not None:
        _kill_group(proc)
    exit_code = proc.wait()
    for stream in buffers:
        stream.close()
    if status is None:
        status = "ok" if exit_code == 0 else ("killed" if exit_code < 0 else "error")
    return RunResult(
        stdout=buffers[proc.stdout].decode(errors="replace"),
        stderr=buffers[proc.stderr].decode(errors="replace"),
        exit_code=exit_code,
        status=status,
        duration=time.monotonic() - start,
        truncated=truncated,
    )


class InteractiveProcess:
    """A long-lived process spoken to over stdin/stdout (a Lean REPL).

    ``read_until(complete)`` reads stdout until ``complete(buffer)`` returns a reply or the
    deadline passes (the group is then killed and :class:`TimeoutError` raised). stderr goes to
    a file descriptor that is drained into a capped buffer so it can never stall the process.
    """

    def __init__(
        self,
        argv: Sequence[str],
        limits: ProcessLimits,
        prefix: Sequence[str] = (),
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.limits = limits
        self.argv = [*prefix, *argv]
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_preexec(limits.memory_bytes),
        )
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._sel.register(self.proc.stdout, selectors.EVENT_READ, "out")
        self._sel.register(self.proc.stderr, selectors.EVENT_READ, "err")
        self._out = bytearray()
        self.stderr = bytearray()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def read_until(self, complete: Callable[[bytearray], int | None], timeout: float | None = None) -> bytes:
        """Read until ``complete(buffer)`` gives the length of a whole reply; return that reply
        and keep the rest. Raises TimeoutError (group killed), EOFError (process ended) or
        OverflowError (output cap passed, group killed)."""
        deadline = time.monotonic() + (self.limits.timeout if timeout is None else timeout)
        while True:
            end = complete(self._out)
            if end is not None:
                reply = bytes(self._out[:end])
                del self._out[:end]
                return reply
            if len(self._out) > self.limits.output_bytes:
                self.kill()
                raise OverflowError(f"reply longer than {self.limits.output_bytes} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise TimeoutError(f"no reply within {self.limits.timeout if timeout is None else timeout:g} s")
            events = self._sel.select(remaining)
            for key, _ in events:
                chunk = os.read(key.fd, 65536)
                if key.data == "err":
                    if chunk:
                        self.stderr += chunk[: max(0, self.limits.output_bytes - len(self.stderr))]
                    else:
                        self._sel.unregister(key.fileobj)
                    continue
                if not chunk:
                    end = complete(self._out)
                    if end is not None:
                        continue
                    raise EOFError(f"process exited (code {self.proc.poll()})")
                self._out += chunk

    def rss_bytes(self) -> int:
        """Resident memory of the process (0 when it cannot be read, e.g. not on Linux)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def kill(self) -> None:
        _kill_group(self.proc)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self._sel.close()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self.alive():
            self.kill()
        else:
            self.kill()  # reaps and closes pipes
