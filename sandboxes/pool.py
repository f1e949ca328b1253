"""``SandboxPool``: warm sandboxes handed out per episode, reset between episodes.

- ``size`` sandboxes are started ahead (concurrently) by ``factory``; the pool never holds more.
- ``checkout(timeout=...)`` hands out a ready sandbox. When none is ready it waits up to
  ``timeout`` seconds (``None``: the pool's ``acquire_timeout``; ``0``: fail fast) and then
  raises :class:`~turngym.sandboxes.errors.PoolExhausted` — that is the backpressure.
- ``checkin(sandbox)`` gives it back. The reset (processes killed, workdir wiped) runs in a
  background thread so the episode that returns it does not wait; after ``max_uses`` episodes,
  or when the reset fails, the sandbox is closed and a fresh one started in its place.
- ``with pool.sandbox() as sb:`` is checkout + checkin. ``close()`` closes every sandbox.

Process-wide pools (one per backend and limits, shared by every environment of a process, such
as the code environment's grading pools) join one registry here rather than each keeping its
own: ``shared_pool(key, factory)`` returns the pool registered under ``key``, made by
``factory()`` on first use or after it was closed; ``close_shared_pools()`` closes and forgets
them all. It runs at interpreter exit (``atexit``) and can be called any time (a test session's
leak check does); a later ``shared_pool`` call then starts a fresh pool.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Protocol, TypeVar

from turngym.sandboxes.base import Sandbox
from turngym.sandboxes.errors import PoolExhausted, SandboxClosed

__all__ = ["SandboxPool", "SharedPool", "close_shared_pools", "shared_pool"]

log = logging.getLogger(__name__)


class SandboxPool:
    """A bounded pool of warm sandboxes (see the module docstring)."""

    def __init__(self, factory: Callable[[], Sandbox], size: int = 4, *, max_uses: int = 50,
                 acquire_timeout: float | None = 60.0, reset_in_background: bool = True) -> None:
        if size < 1:
            raise ValueError("a sandbox pool needs size >= 1.")
        self.factory = factory
        self.size = size
        self.max_uses = max_uses
        self.acquire_timeout = acquire_timeout
        self.reset_in_background = reset_in_background
        self._ready: deque[Sandbox] = deque()
        self._uses: dict[int, int] = {}
        self._out: set[int] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._workers = ThreadPoolExecutor(max_workers=min(size, 8), thread_name_prefix="sandbox-pool")
        self._pending = 0  # sandboxes being started or reset
        started = list(self._workers.map(lambda _: self._new(), range(size)))
        with self._cond:
            self._ready.extend(started)
            self._cond.notify_all()

    def _new(self) -> Sandbox:
        sandbox = self.factory()
        self._uses[id(sandbox)] = 0
        return sandbox

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def available(self) -> int:
        with self._cond:
            return len(self._ready)

    def checkout(self, timeout: float | None = None) -> Sandbox:
        wait = self.acquire_timeout if timeout is None else timeout
        deadline = None if wait is None else time.monotonic() + wait
        with self._cond:
            while not self._ready:
                if self._closed:
                    raise SandboxClosed("the sandbox pool is closed.")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PoolExhausted(
                        f"all {self.size} sandboxes are in use and none came back within {wait:g}s;"
                        " raise the pool size or the wait.")
                self._cond.wait(left)
            sandbox = self._ready.popleft()
            self._out.add(id(sandbox))
            self._uses[id(sandbox)] = self._uses.get(id(sandbox), 0) + 1
            return sandbox

    def checkin(self, sandbox: Sandbox) -> None:
        with self._cond:
            if id(sandbox) not in self._out:
                raise ValueError("this sandbox was not checked out of this pool.")
            self._out.discard(id(sandbox))
            self._pending += 1
        if self.reset_in_background and not self._closed:
            self._workers.submit(self._recycle, sandbox)
        else:
            self._recycle(sandbox)

    def _recycle(self, sandbox: Sandbox) -> None:
        fresh: Sandbox | None = None
        try:
            worn = self._uses.get(id(sandbox), 0) >= self.max_uses or sandbox.closed
            if not worn:
                try:
                    sandbox.reset()
                    fresh = sandbox
                except Exception as err:
                    log.warning("turngym: sandbox reset failed (%s); replacing it", err)
            if fresh is None:
                self._uses.pop(id(sandbox), None)
                sandbox.close()
                if not self._closed:
                    fresh = self._new()
        except Exception as err:
            log.warning("turngym: could not replace a pooled sandbox: %s", err)
        finally:
            with self._cond:
                self._pending -= 1
                if fresh is not None:
                    if self._closed:
                        fresh.close()
                    else:
                        self._ready.append(fresh)
                else:
                    self.size -= 1  # lost one; the pool shrinks rather than spins
                self._cond.notify_all()

    @contextmanager
    def sandbox(self, timeout: float | None = None) -> Iterator[Sandbox]:
        sb = self.checkout(timeout)
        try:
            yield sb
        finally:
            self.checkin(sb)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._workers.shutdown(wait=True)
        with self._cond:
            ready, self._ready = list(self._ready), deque()
        for sb in ready:
            sb.close()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the process-wide registry ------------------------------------------------------------
class SharedPool(Protocol):
    """What the registry needs of a pool: to tell whether it is closed, and to close it."""

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


P = TypeVar("P", bound=SharedPool)

_shared: dict[Hashable, SharedPool] = {}
_shared_lock = threading.Lock()


def shared_pool(key: Hashable, factory: Callable[[], P]) -> P:
    """The process-wide pool registered under ``key``; ``factory()`` makes it on first use, or
    again once it was closed. The pool is closed by :func:`close_shared_pools` (at exit at the
    latest). Callers sharing a key must build the same kind of pool: the key says what it is."""
    with _shared_lock:  # held while the factory runs, so two callers never start two pools
        pool = _shared.get(key)
        if pool is None or pool.closed:
            pool = factory()
            _shared[key] = pool
        return pool  # type: ignore[return-value]


def close_shared_pool(key: Hashable) -> None:
    """Close and forget the pool registered under ``key``, if any (idempotent)."""
    with _shared_lock:
        pool = _shared.pop(key, None)
    if pool is not None:
        pool.close()


@atexit.register
def close_shared_pools() -> None:
    """Close every pool in the registry and forget them (idempotent)."""
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for pool in pools:
        try:
            pool.close()
        except Exception as err:  # one pool failing to close must not keep the others open
            log.warning("turngym: closing a shared pool failed: %s", err)
