"""Asynchronous rollouts with bounded staleness: step k+1's episodes are generated while step k trains.

Contract:

- A background thread produces the batches of steps ``first_step, first_step + 1, ...`` (up
  to ``stop_step``, exclusive) in order by calling ``collect(step)``; the trainer takes them with :meth:`RolloutPrefetcher.get`.
- Batch ``k`` is generated with exactly the weights of version ``max(k - max_staleness,
  first_step)``, where version ``v`` is the model after ``v`` updates (:meth:`publish` hands a
  copy to the producer after each update). Staleness is therefore fixed, never "whatever was
  ready": a run is as reproducible as a synchronous one, and ``max_staleness`` bounds how old
  the behaviour policy can be. ``max_staleness=0`` is the synchronous schedule.
- The producer owns a separate copy of the model (``load_weights`` copies a published state
  into it between batches), so generation never reads weights that an optimizer step is
  changing. The trainer corrects for the older behaviour policy with the importance ratio
  ``pi_theta / pi_rollout`` (PPO's ratio with the rollout engine's logprobs as the old policy).
- An exception in the producer is raised again by the next :meth:`get`; :meth:`close` stops the
  thread after its current batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["RolloutPrefetcher", "PrefetchedBatch", "snapshot"]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's weights (what :meth:`RolloutPrefetcher.publish` takes)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class PrefetchedBatch:
    step: int
    """The training step this batch is for."""
    weights_version: int
    """Updates the behaviour weights had seen (staleness = ``step - weights_version``)."""
    result: Any
    """What ``collect(step)`` returned."""


class RolloutPrefetcher:
    """See the module docstring."""

    def __init__(
        self,
        collect: Callable[[int], Any],
        load_weights: Callable[[dict[str, torch.Tensor]], None],
        initial_state: dict[str, torch.Tensor],
        first_step: int,
        max_staleness: int = 1,
        stop_step: int | None = None,
    ) -> None:
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self._collect, self._load = collect, load_weights
        self.first_step, self.max_staleness, self.stop_step = first_step, max_staleness, stop_step
        self._states: dict[int, dict[str, torch.Tensor]] = {first_step: initial_state}
        self._ready: dict[int, PrefetchedBatch | BaseException] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._produce, name="turngym-rollout-prefetch", daemon=True)
        self._thread.start()

    def version_for(self, step: int) -> int:
        return max(step - self.max_staleness, self.first_step)

    def publish(self, version: int, state: dict[str, torch.Tensor]) -> None:
        """The weights after ``version`` updates (a copy the caller will not modify)."""
        with self._cond:
            self._states[version] = state
            self._cond.notify_all()

    def get(self, step: int) -> PrefetchedBatch:
        """Step ``step``'s batch, waiting for the producer if needed."""
        with self._cond:
            while step not in self._ready:
                if not self._thread.is_alive():
                    raise RuntimeError("the rollout thread stopped before producing step %d" % step)
                self._cond.wait(timeout=1.0)  # wakes on notify; the timeout only re-checks the thread
            item = self._ready.pop(step)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=600)

    def _produce(self) -> None:
        step, loaded = self.first_step, None
        while self.stop_step is None or step < self.stop_step:
            version = self.version_for(step)
            with self._cond:
                while version not in self._states and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                state = self._states[version]
                for old in [v for v in self._states if v < version]:  # no later batch needs them
                    del self._states[old]
            try:
                if loaded != version:
                    self._load(state)
                    loaded = version
                item: PrefetchedBatch | BaseException = PrefetchedBatch(step, version, self._collect(step))
            except BaseException as exc:  # handed to the trainer thread, which raises it
                item = exc
            with self._cond:
                self._ready[step] = item
                self._cond.notify_all()
            if isinstance(item, BaseException):
                return
            step += 1
