"""Environment pools: where the rollout engine's environments live and step.

The contract (:class:`EnvPool`)
-------------------------------
A pool owns one environment per episode *slot* (an int the engine picks). Every method takes
a batch and returns one result per request, in order, and never raises because of an
environment: an environment that raises, or takes longer than its deadline, gives a result
with ``error`` set, and its slot is dead from then on (the pool closes that environment when
it can). Results carry only JSON-safe data, so a pool may live in other processes or on other
machines (a Ray actor pool implements the same four methods).

``reset(requests: list[ResetRequest]) -> list[EnvResult]``
    Make the slot's environment if needed and reset it to the task with the seed. The result
    also carries the environment's ``instructions`` and tool schemas (what the agent's system
    prompt needs).
``step(requests: list[StepRequest]) -> list[EnvResult]``
    Step each slot's environment with the action text, concurrently.
``release(slots)``
    Close the environments of finished episodes (frees sandboxes early).
``close()``
    Close everything; the pool cannot be used afterwards.

An in-process pool also offers ``env(slot)``: the slot's environment itself, for policies
that read the true state (scripted experts; see ``EpisodeView``). A pool in other processes
has no such method.

:class:`ThreadEnvPool` is the in-process implementation: environments step in worker
threads (sandboxes, provers and browsers wait on I/O, so threads overlap them). Deadlines are
enforced from outside: the engine stops waiting and the slot is marked dead; a thread cannot
be killed, so the stuck worker is retired (a daemon thread, it cannot hold the interpreter at
exit) and a fresh worker takes its place, and the environment is closed once its call returns.
Each batch is drained by at most ``concurrency`` jobs (not one job per call). While calls are
fast (under :data:`FAST_CALL_S`, CPU-bound work such as a grid puzzle) one job drains the
batch — a single thread hand-off, deadlines still watched — and the others join as soon as a
call is seen to be slow (or from the start when the last batch's calls were). ``concurrency=0`` steps in the caller's thread: the fastest for
pure-Python, CPU-bound environments (grid puzzles), where threads only add hand-offs under the
GIL; a hung call cannot be interrupted then, but one that overran its deadline still counts as
an error.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from turngym.envs.tasks import Task

__all__ = ["EnvPool", "EnvResult", "ResetRequest", "StepRequest", "ThreadEnvPool"]

log = logging.getLogger(__name__)

#: Calls faster than this (seconds) are CPU-bound work best run one after another by a single
#: worker; slower ones (waiting on a sandbox, a prover, a browser) are spread over workers.
FAST_CALL_S = 0.002
#: Most distinct tool sets whose schema lists a pool keeps (see ``ThreadEnvPool._schemas``).
_SCHEMA_LISTS = 64


@dataclass
class ResetRequest:
    slot: int
    task: str | Task
    seed: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """More reset options (``tool_call_style``: the syntax the agent's model writes)."""


@dataclass
class StepRequest:
    slot: int
    action: str


@dataclass
class EnvResult:
    """What one reset or step gave (``reward``/``terminated``/``truncated`` are for steps)."""

    slot: int
    observation: str = ""
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Why the environment failed (it raised, or missed its deadline); None when it did not."""
    seconds: float = 0.0
    """Wall time of the call inside the environment."""
    instructions: str = ""
    """The environment's system prompt (reset only)."""
    tools: list[dict[str, Any]] = field(default_factory=list)
    """The environment's tool schemas (reset only). Read-only: a pool may give every episode
    of an environment family the same list."""


@runtime_checkable
class EnvPool(Protocol):
    """Owns one environment per slot and resets/steps them in batches; see the module docstring."""

    def reset(self, requests: list[ResetRequest]) -> list[EnvResult]: ...

    def step(self, requests: list[StepRequest]) -> list[EnvResult]: ...

    def release(self, slots: list[int]) -> None: ...

    def close(self) -> None: ...


class _Workers:
    """Daemon worker threads behind a queue; a worker stuck past a deadline can be replaced."""

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._retired: set[threading.Thread] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._name = name
        self._spawned = 0
        for _ in range(count):
            self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            self._spawned += 1
            thread = threading.Thread(target=self._loop, name=f"{self._name}-{self._spawned}", daemon=True)
            self._threads.add(thread)
        thread.start()

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            job = self._queue.get()
            if job is None:
                return
            job()  # jobs catch their own errors
            with self._lock:
                if me in self._retired:
                    self._retired.discard(me)
                    self._threads.discard(me)
                    return

    def submit(self, job: Callable[[], None]) -> None:
        self._queue.put(job)

    def replace(self, thread: threading.Thread) -> None:
        """Retire ``thread`` (stuck in a call) once its job ends, and start a fresh worker now."""
        with self._lock:
            self._retired.add(thread)
        self._spawn()

    def shutdown(self) -> None:
        with self._lock:
            alive = len(self._threads) - len(self._retired)
        for _ in range(alive):
            self._queue.put(None)


class _Batch:
    """One reset/step batch: calls drained by up to ``concurrency`` workers, deadlines per call."""

    def __init__(self, calls: list[tuple[int, Callable[[_Batch, int], EnvResult]]]) -> None:
        self.calls = calls
        n = len(calls)
        self.cond = threading.Condition()
        self.next = 0
        self.settled = 0  # calls with an outcome (returned, raised or expired)
        self.started: list[tuple[float, threading.Thread] | None] = [None] * n
        self.outcome: list[tuple[EnvResult | None, BaseException | None, float] | None] = [None] * n
        self.expired: dict[int, Any] = {}  # call index -> the abandoned env (None if it had none)

    def drain(self) -> None:
        """Run calls until none are left (a worker's job; several run at once)."""
        while True:
            with self.cond:
                if self.next >= len(self.calls):
                    return
                i = self.next
                self.next += 1
                t0 = time.monotonic()
                self.started[i] = (t0, threading.current_thread())
            result, error = None, None
            try:
                result = self.calls[i][1](self, i)
            except BaseException as err:  # noqa: BLE001 - an env failure is a result, not a crash
                error = err
            seconds = time.monotonic() - t0
            with self.cond:
                late = i in self.expired
                if not late:
                    self.outcome[i] = (result, error, seconds)
                    self.settled += 1
                    if self.settled == len(self.calls):
                        self.cond.notify_all()
                abandoned = self.expired.get(i)
            if late and abandoned is not None:  # nobody waits for it; close what it left behind
                _close_quietly(abandoned)


class ThreadEnvPool:
    """In-process environments stepped by a pool of threads; see the module docstring.

    ``make_env`` builds one environment (called in a worker thread, once per slot). Gymnasium
    wrappers are looked through (``env.unwrapped``) for ``instructions`` and ``tools``.
    """

    def __init__(
        self,
        make_env: Callable[[], Any],
        concurrency: int = 16,
        step_timeout_s: float = 60.0,
        reset_timeout_s: float = 300.0,
    ) -> None:
        if concurrency < 0:
            raise ValueError("concurrency must be 0 (step in the caller's thread) or more")
        self._make_env = make_env
        self._envs: dict[int, Any] = {}
        self._schema_lists: dict[tuple[int, ...], tuple[list[Any], list[dict[str, Any]]]] = {}
        self._envs_lock = threading.Lock()
        self.concurrency = concurrency
        self._mean_call_s: dict[str, float] = {}  # "reset"/"step" -> mean call time of the last batch
        self._workers = _Workers(concurrency, "turngym-env")
        self.step_timeout_s = step_timeout_s
        self.reset_timeout_s = reset_timeout_s
        self._closed = False

    # -- the protocol ---------------------------------------------------------------------------
    def reset(self, requests: list[ResetRequest]) -> list[EnvResult]:
        return self._run([(r.slot, self._reset_call(r)) for r in requests], self.reset_timeout_s, "reset")

    def step(self, requests: list[StepRequest]) -> list[EnvResult]:
        return self._run([(r.slot, self._step_call(r)) for r in requests], self.step_timeout_s, "step")

    def release(self, slots: list[int]) -> None:
        for slot in slots:
            with self._envs_lock:
                env = self._envs.pop(slot, None)
            if env is not None:
                _close_quietly(env)

    def env(self, slot: int) -> Any:
        """The slot's environment, unwrapped, or None when the slot has none (never made, released,
        or abandoned past a deadline). For reading its state between calls, never for stepping it."""
        with self._envs_lock:
            env = self._envs.get(slot)
        return None if env is None else env.unwrapped

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._envs_lock:
            slots = list(self._envs)
        self.release(slots)
        self._workers.shutdown()

    def __enter__(self) -> ThreadEnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls run in worker threads ------------------------------------------------------------------
    def _reset_call(self, req: ResetRequest) -> Callable[[_Batch, int], EnvResult]:
        def call(batch: _Batch, index: int) -> EnvResult:
            with self._envs_lock:
                env = self._envs.get(req.slot)
            if env is None:
                env = self._make_env()
                with self._envs_lock:  # _expire marks the call before it looks for the env
                    wanted = index not in batch.expired
                    if wanted:
                        self._envs[req.slot] = env
                if not wanted:
                    _close_quietly(env)
                    raise TimeoutError("made the environment after the reset deadline")
            obs, info = env.reset(seed=req.seed, options={**req.options, "task": req.task})
            base = env.unwrapped
            return EnvResult(slot=req.slot, observation=obs, info=info,
                             instructions=getattr(base, "instructions", ""),
                             tools=self._schemas(getattr(base, "tools", [])))

        return call

    def _schemas(self, tools: list[Any]) -> list[dict[str, Any]]:
        """The schemas of ``tools``: one list per set of Tool objects, shared by every reset that
        has them. Environments are made per episode but a family's share their Tools, and
        ``Tool.schema()`` decodes a fresh copy each call; sharing the list also lets the agent
        render it once (``EnvResult.tools`` is read-only)."""
        key = tuple(map(id, tools))
        hit = self._schema_lists.get(key)
        if hit is None:
            if len(self._schema_lists) >= _SCHEMA_LISTS:  # tools made per environment: no reuse
                self._schema_lists.clear()
            # the entry holds the Tools, so their ids name them for as long as it lives
            hit = self._schema_lists[key] = (list(tools), [t.schema() for t in tools])
        return hit[1]

    def _step_call(self, req: StepRequest) -> Callable[[_Batch, int], EnvResult]:
        def call(batch: _Batch, index: int) -> EnvResult:
            with self._envs_lock:
                env = self._envs.get(req.slot)
            if env is None:
                raise RuntimeError(f"slot {req.slot} has no environment (reset it first)")
            obs, reward, terminated, truncated, info = env.step(req.action)
            return EnvResult(slot=req.slot, observation=obs, reward=float(reward),
                             terminated=bool(terminated), truncated=bool(truncated), info=info)

        return call

    # -- waiting with deadlines -----------------------------------------------------------------------
    def _run(self, calls: list[tuple[int, Callable[[_Batch, int], EnvResult]]], timeout: float, what: str) -> list[EnvResult]:
        batch = _Batch(calls)
        if self.concurrency == 0:
            return self._run_inline(batch, timeout, what)
        # Drainers, not one job per call. Fast calls (a grid puzzle's step) get one drainer:
        # a single thread hand-off per batch and no GIL convoy, with deadlines still watched
        # from here. Slow calls (sandboxes, browsers: I/O) get up to `concurrency` drainers:
        # from the start when the last batch was slow, else as soon as a call is seen to be.
        full = min(self.concurrency, len(calls))
        last = self._mean_call_s.get(what)
        drainers = full if last is not None and last >= FAST_CALL_S else 1
        for _ in range(drainers):
            self._workers.submit(batch.drain)
        with batch.cond:
            while batch.settled < len(calls):
                now = time.monotonic()
                running = [i for i, st in enumerate(batch.started)
                           if st is not None and batch.outcome[i] is None and i not in batch.expired]
                for i in running:
                    if now - batch.started[i][0] > timeout:  # type: ignore[index]
                        self._expire(batch, i, timeout, what)
                if batch.settled == len(calls):
                    break
                if drainers < full and batch.next < len(calls) and any(
                        now - batch.started[i][0] > FAST_CALL_S for i in running):  # type: ignore[index]
                    for _ in range(full - drainers):
                        self._workers.submit(batch.drain)
                    drainers = full
                deadlines = [batch.started[i][0] + timeout for i in running if i not in batch.expired]  # type: ignore[index]
                wake = (min(deadlines) if deadlines else now + timeout) - now
                if drainers < full:
                    wake = min(wake, FAST_CALL_S)
                batch.cond.wait(timeout=max(wake, 0.0) + 1e-4)
        done = [o[2] for i, o in enumerate(batch.outcome) if o is not None and i not in batch.expired]
        self._mean_call_s[what] = sum(done) / len(done) if done else timeout
        return [self._result(batch, i, what) for i in range(len(calls))]

    def _run_inline(self, batch: _Batch, timeout: float, what: str) -> list[EnvResult]:
        """Every call in the caller's thread (``concurrency=0``), one after another, without the
        workers' locks and bookkeeping (a CPU-bound step takes microseconds): nothing can
        interrupt a hung call, but one that overran its deadline still ends its episode as an error."""
        for i, (_, call) in enumerate(batch.calls):
            t0 = time.monotonic()
            try:
                result, error = call(batch, i), None
            except BaseException as err:  # noqa: BLE001 - an env failure is a result, not a crash
                result, error = None, err
            batch.outcome[i] = (result, error, time.monotonic() - t0)
        results = []
        for i in range(len(batch.calls)):
            result = self._result(batch, i, what)
            if result.error is None and result.seconds > timeout:
                log.warning("environment in slot %d exceeded its %s deadline of %.3gs", result.slot, what, timeout)
                self.release([result.slot])
                result = EnvResult(slot=result.slot, error=f"{what} exceeded its deadline of {timeout:g}s",
                                   seconds=result.seconds)
            results.append(result)
        return results

    def _result(self, batch: _Batch, i: int, what: str) -> EnvResult:
        slot = batch.calls[i][0]
        outcome = batch.outcome[i]
        assert outcome is not None
        result, err, seconds = outcome
        if err is None and result is not None:
            result.seconds = seconds
            return result
        if i in batch.expired:
            return EnvResult(slot=slot, error=f"{what} exceeded its deadline of {seconds:g}s", seconds=seconds)
        log.warning("environment in slot %d raised in %s: %s: %s", slot, what, type(err).__name__, err)
        self.release([slot])
        return EnvResult(slot=slot, error=f"{what} raised {type(err).__name__}: {err}", seconds=seconds)

    def _expire(self, batch: _Batch, i: int, timeout: float, what: str) -> None:
        """Give up on call ``i`` (called holding ``batch.cond``)."""
        slot = batch.calls[i][0]
        log.warning("environment in slot %d exceeded its %s deadline of %.3gs", slot, what, timeout)
        batch.expired[i] = None  # first, so a reset still making its env sees it (see _reset_call)
        with self._envs_lock:
            env = self._envs.pop(slot, None)
        batch.expired[i] = env  # the stuck call closes it when (if) it returns
        batch.outcome[i] = (None, None, timeout)
        batch.settled += 1
        self._workers.replace(batch.started[i][1])  # type: ignore[index]
        self._workers.submit(batch.drain)  # the stuck worker's share of the batch goes on


def _close_quietly(env: Any) -> None:
    try:
        env.close()
    except Exception as err:  # closing must not stop the batch; the leak is logged
        log.warning("closing an environment failed: %s: %s", type(err).__name__, err)
