"""The process-wide registry of shared sandbox pools: one pool per key, all closed together."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from turngym.sandboxes import (
    LocalSandbox,
    SandboxLimits,
    SandboxPool,
    close_shared_pools,
    shared_pool,
)
from turngym.sandboxes.errors import SandboxClosed

LIMITS = SandboxLimits(timeout_s=10, memory_mb=256, pids=64)


class CountingFactory:
    """Builds one-sandbox pools of real local sandboxes and counts how many it built."""

    def __init__(self) -> None:
        self.pools: list[SandboxPool] = []

    def __call__(self) -> SandboxPool:
        pool = SandboxPool(lambda: LocalSandbox(LIMITS), size=1)
        self.pools.append(pool)
        return pool


@pytest.fixture
def factory():
    made = CountingFactory()
    yield made
    for pool in made.pools:
        pool.close()


def test_same_key_gives_the_same_pool_and_builds_it_once(factory):
    first = shared_pool(("test-registry", "a"), factory)
    again = shared_pool(("test-registry", "a"), factory)
    other = shared_pool(("test-registry", "b"), factory)
    assert first is again and first is not other
    assert len(factory.pools) == 2
    with first.sandbox() as sb:
        assert sb.exec("echo shared").stdout == "shared\n"


def test_close_shared_pools_closes_them_and_a_later_call_starts_fresh(factory):
    pool = shared_pool(("test-registry", "close"), factory)
    with pool.sandbox() as sb:
        workdir = sb.host_workdir
        assert os.path.isdir(workdir)
    close_shared_pools()
    assert pool.closed and not os.path.exists(workdir)  # its sandbox was closed with it
    with pytest.raises(SandboxClosed):
        pool.checkout(timeout=0)
    fresh = shared_pool(("test-registry", "close"), factory)
    assert fresh is not pool and not fresh.closed and len(factory.pools) == 2
    with fresh.sandbox() as sb:
        assert sb.python("print(6 * 7)").stdout == "42\n"
    close_shared_pools()
    close_shared_pools()  # idempotent
    assert fresh.closed


def test_a_pool_closed_by_someone_else_is_replaced(factory):
    pool = shared_pool(("test-registry", "owner-closed"), factory)
    pool.close()
    replacement = shared_pool(("test-registry", "owner-closed"), factory)
    assert replacement is not pool and not replacement.closed


def test_concurrent_first_calls_build_one_pool(factory):
    barrier = threading.Barrier(4)
    got: list[SandboxPool] = []

    def take() -> None:
        barrier.wait()
        got.append(shared_pool(("test-registry", "race"), factory))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(factory.pools) == 1 and all(p is factory.pools[0] for p in got)


def test_the_code_environments_grading_pools_join_the_registry():
    from turngym.envs.code.env import grading_pool

    pool = grading_pool("local", LIMITS, size=1)
    assert grading_pool("local", LIMITS, size=1) is pool
    assert grading_pool("local", SandboxLimits(timeout_s=5), size=1) is not pool  # other limits, other pool
    close_shared_pools()
    assert pool.closed
    assert grading_pool("local", LIMITS, size=1) is not pool
    close_shared_pools()


def test_shared_pools_are_closed_at_interpreter_exit():
    """A process that never closes its shared pool has it closed at exit (atexit)."""
    script = textwrap.dedent("""
        import atexit

        def report():  # registered first, so it runs after turngym's exit handlers (LIFO)
            print("closed at exit:", pool.closed, [s.closed for s in sandboxes], flush=True)

        atexit.register(report)
        from turngym.sandboxes import LocalSandbox, SandboxPool, shared_pool

        sandboxes = []

        def start():
            sandboxes.append(LocalSandbox())
            return sandboxes[-1]

        pool = shared_pool("exit-test", lambda: SandboxPool(start, size=2))
        with pool.sandbox() as sb:
            print(sb.exec("echo running").stdout.strip(), flush=True)
        print("open before exit:", pool.closed, [s.closed for s in sandboxes], flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "running",
        "open before exit: False [False, False]",
        "closed at exit: True [True, True]",
    ]
