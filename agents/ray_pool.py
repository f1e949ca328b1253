"""Environments in Ray actors (extra ``[ray]``): the :class:`~turngym.agents.env_pool.EnvPool`
contract across processes and machines.

``RayEnvPool("turngym/Sokoban-v0", num_actors=4)`` is a drop-in for
:class:`~turngym.agents.env_pool.ThreadEnvPool`: the same :class:`RolloutEngine` runs with
either, unchanged, and gives the same trajectories for the same seeds.

How it works
------------
- Each of ``num_actors`` Ray actors (:class:`_EnvActor`) owns a set of slots: their
  environments and whatever those hold (sandboxes, provers, browsers) live in the actor's
  process. Inside, an ordinary ``ThreadEnvPool`` steps them, so per-call deadlines and
  environment errors behave exactly as in process.
- A slot is given to the least-loaded actor when it is reset and stays there until it is
  released. Each ``reset``/``step`` sends ONE remote call per actor (its share of the batch)
  and gathers them with ``ray.wait``; results come back in request order.
- Actors are placed with ``scheduling_strategy`` (default ``"SPREAD"``: across nodes; any
  Ray strategy object, e.g. a placement group's, is passed through).
- A dead actor (its process crashed, was killed, or its node went away) ends only its own
  episodes: their results carry ``error`` and the slots it owned are lost (later steps on
  them are errors until they are reset again). Ray restarts the actor (``max_restarts``);
  when Ray will not (restarts used up, killed for good), the pool starts a fresh one. Each
  actor has an *incarnation* id, so a restart between two calls is noticed too (the new
  process has none of the old environments).
- Deadlines: the actor enforces each call's deadline itself; the pool also stops waiting for
  a whole actor after ``timeout x ceil(calls / concurrency) + grace_s`` (an actor stuck
  where its threads cannot reach it), kills it, and starts a fresh one.

Ray is imported only when a pool is made; without it the constructor raises
:class:`RayUnavailable` (one sentence: install ``turngym[ray]``). ``make_env_pool`` picks the
backend by name from :data:`ENV_POOL_BACKENDS` (``"thread"`` in process, the default, or
``"ray"``), so a config switches between them without code changes.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from turngym.agents.env_pool import EnvPool, EnvResult, ResetRequest, StepRequest, ThreadEnvPool

__all__ = [
    "ENV_POOL_BACKENDS",
    "EnvFactory",
    "RayEnvPool",
    "RayUnavailable",
    "make_env_pool",
    "ray_available",
]

log = logging.getLogger(__name__)


class RayUnavailable(RuntimeError):
    """Ray (extra ``[ray]``) is not installed."""


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable("environments in Ray actors need Ray: pip install 'turngym[ray]'") from None
    return ray


@dataclass(frozen=True)
class EnvFactory:
    """A picklable zero-argument environment factory: ``turngym.make(env_id, **kwargs)``."""

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Any:
        from turngym.envs import make

        return make(self.env_id, **self.kwargs)


class _EnvActor:
    """One actor's environments (made into a Ray actor class by :func:`_actor_class`)."""

    def __init__(self, make_env: Callable[[], Any], concurrency: int, step_timeout_s: float,
                 reset_timeout_s: float) -> None:
        self.incarnation = uuid.uuid4().hex  # a restarted actor gets a new one (and no envs)
        self.pool = ThreadEnvPool(make_env, concurrency=concurrency, step_timeout_s=step_timeout_s,
                                  reset_timeout_s=reset_timeout_s)

    def whoami(self) -> str:
        return self.incarnation

    def reset(self, requests: list[ResetRequest]) -> tuple[str, list[EnvResult]]:
        return self.incarnation, self.pool.reset(requests)

    def step(self, requests: list[StepRequest]) -> tuple[str, list[EnvResult]]:
        return self.incarnation, self.pool.step(requests)

    def release(self, slots: list[int]) -> None:
        self.pool.release(slots)

    def close(self) -> None:
        self.pool.close()


_ACTOR_CLASS: Any = None


def _actor_class(ray: Any) -> Any:
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = ray.remote(_EnvActor)
    return _ACTOR_CLASS


@dataclass
class _Actor:
    handle: Any
    incarnation: str | None = None
    """The incarnation its slots were made in (None until its first answer)."""
    slots: set[int] = field(default_factory=set)


