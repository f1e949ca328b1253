"""Limits enforced from outside the process, and the recycling pool."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from turngym.sandboxes.provers.base import ProverError
from turngym.sandboxes.provers.lean import LeanRepl
from turngym.sandboxes.provers.pool import WorkerPool
from turngym.sandboxes.provers.process import ProcessLimits, run_limited


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (killed children may linger as zombies
    until init reaps them; those do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_a_request_past_its_deadline_kills_the_whole_process_group():
    # A "REPL" that never answers and has a child of its own.
    repl = LeanRepl(["sh", "-c", "sleep 60 & sleep 60"], ProcessLimits(timeout=0.5, memory_bytes=None))
    pgid = repl.process.pid
    with pytest.raises(ProverError, match="no reply within 0.5 s"):
        repl.request({"cmd": "theorem t : True := trivial"})
    assert not repl.alive()
    # SIGKILL to the group is delivered asynchronously: poll (bounded) until no member runs
    deadline = time.monotonic() + 5.0
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not group_alive(pgid)


def test_a_process_that_dies_is_an_error_not_a_hang():
    repl = LeanRepl(["sh", "-c", "echo boom >&2; exit 3"], ProcessLimits(timeout=5, memory_bytes=None))
    with pytest.raises(ProverError, match="process exited"):
        repl.request({"cmd": "x"})
    repl.close()


def test_memory_limit_applies_to_the_child():
    code = "b = bytearray(800 << 20); print('allocated')"
    result = run_limited([sys.executable, "-c", code], ProcessLimits(timeout=20, memory_bytes=300 << 20))
    assert result.status == "error" and "MemoryError" in result.stderr and "allocated" not in result.stdout
    free = run_limited([sys.executable, "-c", "print('fine')"], ProcessLimits(timeout=20, memory_bytes=300 << 20))
    assert free.status == "ok" and free.stdout == "fine\n"


def test_output_is_capped_while_read():
    result = run_limited(["yes"], ProcessLimits(timeout=10, output_bytes=10_000))
    assert result.status == "killed" and result.truncated and len(result.stdout) == 10_000


class FakeWorker:
    def __init__(self) -> None:
        self.rss, self.closed = 100, False

    def alive(self) -> bool:
        return not self.closed

    def rss_bytes(self) -> int:
        return self.rss

    def close(self) -> None:
        self.closed = True


def test_pool_recycles_after_max_uses():
    pool = WorkerPool(FakeWorker, size=1, max_uses=2, max_rss_growth=None)
    seen = []
    for _ in range(5):
        with pool.lease() as w:
            seen.append(w)
    assert pool.started == 3 and seen[0] is seen[1] and seen[1] is not seen[2]
    assert seen[0].closed and not seen[4].closed


def test_pool_recycles_on_memory_growth_and_on_failure():
    pool = WorkerPool(FakeWorker, size=1, max_uses=100, max_rss_growth=1000)
    with pool.lease() as first:
        first.rss += 5000
    assert first.closed
    with pytest.raises(RuntimeError), pool.lease() as second:
        raise RuntimeError("the worker broke")
    with pool.lease() as third:
        pass
    assert second.closed and third is not second and pool.started == 3 and pool.recycled == 2
