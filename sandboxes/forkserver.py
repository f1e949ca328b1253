"""The host side of the fork server that runs inside every warm sandbox.

An exec through ``docker exec`` costs ~80 ms and a bubblewrap start ~15 ms before the command
even runs. So each warm sandbox starts, once, a small server inside itself
(``sandboxes/_forkserver_main.py``, run by the sandbox's ``/usr/bin/python3``; standard library
only) and every exec becomes one request to it: the server forks, the child isolates itself and
runs the command — Python code (``python3 -c CODE``, ``python3 FILE``) in the already started
interpreter, anything else through ``execve``.

What the child gets is what an exec had before: its own session and process group, the
sandbox's rlimits and cgroup limits, the non-root sandbox user, a fresh working directory
(``/work``), the environment the backend sets and nothing else, fresh pipes as
stdin/stdout/stderr, no other descriptor. The output cap is applied by the server as it reads
(only ``output_bytes`` per stream cross to the host) and the kill cap by the server too; the
deadline is kept here: at the deadline the host sends a kill request and, if the server does not
confirm within :data:`KILL_GRACE_S`, kills from outside as before (``docker exec kill -9 -1`` /
the bubblewrap process) and restarts the server. When the command returns, the server kills
every other process of the sandbox user (``kill(-1, SIGKILL)``, which never signals itself).

Nothing leaks between episodes through the server: it reads a request's stdin only after the
fork (the child never holds it), and at reset it kills every other process and ``exec``s a
fresh copy of itself (same pid and streams), so the memory that the next episode's children are
forked from holds nothing of the previous episode. (Within one episode, a later command's child
may find the earlier commands' arguments and output in freed memory it inherited: the agent's
own data.)

The server holds no secrets, is non-dumpable (nothing can ptrace it or read its memory, its
environment or its descriptors through /proc) and ignores every catchable signal. Locally it is
pid 1 of the bubblewrap pid namespace, so nothing inside can kill or stop it; in Docker it runs
as the sandbox user, so a command that SIGKILLs it (``kill -9 -1``) costs one server restart:
the command's result is then ``killed`` (the server's death is the command's doing) and the
next exec starts a new server. A request the server never acknowledged is run through the old
exec path instead, so no command is lost or run twice.

Protocol (both directions): frames of ``kind (1 byte) + length (4 bytes, big-endian) + payload``.
Host -> server: ``X`` exec request (JSON), then ``I`` stdin bytes when the request has stdin;
``K`` kill the running command; ``R`` renew (kill every other process, exec a fresh copy of the
server: between episodes); ``P`` ping. Server -> host: ``H`` hello (JSON, once), ``S`` the
command started, ``O``/``E`` stdout/stderr bytes, ``D`` done (JSON: exit code, output totals,
killed, flooded), ``F`` the command could not be started.

Metrics: every backend that uses a server counts ``fork_execs`` (through the server),
``fallback_execs`` (through the old path, because no server was up), ``server_starts`` and
``server_deaths`` in :attr:`ForkServerSlot.stats`; ``fork_server_up`` says whether one is up.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from turngym.sandboxes.base import SANDBOX_PYTHON, CappedBuffer

__all__ = ["ForkServer", "ForkServerSlot", "ForkServerStatus", "ServerLost", "ForkOutcome", "server_argv", "server_source",
           "KILL_GRACE_S", "MARKER"]

log = logging.getLogger(__name__)

HEADER = struct.Struct(">cI")
MARKER = "turngym-forkserver"
KILL_GRACE_S = 3.0
"""How long the server has to confirm a kill at the deadline before the host kills from outside."""
START_TIMEOUT_S = 20.0


@lru_cache(maxsize=1)
def server_source() -> str:
    return (Path(__file__).parent / "_forkserver_main.py").read_text()


def server_argv(*, as_init: bool) -> list[str]:
    """The command line that starts a server inside a sandbox."""
    return [SANDBOX_PYTHON, "-I", "-S", "-B", "-c", server_source(), MARKER,
            *(["--init"] if as_init else [])]


class ServerLost(Exception):
    """The server's stream ended or broke; ``started`` says whether the command had started."""

    def __init__(self, message: str, *, started: bool) -> None:
        super().__init__(message)
        self.started = started


@dataclass
class ForkOutcome:
    out: CappedBuffer
    err: CappedBuffer
    exit_code: int | None
    timed_out: bool
    flooded: bool