class RayEnvPool:
    """Environments in Ray actors; see the module docstring.

    ``env``: a registered env id (made with ``env_kwargs``) or a picklable zero-argument
    factory (cloudpickle takes closures). ``address``: the Ray cluster to join when Ray is
    not initialised yet (``None`` starts a local one, ``"auto"`` joins the running cluster).
    ``actor_options`` go to ``.options()`` of every actor (``num_gpus``, ``resources``,
    ``runtime_env`` ...).
    """

    def __init__(
        self,
        env: str | Callable[[], Any],
        num_actors: int = 2,
        *,
        env_kwargs: dict[str, Any] | None = None,
        concurrency: int = 16,
        step_timeout_s: float = 60.0,
        reset_timeout_s: float = 300.0,
        grace_s: float = 30.0,
        num_cpus_per_actor: float = 1.0,
        scheduling_strategy: Any = "SPREAD",
        max_restarts: int = -1,
        restart_timeout_s: float = 60.0,
        address: str | None = None,
        actor_options: dict[str, Any] | None = None,
    ) -> None:
        if num_actors < 1:
            raise ValueError("a Ray environment pool needs at least one actor")
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self._ray = ray
        self.env_id = env if isinstance(env, str) else ""
        self._make_env = EnvFactory(env, dict(env_kwargs or {})) if isinstance(env, str) else env
        self.concurrency = concurrency
        self.step_timeout_s = step_timeout_s
        self.reset_timeout_s = reset_timeout_s
        self.grace_s = grace_s
        self.restart_timeout_s = restart_timeout_s
        self._options = {"num_cpus": num_cpus_per_actor, "scheduling_strategy": scheduling_strategy,
                         "max_restarts": max_restarts, "max_task_retries": 0, **(actor_options or {})}
        self._actors = [_Actor(self._spawn()) for _ in range(num_actors)]
        self._owner: dict[int, int] = {}  # slot -> actor index
        self._lost: dict[int, str] = {}  # slot -> why its environment is gone
        self.restarts = 0
        """Actors found dead or restarted so far (Ray's restarts and the pool's own)."""
        self._closed = False

    @property
    def actors(self) -> list[Any]:
        """The actor handles, in order (a test may kill one)."""
        return [a.handle for a in self._actors]

    def owner(self, slot: int) -> int | None:
        """Index of the actor that holds ``slot``'s environment, if any."""
        return self._owner.get(slot)

    # -- the protocol -----------------------------------------------------------------------------
    def reset(self, requests: list[ResetRequest]) -> list[EnvResult]:
        for req in requests:
            self._lost.pop(req.slot, None)
            if req.slot not in self._owner:
                index = min(range(len(self._actors)), key=lambda i: len(self._actors[i].slots))
                self._owner[req.slot] = index
                self._actors[index].slots.add(req.slot)
        return self._call("reset", requests, self.reset_timeout_s)

    def step(self, requests: list[StepRequest]) -> list[EnvResult]:
        return self._call("step", requests, self.step_timeout_s)

    def release(self, slots: list[int]) -> None:
        by_actor: dict[int, list[int]] = {}
        for slot in slots:
            self._lost.pop(slot, None)
            index = self._owner.pop(slot, None)
            if index is not None:
                self._actors[index].slots.discard(slot)
                by_actor.setdefault(index, []).append(slot)
        for index, own in by_actor.items():  # fire and forget: an actor runs calls in order
            self._actors[index].handle.release.remote(own)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        refs = [a.handle.close.remote() for a in self._actors]
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=self.grace_s)
        for ref in ready:
            try:
                self._ray.get(ref)
            except self._ray.exceptions.RayError as err:
                log.warning("closing an environment actor failed: %s", err)
        for actor in self._actors:
            self._ray.kill(actor.handle, no_restart=True)
        self._owner.clear()

    def __enter__(self) -> RayEnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batches ----------------------------------------------------------------------------------
    def _call(self, method: str, requests: list[Any], timeout: float) -> list[EnvResult]:
        results: list[EnvResult | None] = [None] * len(requests)
        by_actor: dict[int, list[int]] = {}  # actor -> request positions
        for pos, req in enumerate(requests):
            index = self._owner.get(req.slot)
            if index is None:
                why = self._lost.get(req.slot, f"slot {req.slot} has no environment (reset it first)")
                results[pos] = EnvResult(slot=req.slot, error=why)
            else:
                by_actor.setdefault(index, []).append(pos)
        refs: dict[Any, int] = {}
        for index, positions in by_actor.items():
            batch = [requests[p] for p in positions]
            refs[getattr(self._actors[index].handle, method).remote(batch)] = index
        t0 = time.monotonic()
        limit = max(timeout * math.ceil(max(len(p) for p in by_actor.values()) / max(self.concurrency, 1))
                    + self.grace_s, 0.0) if by_actor else 0.0
        pending = list(refs)
        while pending:
            left = limit - (time.monotonic() - t0)
            if left <= 0:
                break
            ready, pending = self._ray.wait(pending, num_returns=1, timeout=left)
            for ref in ready:
                self._gather(method, refs[ref], ref, by_actor[refs[ref]], requests, results)
        for ref in pending:  # the actor is stuck beyond its own deadlines: replace it
            index = refs[ref]
            why = f"{method}: the environment actor did not answer within {limit:g}s"
            log.warning("environment actor %d %s", index, why.split(": ", 1)[1])
            self._ray.kill(self._actors[index].handle, no_restart=True)
            self._actors[index].handle = self._spawn()
            self._lose(index, why, by_actor[index], requests, results)
        return results  # type: ignore[return-value]

    def _gather(self, method: str, index: int, ref: Any, positions: list[int], requests: list[Any],
                results: list[EnvResult | None]) -> None:
        actor = self._actors[index]
        try:
            incarnation, answers = self._ray.get(ref)
        except self._ray.exceptions.RayError as err:
            why = f"{method}: the environment actor died ({type(err).__name__})"
            log.warning("environment actor %d died in %s: %s", index, method, err)
            self._recover(index)
            self._lose(index, why, positions, requests, results)
            return
        if actor.incarnation is not None and incarnation != actor.incarnation:
            # Restarted between calls: its environments are gone. A reset made its slots anew;
            # a step's slots and any others it held are lost.
            self.restarts += 1
            why = "the environment actor restarted and lost its environments"
            fresh = {requests[p].slot for p in positions} if method == "reset" else set()
            stale = [p for p in positions if requests[p].slot not in fresh]
            self._lose(index, f"{method}: {why}", stale, requests, results)
            if method == "step":
                return
            actor.slots.update(fresh)
            for slot in fresh:
                self._owner[slot] = index
                self._lost.pop(slot, None)
        actor.incarnation = incarnation
        for pos, answer in zip(positions, answers):
            results[pos] = answer
            if answer.error is not None:  # the actor's pool closed it; the slot is dead
                self._forget(answer.slot)

    def _lose(self, index: int, why: str, positions: list[int], requests: list[Any],
              results: list[EnvResult | None]) -> None:
        """End the episodes of actor ``index``: errors for these requests, its other slots lost."""
        for pos in positions:
            results[pos] = EnvResult(slot=requests[pos].slot, error=why)
        actor = self._actors[index]
        for slot in actor.slots:
            self._owner.pop(slot, None)
            self._lost[slot] = why
        for pos in positions:
            self._lost.pop(requests[pos].slot, None)  # answered with the error already
        actor.slots.clear()
        actor.incarnation = None

    def _forget(self, slot: int) -> None:
        index = self._owner.pop(slot, None)
        if index is not None:
            self._actors[index].slots.discard(slot)

    def _recover(self, index: int) -> None:
        """After a failed call: wait for Ray's restart, or start a fresh actor if none comes."""
        self.restarts += 1
        actor = self._actors[index]
        try:
            self._ray.get(actor.handle.whoami.remote(), timeout=self.restart_timeout_s)
            return  # Ray restarted it
        except (self._ray.exceptions.RayError, TimeoutError) as err:
            log.warning("environment actor %d did not come back (%s); starting a fresh one", index,
                        type(err).__name__)
        self._ray.kill(actor.handle, no_restart=True)
        actor.handle = self._spawn()

    def _spawn(self) -> Any:
        cls = _actor_class(self._ray)
        return cls.options(**self._options).remote(self._make_env, self.concurrency, self.step_timeout_s,
                                                   self.reset_timeout_s)


