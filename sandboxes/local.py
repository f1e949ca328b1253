"""``LocalSandbox``: run commands on this machine, in bubblewrap when it is available.

With bubblewrap (``isolation="bwrap"``, the default when ``bwrap`` is on PATH and works):
new user, pid, network, ipc, uts and cgroup namespaces (no network at all); the host's ``/usr``
read-only and nothing else of it (no ``/home``, ``/root``, ``/etc/shadow``; a few harmless
``/etc`` files for the dynamic linker and user names); a private ``/tmp`` tmpfs; the workdir
(a host temp dir) bound at ``/work``; ``--die-with-parent`` and ``--new-session``. The command
is pid 2 of its own pid namespace, so when it returns (or the deadline kills bwrap) the kernel
kills every process it left, ``setsid`` or not. When the runner is root the sandbox runs as
``nobody`` (uid 65534), so it cannot signal or read what the runner owns.

Fork server (bubblewrap only): when the sandbox is made, one long-lived bwrap starts a fork
server (:mod:`turngym.sandboxes.forkserver`) as pid 1 of the sandbox's pid namespace, and every
exec is a fork of it — no bwrap start, and for ``python3 -c``/``python3 FILE`` no interpreter
start either. Nothing inside can signal pid 1 (the kernel drops SIGKILL/SIGSTOP sent to a
namespace's init from inside), it is non-dumpable, and when a command returns it kills every
other process of the namespace. ``/tmp`` and ``/dev/shm`` then live as long as the server (an
episode): reset kills every process but the server and wipes ``/work``, ``/tmp`` and
``/dev/shm``. Without a server (``fork_server=False``, or it could not start) each exec starts
its own bwrap as below, and ``fork_stats["fallback_execs"]`` counts it.

Limits come from rlimits set before bwrap starts: RLIMIT_AS (memory), RLIMIT_NPROC (pids),
RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE=0. The deadline and the output caps are enforced by
this process, which reads the pipes while the command runs and kills the process group.

What the local backend cannot contain (use DockerSandbox for these):
- CPU share (only the deadline bounds CPU time) and total disk use of the workdir (a host temp
  dir; bounded per file by RLIMIT_FSIZE and in total only by the deadline);
- RLIMIT_NPROC counts every process of the sandbox uid on the host, so concurrent local
  sandboxes share that budget;
- memory is an address-space limit, so allocation fails (MemoryError) instead of an OOM kill;
  such exits are reported as ``oom`` from the error text;
- without bubblewrap (``isolation="rlimits"``) there is no network, filesystem or pid
  isolation at all: only rlimits, a process group and (as root) a separate uid. A child that
  calls ``setsid`` escapes the process-group kill unless the runner is root (then every
  process of the sandbox uid is killed).
"""

from __future__ import annotations

import errno
import os
import re
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import weakref
from functools import lru_cache
from typing import Literal

from turngym.sandboxes.base import (
    SANDBOX_PYTHON,
    WORKDIR,
    CappedBuffer,
    ExecResult,
    Sandbox,
    SandboxLimits,
    classify_exit,
    decode_output,
)
from turngym.sandboxes.errors import SandboxError, SandboxUnavailable, UnsafePath
from turngym.sandboxes.forkserver import (
    ForkServer,
    ForkServerSlot,
    ForkServerStatus,
    PipeTransport,
    ServerLost,
    server_argv,
)

__all__ = ["LocalSandbox", "bwrap_available", "NOBODY_UID", "fork_server_pids"]

_LIVE: weakref.WeakSet = weakref.WeakSet()
_WIPE = ("chmod -R u+rwX /work /tmp /dev/shm 2>/dev/null; "
         "find /work /tmp /dev/shm -mindepth 1 -delete")


def fork_server_pids() -> set[int]:
    """Host pids of every live local fork server and its bwrap (for leak checks)."""
    pids: set[int] = set()
    for sb in list(_LIVE):
        pids |= sb.fork_server_pids
    return pids

NOBODY_UID = 65534
Isolation = Literal["auto", "bwrap", "rlimits"]
# /etc files the sandboxed programs need; none holds a secret.
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime",
              "nsswitch.conf", "passwd", "group", "hosts", "mime.types")
_OOM_TEXT = re.compile(rb"MemoryError|Cannot allocate memory|std::bad_alloc|out of memory")
_PATH = "/usr/bin:/bin:/usr/local/bin"