class Transport:
    """A byte stream to one server: ``send(data)``, ``recv(timeout) -> bytes`` (``b""`` at the
    end of the stream, ``None`` when nothing came within ``timeout``), ``close()``."""

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def recv(self, timeout: float) -> bytes | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ForkServer:
    """One running server, reached through a :class:`Transport`."""

    def __init__(self, transport: Transport, *, start_timeout: float = START_TIMEOUT_S) -> None:
        self.transport = transport
        self._buf = bytearray()
        self.alive = True
        kind, payload = self._next(time.monotonic() + start_timeout)
        if kind != b"H":
            raise ServerLost(f"the fork server did not say hello (got {kind!r})", started=False)
        self.hello = json.loads(payload)

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        try:
            self.transport.send(HEADER.pack(kind, len(payload)) + payload)
        except OSError as err:
            self.alive = False
            raise ServerLost(f"could not write to the fork server: {err}", started=False) from err

    def _next(self, deadline: float | None) -> tuple[bytes, bytes] | None:
        """The next frame, or None at ``deadline``; :class:`ServerLost` at the end of the stream."""
        while True:
            if len(self._buf) >= HEADER.size:
                kind, size = HEADER.unpack_from(self._buf)
                if len(self._buf) >= HEADER.size + size:
                    payload = bytes(self._buf[HEADER.size:HEADER.size + size])
                    del self._buf[:HEADER.size + size]
                    return kind, payload
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            try:
                chunk = self.transport.recv(left if left is not None else 60.0)
            except OSError as err:
                chunk = b""
                log.info("turngym: fork server stream broke: %s", err)
            if chunk is None:
                continue
            if not chunk:
                self.alive = False
                raise ServerLost("the fork server's stream ended", started=False)
            self._buf += chunk

    def renew(self, timeout: float = START_TIMEOUT_S) -> None:
        """Kill every other process and have the server exec a fresh copy of itself (between
        episodes: nothing of one episode stays in the memory the next one's children fork
        from). Raises :class:`ServerLost` when it does not come back."""
        self._send(b"R")
        got = self._next(time.monotonic() + timeout)
        if got is None or got[0] != b"H":
            self.alive = False
            raise ServerLost("the fork server did not come back after renewing itself", started=False)
        self.hello = json.loads(got[1])

    def ping(self, timeout: float = 5.0) -> bool:
        try:
            self._send(b"P")
            got = self._next(time.monotonic() + timeout)
        except ServerLost:
            return False
        return got is not None and got[0] == b"P"

    def run(self, argv: list[str], *, env: dict[str, str], cwd: str, stdin: bytes | None,
            timeout: float, output_bytes: int, output_kill_bytes: int,
            oom_score_adj: int | None = None, kill_first: bool = False) -> ForkOutcome:
        """Run one command; raises :class:`ServerLost` when the server goes away."""
        request = {"argv": argv, "env": env, "cwd": cwd, "out_cap": output_bytes,
                   "kill_cap": output_kill_bytes, "oom_score_adj": oom_score_adj,
                   "kill_first": kill_first, "stdin": None if stdin is None else len(stdin)}
        deadline = time.monotonic() + timeout
        self._send(b"X", json.dumps(request).encode())
        if stdin is not None:
            self._send(b"I", stdin)
        out, err = CappedBuffer(output_bytes), CappedBuffer(output_bytes)
        started = timed_out = False
        kill_deadline: float | None = None
        while True:
            try:
                got = self._next(kill_deadline if timed_out else deadline)
            except ServerLost as lost:
                lost.started = started
                raise
            if got is None:
                if timed_out:  # no confirmation of the kill: the server is stuck or stopped
                    self.alive = False
                    raise ServerLost("the fork server did not confirm the kill", started=True)
                timed_out = True
                kill_deadline = time.monotonic() + KILL_GRACE_S
                self._send(b"K")
                continue
            kind, payload = got
            if kind == b"S":
                started = True
            elif kind == b"O":
                out.write(payload)
            elif kind == b"E":
                err.write(payload)
            elif kind == b"F":
                raise ServerLost(payload.decode(errors="replace"), started=False)
            elif kind == b"D":
                done = json.loads(payload)
                # totals include what the server did not send (past the cap)
                out.total, err.total = max(out.total, done["out_total"]), max(err.total, done["err_total"])
                flooded = bool(done["flooded"])
                timed_out = timed_out or (bool(done["killed"]) and not flooded)
                exit_code = None if (timed_out or flooded) else int(done["exit_code"])
                return ForkOutcome(out, err, exit_code, timed_out, flooded)

    def close(self) -> None:
        self.alive = False
        try:
            self.transport.close()
        except OSError:
            pass