# -- choosing a backend by name ------------------------------------------------------------------

def _thread_pool(env: str | Callable[[], Any], env_kwargs: dict[str, Any], concurrency: int,
                 step_timeout_s: float, reset_timeout_s: float, **_ray_options: Any) -> EnvPool:
    make_env = EnvFactory(env, env_kwargs) if isinstance(env, str) else env
    return ThreadEnvPool(make_env, concurrency=concurrency, step_timeout_s=step_timeout_s,
                         reset_timeout_s=reset_timeout_s)


def _ray_pool(env: str | Callable[[], Any], env_kwargs: dict[str, Any], concurrency: int,
              step_timeout_s: float, reset_timeout_s: float, **ray_options: Any) -> EnvPool:
    return RayEnvPool(env, env_kwargs=env_kwargs, concurrency=concurrency, step_timeout_s=step_timeout_s,
                      reset_timeout_s=reset_timeout_s, **ray_options)


#: Where a run's environments live, by the name a config uses.
ENV_POOL_BACKENDS: dict[str, Callable[..., EnvPool]] = {"thread": _thread_pool, "ray": _ray_pool}


def make_env_pool(backend: str, env: str | Callable[[], Any], rollout: Any, env_kwargs: dict[str, Any] | None = None,
                  **ray_options: Any) -> EnvPool:
    """The pool of ``backend`` (``"thread"`` or ``"ray"``) with the deadlines and concurrency of
    ``rollout`` (a :class:`~turngym.agents.rollout.RolloutConfig`). ``ray_options`` go to
    :class:`RayEnvPool` (``num_actors``, ``num_cpus_per_actor``, ...); the thread pool ignores them."""
    try:
        build = ENV_POOL_BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown rollout backend {backend!r}; choose one of {sorted(ENV_POOL_BACKENDS)}") from None
    return build(env, dict(env_kwargs or {}), rollout.concurrency, rollout.step_timeout_s, rollout.reset_timeout_s,
                 **ray_options)