@lru_cache(maxsize=1)
def bwrap_available() -> bool:
    """True when bubblewrap is installed and can create its namespaces here."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    probe = [exe, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
             *_merged_usr_args(), "--proc", "/proc", "--dev", "/dev", "/bin/true"]
    kwargs = _drop_kwargs()
    try:
        return subprocess.run(probe, capture_output=True, timeout=10, **kwargs).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@lru_cache(maxsize=1)
def _no_nested_userns() -> tuple[str, ...]:
    """bwrap >= 0.8 can forbid user namespaces inside (no `unshare -r` root inside)."""
    try:
        text = subprocess.run(["bwrap", "--help"], capture_output=True, text=True).stdout
    except OSError:
        return ()
    return ("--unshare-user", "--disable-userns") if "--disable-userns" in text else ()


def _merged_usr_args() -> list[str]:
    args = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64"):
        host = f"/{name}"
        if os.path.islink(host):
            args += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            args += ["--ro-bind", host, host]
    return args


def _kill_children(pid: int) -> None:
    """SIGKILL every child of ``pid`` that is still there."""
    for child in _children(pid):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        kids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            kids.append(int(entry))
                except (OSError, ValueError, IndexError):
                    continue
        return kids


def _drop_kwargs() -> dict:
    """Popen arguments that drop root to nobody (the sandbox must not be the runner's uid)."""
    if os.geteuid() != 0:
        return {}
    return {"user": NOBODY_UID, "group": NOBODY_UID, "extra_groups": []}


class LocalSandbox(ForkServerStatus, Sandbox):
    """A sandbox on this machine: bubblewrap namespaces + rlimits (see module docstring)."""

    def __init__(self, limits: SandboxLimits | None = None, *, isolation: Isolation = "auto",
                 python: str = SANDBOX_PYTHON, fork_server: bool = True) -> None:
        super().__init__(limits)
        if isolation == "auto":
            isolation = "bwrap" if bwrap_available() else "rlimits"
        elif isolation == "bwrap" and not bwrap_available():
            raise SandboxUnavailable(
                "bubblewrap is not usable here: install it (apt-get install bubblewrap) and allow"
                " unprivileged user namespaces, or use isolation='rlimits'."
            )
        self.isolation: Isolation = isolation
        self.python_exe = python
        self._workdir = tempfile.mkdtemp(prefix="turngym-local-")
        self._drop = _drop_kwargs()
        if self._drop:
            os.chown(self._workdir, NOBODY_UID, NOBODY_UID)
        os.chmod(self._workdir, 0o700)
        self._server_proc: subprocess.Popen | None = None
        # the server needs bwrap's pid namespace: with rlimits only, kill(-1) would reach the host
        self.fork = ForkServerSlot(self._start_server, enabled=fork_server and isolation == "bwrap")
        _LIVE.add(self)
        self.fork.get()  # warm: the server starts with the sandbox

    # -- the fork server ------------------------------------------------------------------
    def _start_server(self) -> ForkServer:
        self._stop_server_proc()
        full, _, _ = self._argv(server_argv(as_init=True), as_init=True)
        rlimits = self._rlimits()

        def preexec() -> None:
            for res, value in rlimits:
                resource.setrlimit(res, (value, value))

        proc = subprocess.Popen(full, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=preexec, close_fds=True, **self._drop)
        self._server_proc = proc
        try:
            return ForkServer(PipeTransport(proc))
        except BaseException:
            self._stop_server_proc()
            raise

    def _stop_server_proc(self) -> None:
        """Kill the server's bwrap: its pid namespace and everything in it goes."""
        proc, self._server_proc = self._server_proc, None
        if proc is None:
            return
        _kill_children(proc.pid)
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        proc.wait()

    @property
    def fork_server_pids(self) -> set[int]:
        """Host pids of the server's bwrap and of the server (pid 1 inside)."""
        proc = self._server_proc
        if proc is None or proc.poll() is not None:
            return set()
        return {proc.pid, *_children(proc.pid)}

    def _fork_exec(self, server: ForkServer, argv: list[str], stdin: bytes | None, timeout: float,
                   *, kill_first: bool = False) -> ExecResult | None:
        """``argv`` through the server; None when it never started (the caller falls back)."""
        start = time.monotonic()
        # what the per-exec bwrap gives a command (bwrap's --chdir also sets PWD)
        env = {"PATH": _PATH, "HOME": WORKDIR, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "PWD": WORKDIR}
        try:
            run = server.run(argv, env=env, cwd=WORKDIR, stdin=stdin, timeout=timeout,
                             output_bytes=self.limits.output_bytes,
                             output_kill_bytes=self.limits.output_kill_bytes, kill_first=kill_first)
        except ServerLost as lost:
            self.fork.lost()
            self._stop_server_proc()  # from outside: the namespace and all in it are gone
            if not lost.started:
                return None
            timed_out = "kill" in str(lost)
            return ExecResult("", "", None, "timeout" if timed_out else "killed", time.monotonic() - start,
                              message=f"the sandbox's exec server was lost ({lost}); everything in"
                                      " the sandbox was killed and the server restarted")
        self.fork.stats["fork_execs"] += 1
        return self._result(run.out, run.err, run.exit_code, run.timed_out, run.flooded, timeout, start)

    @property
    def host_workdir(self) -> str:
        """The host directory that is /work inside (for debugging; do not write to it)."""
        return self._workdir

    # -- exec -----------------------------------------------------------------------------
    def _argv(self, argv: list[str], *, as_init: bool = False) -> tuple[list[str], str | None, dict[str, str]]:
        env = {"PATH": _PATH, "HOME": WORKDIR, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        if self.isolation == "rlimits":
            # No mount namespace: /work is the host temp dir; rewrite the paths we hand out.
            env["HOME"] = self._workdir
            return argv, self._workdir, env
        tmp_bytes = str(self.limits.workdir_mb * 1024 * 1024)
        # the server's bwrap does not die with the thread that started it (a pool worker may
        # exit); it goes when its stdin closes, i.e. with this process
        lifetime = ["--as-pid-1"] if as_init else ["--die-with-parent"]
        args = ["bwrap", "--unshare-all", *_no_nested_userns(), *lifetime, "--new-session",
                "--hostname", "sandbox", "--cap-drop", "ALL",
                "--ro-bind", "/usr", "/usr", *_merged_usr_args()]
        for name in _ETC_FILES:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--size", tmp_bytes, "--tmpfs", "/tmp",
                 "--bind", self._workdir, WORKDIR, "--remount-ro", "/",
                 "--chdir", WORKDIR, "--clearenv"]
        for key, value in env.items():
            args += ["--setenv", key, value]
        return [*args, "--", *argv], None, {}

    def _rlimits(self) -> list[tuple[int, int]]:
        lim = self.limits
        return [(resource.RLIMIT_AS, lim.memory_mb * 1024 * 1024), (resource.RLIMIT_NPROC, lim.pids),
                (resource.RLIMIT_FSIZE, lim.file_size_mb * 1024 * 1024),
                (resource.RLIMIT_NOFILE, lim.open_files), (resource.RLIMIT_CORE, 0)]

    def _exec(self, argv: list[str], stdin: bytes | None, timeout: float) -> ExecResult:
        server = self.fork.get()
        if server is not None:
            result = self._fork_exec(server, argv, stdin, timeout)
            if result is not None:
                return result
        if self.fork.enabled:
            self.fork.stats["fallback_execs"] += 1
        return self._spawn_exec(argv, stdin, timeout)

    def _spawn_exec(self, argv: list[str], stdin: bytes | None, timeout: float) -> ExecResult:
        """The path without a fork server: one bwrap (or rlimited process) per command."""
        full, cwd, env = self._argv(argv)
        start = time.monotonic()
        rlimits = self._rlimits()

        def preexec() -> None:  # runs in the child after the uid drop: no imports here
            for res, value in rlimits:
                resource.setrlimit(res, (value, value))

        try:
            proc = subprocess.Popen(
                full, cwd=cwd, env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                preexec_fn=preexec, close_fds=True, **self._drop)
        except OSError as err:
            if err.errno == errno.ENOENT:
                return ExecResult("", f"command not found: {argv[0]}", 127, "error",
                                  time.monotonic() - start, message=str(err))
            raise SandboxError(f"could not start the local sandbox: {err}") from err
        out, err_buf = CappedBuffer(self.limits.output_bytes), CappedBuffer(self.limits.output_bytes)
        timed_out, flooded = self._pump(proc, stdin, out, err_buf, start + timeout)
        if timed_out or flooded:
            self._kill(proc)
        try:
            code = proc.wait(timeout=max(0.0, start + timeout - time.monotonic()) + 5)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            code = proc.returncode
        self._kill_stragglers(proc)
        exit_code = None if (timed_out or flooded) else (128 - code if code < 0 else code)
        return self._result(out, err_buf, exit_code, timed_out, flooded, timeout, start)

    def _result(self, out: CappedBuffer, err_buf: CappedBuffer, exit_code: int | None,
                timed_out: bool, flooded: bool, timeout: float, start: float) -> ExecResult:
        oom = exit_code not in (0, None) and bool(_OOM_TEXT.search(err_buf.getvalue()[-4096:]))
        status = classify_exit(exit_code, timed_out=timed_out, oom=oom, killed=flooded)
        message = ""
        if timed_out:
            message = f"deadline of {timeout:g}s exceeded; the process tree was killed"
        elif flooded:
            message = f"more than {self.limits.output_kill_bytes} bytes of output; killed"
        return ExecResult(decode_output(out.getvalue()), decode_output(err_buf.getvalue()),
                          exit_code, status, time.monotonic() - start,
                          out.truncated or err_buf.truncated, message)

    def _pump(self, proc: subprocess.Popen, stdin: bytes | None, out: CappedBuffer,
              err: CappedBuffer, deadline: float) -> tuple[bool, bool]:
        """Read both pipes (and feed stdin) until EOF, the deadline or a flood."""
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        pending = memoryview(stdin or b"")
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE, None)
        open_reads = 2
        try:
            while open_reads:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True, False
                for key, _ in sel.select(min(left, 1.0)):
                    if key.data is None:  # stdin writable
                        try:
                            n = os.write(key.fd, pending[:65536])
                            pending = pending[n:]
                        except (BrokenPipeError, OSError):
                            pending = memoryview(b"")
                        if not pending:
                            sel.unregister(key.fileobj)
                            proc.stdin.close()
                        continue
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        open_reads -= 1
                        continue
                    key.data.write(chunk)
                    if out.total + err.total > self.limits.output_kill_bytes:
                        return False, True
            return False, False
        finally:
            sel.close()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None and not pipe.closed:
                    pipe.close()

    def _kill(self, proc: subprocess.Popen) -> None:
        """Kill the whole tree and return when it is gone.

        With bubblewrap, SIGKILL goes to bwrap's child, the init of the sandbox's pid
        namespace: the kernel then kills every process in the namespace, and that init (and
        so the outer bwrap we wait for) exits only after all of them are gone.
        """
        if self.isolation == "bwrap":
            _kill_children(proc.pid)
            try:
                proc.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def _kill_stragglers(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.isolation == "rlimits" and self._drop:
            # No pid namespace: children that called setsid left the group. As root we can
            # kill every process of the sandbox uid from a helper running as that uid.
            subprocess.run(["/bin/kill", "-9", "-1"], **self._drop, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)

    # -- files ----------------------------------------------------------------------------
    def _open_dir(self, rel_parent: str) -> int:
        """An fd of workdir/rel_parent, walking each component without following symlinks."""
        fd = os.open(self._workdir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in [p for p in rel_parent.split("/") if p]:
                try:
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    if self._drop:
                        os.chown(part, NOBODY_UID, NOBODY_UID, dir_fd=fd, follow_symlinks=False)
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as err:
                    raise UnsafePath(f"{rel_parent!r} goes through a symlink or a non-directory.") from err
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _put_file(self, rel: str, data: bytes) -> None:
        parent, name = os.path.split(rel)
        dfd = self._open_dir(parent)
        try:
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644,
                             dir_fd=dfd)
            except OSError as err:
                raise UnsafePath(f"cannot write {rel!r} in the workdir (a symlink?): {err.strerror}.") from err
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self._drop:
                    os.fchown(f.fileno(), NOBODY_UID, NOBODY_UID)
        finally:
            os.close(dfd)

    def _get_file(self, rel: str) -> bytes:
        parent, name = os.path.split(rel)
        dfd = self._open_dir(parent)
        try:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
            except FileNotFoundError:
                raise
            except OSError as err:
                raise UnsafePath(f"cannot read {rel!r} from the workdir (a symlink?): {err.strerror}.") from err
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise UnsafePath(f"{rel!r} is not a regular file.")
                data = f.read(self.limits.max_file_get_bytes + 1)
            if len(data) > self.limits.max_file_get_bytes:
                raise SandboxError(f"{rel!r} is larger than {self.limits.max_file_get_bytes} bytes.")
            return data
        finally:
            os.close(dfd)

    # -- lifetime -------------------------------------------------------------------------
    def _wipe(self) -> None:
        def make_writable(func, path, _exc):
            os.chmod(os.path.dirname(path), 0o700)
            func(path)

        for entry in os.listdir(self._workdir):
            path = os.path.join(self._workdir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, onerror=make_writable)
            else:
                os.unlink(path)

    def _reset(self) -> None:
        self.fork.retry()
        server = self.fork.get()
        if server is not None:
            try:
                server.renew()
            except ServerLost:
                server = None
                self.fork.lost()
                self._stop_server_proc()
        if server is not None:
            # kill every process of the namespace but the server; wipe /work, /tmp, /dev/shm
            res = self._fork_exec(server, ["/bin/sh", "-c", _WIPE], None, 10.0, kill_first=True)
            if res is not None and res.status == "ok":
                return
            self.fork.lost()
            self._stop_server_proc()  # a fresh namespace has a fresh /tmp and /dev/shm
        self._wipe()  # without a server no process outlives an exec: only the files are left

    def _close(self) -> None:
        self.fork.close()
        self._stop_server_proc()
        _LIVE.discard(self)
        shutil.rmtree(self._workdir, ignore_errors=True)