class ForkServerStatus:
    """What a sandbox with a fork server (``self.fork``, a :class:`ForkServerSlot`) reports."""

    fork: ForkServerSlot

    @property
    def fork_server_up(self) -> bool:
        """Whether the fork server is up (execs take the fast path)."""
        return self.fork.up

    @property
    def fork_stats(self) -> dict[str, int]:
        return self.fork.stats


class ForkServerSlot:
    """A backend's handle on its (at most one) server: starts it lazily, counts, restarts.

    ``starter()`` starts a server and returns it (or raises). After a start fails the slot
    stays down (exec falls back to the old path, counted in ``fallback_execs``) until
    :meth:`retry` (the backends call it on reset).
    """

    def __init__(self, starter: Callable[[], ForkServer], *, enabled: bool = True) -> None:
        self.starter = starter
        self.enabled = enabled
        self.server: ForkServer | None = None
        self.failed = False
        self.stats = {"fork_execs": 0, "fallback_execs": 0, "server_starts": 0, "server_deaths": 0}
        self.last_error = ""

    @property
    def up(self) -> bool:
        return self.server is not None and self.server.alive

    def get(self) -> ForkServer | None:
        """The live server, starting one if none is up; None when the old path must be used."""
        if not self.enabled:
            return None
        if self.up:
            return self.server
        if self.server is not None:  # it died since the last call
            self.lost()
        if self.failed:
            return None
        try:
            self.server = self.starter()
            self.stats["server_starts"] += 1
            return self.server
        except Exception as err:
            self.failed = True
            self.last_error = str(err)
            log.warning("turngym: the sandbox fork server could not start (%s); using the slower"
                        " exec path", err)
            return None

    def lost(self) -> None:
        """The server died or was killed: forget it (the next exec starts a new one)."""
        if self.server is not None:
            self.stats["server_deaths"] += 1
            self.server.close()
            self.server = None

    def retry(self) -> None:
        self.failed = False

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


class PipeTransport(Transport):
    """A server on this machine: its stdin and stdout pipes (``proc`` is its Popen)."""

    def __init__(self, proc) -> None:
        import os

        self.proc = proc
        self._w = proc.stdin.fileno()
        self._r = proc.stdout.fileno()
        os.set_blocking(self._r, False)

    def send(self, data: bytes) -> None:
        import os

        view = memoryview(data)
        while view:
            view = view[os.write(self._w, view):]

    def recv(self, timeout: float) -> bytes | None:
        import os
        import select

        ready, _, _ = select.select([self._r], [], [], max(0.0, timeout))
        if not ready:
            return None
        try:
            return os.read(self._r, 1 << 16)
        except BlockingIOError:
            return None

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class DockerExecTransport(Transport):
    """A server in a container: the hijacked socket of a ``docker exec -i`` (stdin raw, stdout
    and stderr multiplexed in Docker's 8-byte-header frames; stderr goes to the log)."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.raw = getattr(sock, "_sock", sock)
        self.raw.setblocking(True)
        self._frames = bytearray()

    def send(self, data: bytes) -> None:
        self.raw.sendall(data)

    def recv(self, timeout: float) -> bytes | None:
        import select

        while True:
            out = self._demux()
            if out:
                return out
            ready, _, _ = select.select([self.raw], [], [], max(0.0, timeout))
            if not ready:
                return None
            chunk = self.raw.recv(1 << 16)
            if not chunk:
                return b""
            self._frames += chunk

    def _demux(self) -> bytes:
        out = bytearray()
        while len(self._frames) >= 8:
            size = struct.unpack(">I", self._frames[4:8])[0]
            if len(self._frames) < 8 + size:
                break
            stream = self._frames[0]
            payload = bytes(self._frames[8:8 + size])
            del self._frames[:8 + size]
            if stream == 1:
                out += payload
            else:
                log.info("turngym: fork server: %s", payload.decode(errors="replace").rstrip())
        return bytes(out)

    def close(self) -> None:
        for s in (self.raw, self.sock):
            try:
                s.close()
            except OSError:
                pass
