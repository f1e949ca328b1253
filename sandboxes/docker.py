"""``DockerSandbox``: one hardened container per sandbox, driven through the ``docker`` SDK.

The container (see :meth:`DockerSandbox._container_options`):
- no network (``network_mode="none"``), read-only root filesystem, size-capped tmpfs for
  ``/work`` (the workdir, owned by the sandbox user) and ``/tmp``;
- ``cap_drop=ALL``, ``no-new-privileges``, pids / memory (= memory+swap) / CPU limits,
  ``fsize`` and ``nofile`` ulimits, Docker's init (tini) as pid 1 so zombies are reaped;
- the keeper process (``sleep infinity``) runs as ``nobody``; commands run as the unprivileged
  ``sandbox`` user (uid 1000), so ``kill -9 -1`` inside kills only the command's own processes;
- no host environment variables (Docker passes none; we set PATH, HOME, LANG only);
- optional gVisor: ``runtime="runsc"``.

Exec goes through a fork server started in the container when the sandbox is made (see
:mod:`turngym.sandboxes.forkserver`): one long-lived ``docker exec -i`` of
``/usr/bin/python3`` as the sandbox user, which forks per command — ~5 ms instead of ~80 ms
for a ``docker exec``. Reset also goes through it (kill every other process of the sandbox user,
wipe ``/work``, ``/tmp``, ``/dev/shm``), so the server survives between episodes. When no
server is up (it could not start; ``fork_server=False``), exec takes the path below, and
``fork_stats["fallback_execs"]`` counts it.

The fallback exec uses the low-level API (exec_create + a hijacked socket): stdin is written and stdout /
stderr frames are read while the command runs, capped, under a deadline kept here. Each
command runs under a tiny ``sh`` wrapper that, when the command returns, kills every other
process of the sandbox user (so double-forked / setsid children do not outlive the exec).
At the deadline a second exec kills every process of the sandbox user; if even that fails
(e.g. a fork bomb holds every pid), the container is killed and started again, which also
gives it fresh tmpfs mounts.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import socket
import struct
import threading
import time
from functools import lru_cache

from turngym.sandboxes.base import (
    WORKDIR,
    CappedBuffer,
    ExecResult,
    Sandbox,
    SandboxLimits,
    classify_exit,
    decode_output,
)
from turngym.sandboxes.errors import (
    DockerNotInstalled,
    DockerNotRunning,
    ImageMissing,
    SandboxError,
    UnsafePath,
)
from turngym.sandboxes.forkserver import (
    DockerExecTransport,
    ForkServer,
    ForkServerSlot,
    ForkServerStatus,
    ServerLost,
    server_argv,
)
from turngym.sandboxes.image import SANDBOX_UID, get_profile, image_tag
from turngym.sandboxes.reaper import ensure_reaped, run_labels

__all__ = ["DockerSandbox", "docker_client", "docker_available", "default_image"]

log = logging.getLogger(__name__)

SANDBOX_USER = f"{SANDBOX_UID}:{SANDBOX_UID}"
KEEPER_USER = "65534:65534"
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORKDIR, "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1"}
# what a `docker exec` through the wrapper below gives a command (Docker adds HOSTNAME, sh PWD)
_FORK_ENV = {**_ENV, "HOSTNAME": "sandbox", "PWD": WORKDIR}
# "$@" runs the command; then every other process of the sandbox user is killed (kill(-1)
# never signals the caller), so nothing the command started outlives the exec.
_WRAPPER = '"$@"; rc=$?; kill -9 -1 2>/dev/null; exit $rc'
_WIPE = "chmod -R u+rwX /work /tmp /dev/shm 2>/dev/null; find /work /tmp /dev/shm -mindepth 1 -delete"
_RESET = "kill -9 -1 2>/dev/null; " + _WIPE
# get_file refuses symlinks anywhere on the path, as LocalSandbox does (exit 3 = unsafe).
_GET = ('[ "$(realpath -s -- "/work/$1")" = "$(realpath -- "/work/$1" 2>/dev/null)" ] || exit 3; '
        'test -f "$1" || exit 2; head -c "$2" -- "$1"')
_PUT = ('d=$(dirname -- "$1"); mkdir -p -- "$d" && [ "$(realpath -- "$d")" = "$(realpath -s -- "/work/$d")" ]'
        ' && ! [ -L "$1" ] || exit 3; cat > "$1"')
_KILL_ALL = ["/bin/sh", "-c", "kill -9 -1"]
_STDOUT, _STDERR = 1, 2


def _client_kwargs() -> dict:
    return {"timeout": 60, "max_pool_size": 64}


@lru_cache(maxsize=1)
def _cached_client():
    import docker

    try:
        client = docker.from_env(**_client_kwargs())
        client.ping()
        return client
    except docker.errors.DockerException as err:
        installed = (shutil.which("dockerd") or shutil.which("docker")
                     or os.path.exists("/var/run/docker.sock") or os.environ.get("DOCKER_HOST"))
        if not installed:
            raise DockerNotInstalled() from err
        raise DockerNotRunning(str(err).splitlines()[0][:160]) from err


def docker_client():
    """A shared Docker client, or :class:`SandboxUnavailable` saying how to get one."""
    try:
        return _cached_client()
    except Exception:
        _cached_client.cache_clear()  # try again next time (dockerd may come up)
        raise


def docker_available() -> bool:
    try:
        docker_client()
        return True
    except SandboxError:
        return False


def default_image(profile: str = "python") -> str:
    return image_tag(get_profile(profile))


class DockerSandbox(ForkServerStatus, Sandbox):
    """A hardened container (see the module docstring)."""

    def __init__(self, limits: SandboxLimits | None = None, *, image: str | None = None,
                 profile: str = "python", runtime: str | None = None, client=None,
                 network: str = "none", fork_server: bool = True) -> None:
        super().__init__(limits)
        self.client = client or docker_client()
        self.image = image or default_image(profile)
        self.profile = profile
        self.runtime = runtime
        self.network = network
        if not self.client.images.list(name=self.image):
            raise ImageMissing(self.image, profile)
        ensure_reaped(self.client)
        self.api = self.client.api
        self._oom_seen = 0
        self.restarts = 0
        self.container = self.client.containers.run(self.image, **self._container_options())
        self.id: str = self.container.id
        self._exec_ids: dict[int, str] = {}
        self.fork = ForkServerSlot(self._start_server, enabled=fork_server)
        self.fork.get()  # warm: the server starts with the sandbox

    # -- the fork server ------------------------------------------------------------------
    def _start_server(self) -> ForkServer:
        exec_id = self.api.exec_create(self.id, server_argv(as_init=False), stdin=True, stdout=True,
                                       stderr=True, user=SANDBOX_USER, workdir="/", environment=_ENV)["Id"]
        sock = self.api.exec_start(exec_id, socket=True)
        transport = DockerExecTransport(sock)
        try:
            server = ForkServer(transport)
        except BaseException:
            transport.close()
            raise
        self._exec_ids[id(server)] = exec_id
        return server

    @property
    def fork_server_pid(self) -> int | None:
        """The host pid of the fork server, when it is up."""
        if not self.fork.up:
            return None
        try:
            return self.api.exec_inspect(self._exec_ids[id(self.fork.server)]).get("Pid") or None
        except Exception:
            return None

    def _fork_exec(self, server: ForkServer, argv: list[str], stdin: bytes | None, timeout: float,
                   *, kill_first: bool = False, output_bytes: int | None = None,
                   output_kill_bytes: int | None = None) -> ExecResult | None:
        """``argv`` through the server; None when it never started (the caller falls back)."""
        start = time.monotonic()
        try:
            run = server.run(argv, env=_FORK_ENV, cwd=WORKDIR, stdin=stdin, timeout=timeout,
                             output_bytes=output_bytes or self.limits.output_bytes,
                             output_kill_bytes=output_kill_bytes or self.limits.output_kill_bytes,
                             oom_score_adj=1000, kill_first=kill_first)
        except ServerLost as lost:
            self.fork.lost()
            if not lost.started:
                return None
            # the command killed the server (kill -9 -1) or wedged it: kill what is left from
            # outside; the next exec starts a new server
            self._kill_all()
            timed_out = "kill" in str(lost)
            return ExecResult("", "", None, "timeout" if timed_out else "killed", time.monotonic() - start,
                              message=f"the command took down the sandbox's exec server ({lost}); "
                                      "it was killed and the server restarted")
        self.fork.stats["fork_execs"] += 1
        return self._result(run.out, run.err, run.exit_code, run.timed_out, run.flooded, timeout, start)

    def _container_options(self) -> dict:
        import docker

        lim = self.limits
        mb = 1024 * 1024
        tmpfs_opts = f"rw,nosuid,nodev,size={lim.workdir_mb}m"
        options = dict(
            command=["sleep", "infinity"],
            detach=True,
            init=True,
            user=KEEPER_USER,
            working_dir=WORKDIR,
            network_mode=self.network,
            read_only=True,
            tmpfs={
                WORKDIR: f"{tmpfs_opts},uid={SANDBOX_UID},gid={SANDBOX_UID},mode=0700",
                "/tmp": f"{tmpfs_opts},mode=1777",
            },
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=lim.pids,
            mem_limit=lim.memory_mb * mb,
            memswap_limit=lim.memory_mb * mb,
            nano_cpus=int(lim.cpus * 1e9),
            ulimits=[
                docker.types.Ulimit(name="fsize", soft=lim.file_size_mb * mb, hard=lim.file_size_mb * mb),
                docker.types.Ulimit(name="nofile", soft=lim.open_files, hard=lim.open_files),
                docker.types.Ulimit(name="core", soft=0, hard=0),
            ],
            environment={},
            hostname="sandbox",
            ipc_mode="private",
            labels=run_labels(),
            stop_signal="SIGKILL",
        )
        if self.runtime:
            options["runtime"] = self.runtime
        return options

    # -- exec -----------------------------------------------------------------------------
    def _exec(self, argv: list[str], stdin: bytes | None, timeout: float) -> ExecResult:
        server = self.fork.get()
        if server is not None:
            result = self._fork_exec(server, argv, stdin, timeout)
            if result is not None:
                return result
        if self.fork.enabled:
            self.fork.stats["fallback_execs"] += 1
        return self._docker_exec(argv, stdin, timeout)

    def _docker_exec(self, argv: list[str], stdin: bytes | None, timeout: float) -> ExecResult:
        """The path without a fork server: one ``docker exec`` per command."""
        start = time.monotonic()
        deadline = start + timeout
        out, err = CappedBuffer(self.limits.output_bytes), CappedBuffer(self.limits.output_bytes)
        try:
            exec_id = self.api.exec_create(
                self.id, ["/bin/sh", "-c", _WRAPPER, "turngym", *argv], stdout=True, stderr=True,
                stdin=stdin is not None, user=SANDBOX_USER, workdir=WORKDIR, environment=_ENV)["Id"]
            sock = self.api.exec_start(exec_id, socket=True)
        except Exception as error:
            return self._failed_start(error, start)
        raw = getattr(sock, "_sock", sock)
        try:
            timed_out, flooded = self._pump(raw, stdin, out, err, deadline)
        finally:
            # Close the stream before killing: while an exec's output is unread, the daemon
            # does not start another exec in that container.
            raw.close()
            sock.close()
        if timed_out or flooded:
            self._kill_all()
        exit_code = None if (timed_out or flooded) else self._exit_code(exec_id)
        return self._result(out, err, exit_code, timed_out, flooded, timeout, start)

    def _result(self, out: CappedBuffer, err: CappedBuffer, exit_code: int | None, timed_out: bool,
                flooded: bool, timeout: float, start: float) -> ExecResult:
        oom = (not timed_out and exit_code is not None and exit_code >= 128) and self._oom_happened()
        status = classify_exit(exit_code, timed_out=timed_out, oom=oom, killed=flooded)
        message = ""
        if timed_out:
            message = f"deadline of {timeout:g}s exceeded; the process tree was killed"
        elif flooded:
            message = f"more than {self.limits.output_kill_bytes} bytes of output; killed"
        elif oom:
            message = f"memory limit of {self.limits.memory_mb} MB exceeded"
        return ExecResult(decode_output(out.getvalue()), decode_output(err.getvalue()), exit_code,
                          status, time.monotonic() - start, out.truncated or err.truncated, message)

    def _failed_start(self, error: Exception, start: float) -> ExecResult:
        """The exec could not even start: the container is wedged (pids full?) or gone."""
        log.info("turngym: exec could not start in %s (%s); restarting it", self.id[:12], error)
        self._restart()
        return ExecResult("", "", None, "killed", time.monotonic() - start,
                          message=f"the sandbox could not start the command and was restarted: {error}")

    def _pump(self, raw: socket.socket, stdin: bytes | None, out: CappedBuffer,
              err: CappedBuffer, deadline: float) -> tuple[bool, bool]:
        """Feed stdin and read multiplexed frames until EOF, the deadline or a flood."""
        raw.setblocking(False)
        sel = selectors.DefaultSelector()
        pending = memoryview(stdin or b"")
        sel.register(raw, selectors.EVENT_READ | (selectors.EVENT_WRITE if stdin is not None else 0))
        if stdin is not None and not pending:
            raw.shutdown(socket.SHUT_WR)
            sel.modify(raw, selectors.EVENT_READ)
        buf = bytearray()
        sinks = {_STDOUT: out, _STDERR: err}
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True, False
                for _key, events in sel.select(min(left, 1.0)):
                    if events & selectors.EVENT_WRITE and pending:
                        try:
                            n = raw.send(pending[:65536])
                            pending = pending[n:]
                        except BlockingIOError:
                            n = 0
                        except OSError:
                            pending = memoryview(b"")
                        if not pending:
                            try:
                                raw.shutdown(socket.SHUT_WR)  # stdin EOF for the command
                            except OSError:
                                pass
                            sel.modify(raw, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        try:
                            chunk = raw.recv(1 << 16)
                        except BlockingIOError:
                            continue
                        except OSError:
                            chunk = b""
                        if not chunk:
                            return False, False
                        buf += chunk
                        while len(buf) >= 8:
                            size = struct.unpack(">I", buf[4:8])[0]
                            if len(buf) < 8 + size:
                                break
                            sink = sinks.get(buf[0], err)
                            sink.write(bytes(buf[8:8 + size]))
                            del buf[:8 + size]
                        if out.total + err.total > self.limits.output_kill_bytes:
                            return False, True
        finally:
            sel.close()

    def _exit_code(self, exec_id: str) -> int | None:
        until = time.monotonic() + 5.0
        while True:
            info = self.api.exec_inspect(exec_id)
            if not info.get("Running") or time.monotonic() > until:
                return info.get("ExitCode")
            time.sleep(0.005)  # the exec's stream closed; its exit status lands within ms

    def _run_quick(self, cmd: list[str], timeout: float = 5.0) -> int | None:
        """Run a housekeeping command as the sandbox user; its exit code or None on failure."""
        result: list[int | None] = [None]

        def target() -> None:
            try:
                exec_id = self.api.exec_create(self.id, cmd, user=SANDBOX_USER, workdir="/")["Id"]
                self.api.exec_start(exec_id)
                result[0] = self.api.exec_inspect(exec_id).get("ExitCode")
            except Exception as err:
                log.info("turngym: housekeeping exec in %s failed: %s", self.id[:12], err)

        worker = threading.Thread(target=target, daemon=True)
        worker.start()
        worker.join(timeout)
        return result[0]

    def _kill_all(self) -> None:
        """Kill every process of the sandbox user, from outside the command."""
        if self._run_quick(_KILL_ALL, timeout=2.0) is None:
            self._restart()

    def _restart(self) -> None:
        """Kill the container (all its processes) and start it again with fresh tmpfs."""
        self.restarts += 1
        self.fork.lost()
        try:
            self.api.kill(self.id)
        except Exception:
            pass  # already stopped
        self.api.start(self.id)
        self._oom_seen = 0

    # -- OOM detection --------------------------------------------------------------------
    def _oom_count(self) -> int:
        cid = self.id
        for path, key in (
            (f"/sys/fs/cgroup/memory/docker/{cid}/memory.oom_control", "oom_kill"),
            (f"/sys/fs/cgroup/memory/system.slice/docker-{cid}.scope/memory.oom_control", "oom_kill"),
            (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.events", "oom_kill"),
            (f"/sys/fs/cgroup/docker/{cid}/memory.events", "oom_kill"),
        ):
            try:
                with open(path) as f:
                    text = f.read()
            except OSError:
                continue
            return _counter(text, key)
        return 0

    def _oom_happened(self) -> bool:
        count = self._oom_count()
        happened = count > self._oom_seen
        self._oom_seen = count
        return happened

    # -- files ----------------------------------------------------------------------------
    def _put_file(self, rel: str, data: bytes) -> None:
        # docker cp cannot write into tmpfs mounts, so files travel through an exec as the
        # sandbox user: a symlink can only reach what that user can already write inside.
        res = self._exec(["/bin/sh", "-c", _PUT, "put", rel], data, self.limits.timeout_s)
        if res.exit_code == 3:
            raise UnsafePath(f"cannot write {rel!r} in the workdir: it goes through a symlink.")
        if res.status != "ok":
            raise SandboxError(f"could not write {rel!r} in the sandbox: {res.stderr.strip() or res.status}.")

    def _get_file(self, rel: str) -> bytes:
        cap = self.limits.max_file_get_bytes
        exec_id = self.api.exec_create(
            self.id, ["/bin/sh", "-c", _GET, "get", rel, str(cap + 1)],
            stdout=True, stderr=False, user=SANDBOX_USER, workdir=WORKDIR)["Id"]
        sock = self.api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        out = CappedBuffer(cap + 1)
        try:
            limits = self.limits.model_copy(update={"output_kill_bytes": cap + 2})
            saved, self.limits = self.limits, limits
            try:
                self._pump(raw, None, out, CappedBuffer(0), time.monotonic() + self.limits.timeout_s)
            finally:
                self.limits = saved
        finally:
            raw.close()
            sock.close()
        code = self._exit_code(exec_id)
        if code == 3:
            raise UnsafePath(f"cannot read {rel!r} from the workdir: it goes through a symlink.")
        if code != 0:
            raise FileNotFoundError(f"{rel!r} is not a file in the sandbox workdir.")
        if out.total > cap:
            raise SandboxError(f"{rel!r} is larger than {cap} bytes.")
        return out.getvalue()

    # -- lifetime -------------------------------------------------------------------------
    def _reset(self) -> None:
        self.fork.retry()
        server = self.fork.get()
        if server is not None:
            try:
                server.renew()
            except ServerLost:
                server = None
                self.fork.lost()
        if server is not None:
            # kill every process of the sandbox user but the server, then wipe as that user
            res = self._fork_exec(server, ["/bin/sh", "-c", _WIPE], None, 10.0, kill_first=True)
            if res is not None and res.status == "ok":
                return
        if self._run_quick(["/bin/sh", "-c", _RESET], timeout=10.0) != 0:
            self._restart()

    def _close(self) -> None:
        self.fork.close()
        try:
            self.api.remove_container(self.id, force=True, v=True)
        except Exception as err:
            if getattr(err, "status_code", None) not in (404, 409):
                log.warning("turngym: could not remove sandbox container %s: %s", self.id[:12], err)


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0
