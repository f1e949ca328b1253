"""No leaked containers: label every container with its run, reap dead runs, clean up at exit.

Every container turngym starts carries :func:`run_labels`:

- ``turngym.sandbox=1`` (what ``turngym sandbox prune`` and the tests look for),
- ``turngym.run=<run id>``, ``turngym.host``, ``turngym.boot`` (the kernel boot id),
  ``turngym.pid`` and ``turngym.pidstart`` (the owner process and its start time, so a reused
  pid is not mistaken for the owner).

:func:`reap_stale` removes containers whose owner is gone (another boot, or the pid is dead
or now a different process) — it runs once per process when the first DockerSandbox starts,
which cleans up after a crashed (SIGKILLed) run. :func:`install_exit_cleanup` removes this
run's containers at interpreter exit and on SIGTERM/SIGINT (then chains to the previous
handler). Containers of other live runs, or of other hosts sharing the daemon, are never touched.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
import uuid
from functools import lru_cache

__all__ = [
    "LABEL",
    "run_id",
    "run_labels",
    "owner_alive",
    "reap_stale",
    "remove_run",
    "prune",
    "install_exit_cleanup",
    "ensure_reaped",
]

log = logging.getLogger(__name__)
LABEL = "turngym.sandbox"


@lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def _pid_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot ("" if it does not exist)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


_RUN_ID: dict[int, str] = {}


def run_id() -> str:
    """This process's run id (a new one after fork)."""
    pid = os.getpid()
    if pid not in _RUN_ID:
        _RUN_ID[pid] = f"{pid}-{uuid.uuid4().hex[:8]}"
    return _RUN_ID[pid]


def run_labels() -> dict[str, str]:
    pid = os.getpid()
    return {
        LABEL: "1",
        "turngym.run": run_id(),
        "turngym.host": socket.gethostname(),
        "turngym.boot": _boot_id(),
        "turngym.pid": str(pid),
        "turngym.pidstart": _pid_start(pid),
    }


def owner_alive(labels: dict[str, str]) -> bool:
    """Whether the process that started a container (per its labels) still runs.

    A container from another host is assumed alive (we cannot check it).
    """
    if labels.get("turngym.host") != socket.gethostname():
        return True
    if labels.get("turngym.boot") != _boot_id():
        return False
    try:
        pid = int(labels.get("turngym.pid", ""))
    except ValueError:
        return False
    start = _pid_start(pid)
    return bool(start) and start == labels.get("turngym.pidstart")


def _remove(container) -> bool:
    try:
        container.remove(force=True, v=True)
        return True
    except Exception as err:  # already gone, or the daemon is busy removing it
        if getattr(err, "status_code", None) in (404, 409):
            return False
        log.warning("turngym: could not remove sandbox container %s: %s", container.short_id, err)
        return False


def reap_stale(client) -> int:
    """Remove containers of runs whose owner process is gone; returns how many."""
    n = 0
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        if c.labels.get("turngym.run") != run_id() and not owner_alive(c.labels):
            n += _remove(c)
    if n:
        log.info("turngym: removed %d sandbox container(s) left by dead runs", n)
    return n


def remove_run(client, run: str | None = None) -> int:
    """Remove every container of ``run`` (default: this run)."""
    label = f"turngym.run={run or run_id()}"
    return sum(_remove(c) for c in client.containers.list(all=True, filters={"label": label}))


def prune(client, everything: bool = False) -> int:
    """``turngym sandbox prune``: remove dead runs' containers (or all turngym containers)."""
    if not everything:
        return reap_stale(client)
    return sum(_remove(c) for c in client.containers.list(all=True, filters={"label": LABEL}))


_installed: set[int] = set()
_install_lock = threading.Lock()


def install_exit_cleanup(client) -> None:
    """Remove this run's containers at exit and on SIGTERM/SIGINT (once per process)."""
    with _install_lock:
        if os.getpid() in _installed:
            return
        _installed.add(os.getpid())
    owner = os.getpid()

    def cleanup() -> None:
        if os.getpid() == owner:  # a forked child must not remove its parent's containers
            try:
                remove_run(client)
            except Exception as err:
                log.warning("turngym: sandbox cleanup at exit failed: %s", err)

    atexit.register(cleanup)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be installed from the main thread
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            cleanup()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_IGN:
                return
            else:  # default action: die of the signal, as the process would have
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)


def ensure_reaped(client) -> None:
    """Once per process: reap dead runs' containers and install the exit cleanup."""
    if os.getpid() in _installed:
        return
    reap_stale(client)
    install_exit_cleanup(client)
