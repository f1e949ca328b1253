"""A pool of long-lived prover processes, recycled after N uses or on memory growth.

``with pool.lease() as worker: ...`` hands out an idle worker (starting one if fewer than
``size`` exist, else waiting for one to come back). On return a worker is closed and dropped
when it died, was used ``max_uses`` times, or its resident memory grew by more than
``max_rss_growth`` bytes since it became ready (Lean REPLs grow with every environment they
keep); the next lease starts a fresh one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar

__all__ = ["Worker", "WorkerPool"]


class Worker(Protocol):
    def alive(self) -> bool: ...

    def rss_bytes(self) -> int: ...

    def close(self) -> None: ...


W = TypeVar("W", bound=Worker)


class WorkerPool(Generic[W]):
    def __init__(
        self,
        factory: Callable[[], W],
        size: int = 1,
        max_uses: int = 200,
        max_rss_growth: int | None = 2 << 30,
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.factory, self.size, self.max_uses, self.max_rss_growth = factory, size, max_uses, max_rss_growth
        self._idle: list[W] = []
        self._uses: dict[int, int] = {}
        self._baseline: dict[int, int] = {}
        self._count = 0
        self._cond = threading.Condition()
        self.started = 0
        """How many workers this pool has started (a test and bench observable)."""
        self.recycled = 0

    @contextmanager
    def lease(self) -> Iterator[W]:
        worker = self._acquire()
        healthy = False
        try:
            yield worker
            healthy = True
        finally:
            self._release(worker, healthy)

    def _acquire(self) -> W:
        with self._cond:
            while not self._idle and self._count >= self.size:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            worker = self.factory()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise
        with self._cond:
            self.started += 1
            self._uses[id(worker)] = 0
            self._baseline[id(worker)] = worker.rss_bytes()
        return worker

    def _worn_out(self, worker: W) -> bool:
        if not worker.alive() or self._uses[id(worker)] >= self.max_uses:
            return True
        if self.max_rss_growth is None:
            return False
        return worker.rss_bytes() - self._baseline[id(worker)] > self.max_rss_growth

    def _release(self, worker: W, healthy: bool) -> None:
        with self._cond:
            self._uses[id(worker)] += 1
            retire = not healthy or self._worn_out(worker)
            if retire:
                self._count -= 1
                self.recycled += 1
                self._uses.pop(id(worker), None)
                self._baseline.pop(id(worker), None)
            else:
                self._idle.append(worker)
            self._cond.notify()
        if retire:
            worker.close()

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.close()
