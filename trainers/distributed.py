"""The trainer's view of its process group: one plain process, or many through ``accelerate``.

Contract (what :class:`~turngym.trainers.trainer.Trainer` relies on):

- ``Distributed.create(mixed_precision)`` returns :class:`SingleProcess` when the run is one
  process in full precision (the CPU path: plain torch, nothing wrapped, bit-identical to a
  run without this module), and :class:`AccelerateGroup` when it was started by
  ``accelerate launch`` / ``torchrun`` with more than one process or asks for bf16/fp16.
- Every rank rolls out its own share of the step's tasks (whole groups, so group-relative
  estimators need nothing from other ranks) and trains on its own rows. The gradient of a
  step is the gradient of the loss over *all* ranks' rows: each rank weights its micro-batches
  by its share of the global token (or row) count, and :meth:`backward_scale` undoes the
  averaging DDP/FSDP apply to gradients. Gradients are synchronised once per optimizer step
  (:meth:`no_sync` around the other micro-batches), so micro-batching is gradient
  accumulation at no extra communication.
- Collective calls (:meth:`sum`, :meth:`max`, :meth:`mean_metrics`, :meth:`wait`) must be
  reached by every rank the same number of times; the trainer keeps its per-rank control flow
  identical (a rank with no rows still runs one zero-weight micro-batch).
- Rank 0 (:attr:`is_main`) evaluates, logs and writes checkpoints; :meth:`unwrap` gives the
  bare model (for generation and ``save_pretrained``).

Launch (``examples/accelerate/fsdp.yaml`` is an FSDP ``FULL_SHARD`` config, the ZeRO-3
equivalent; DeepSpeed is refused, see :class:`AccelerateGroup`)::

    accelerate launch --config_file examples/accelerate/fsdp.yaml -m turngym.cli train CONFIG
    torchrun --nproc_per_node 2 -m turngym.cli train CONFIG      # DDP; on CPUs it uses gloo
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["Distributed", "SingleProcess", "AccelerateGroup", "launched_world_size"]


def launched_world_size() -> int:
    """Processes in the launch (``WORLD_SIZE`` set by torchrun / accelerate launch; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Distributed:
    """Interface; see the module docstring."""

    world_size: int = 1
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def create(mixed_precision: str = "no", device: torch.device | None = None) -> Distributed:
        if launched_world_size() > 1 or mixed_precision != "no":
            return AccelerateGroup(mixed_precision, cpu=device is not None and device.type == "cpu")
        return SingleProcess()

    # Overridden by the process-group implementation.
    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        return model, optimizer

    def unwrap(self, model: Any) -> torch.nn.Module:
        return model

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def backward_scale(self) -> float:
        return 1.0

    def no_sync(self, model: Any) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def clip_grad_norm(self, model: Any, max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_norm))

    def sum(self, value: float) -> float:
        return value

    def max(self, value: float) -> float:
        return value

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        return [value]

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    def model_state(self, model: Any) -> dict[str, torch.Tensor]:
        return self.unwrap(model).state_dict()

    def wait(self) -> None:
        pass

    def close(self) -> None:
        """End the process group (every rank, once, at the end of the process's training)."""

    def shard(self, items: list[Any]) -> list[Any]:
        """This rank's share of a list that every rank holds in full (round-robin)."""
        return items[self.rank :: self.world_size]


class SingleProcess(Distributed):
    """One process, full precision: every method is the plain-torch identity."""


class AccelerateGroup(Distributed):
    """Several processes (DDP or FSDP, as ``accelerate`` was configured) and/or mixed
    precision, through :class:`accelerate.Accelerator`. A DeepSpeed launch is refused."""

    def __init__(self, mixed_precision: str = "no", cpu: bool = False) -> None:
        from accelerate import Accelerator

        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
            raise ValueError("DeepSpeed is not supported: its engine owns the gradient-accumulation boundary, and "
                             "turngym's micro-batches vary per step; use FSDP (examples/accelerate/fsdp.yaml)")
        # "no" leaves the choice to the launcher's config (accelerate launch --mixed_precision)
        self.accelerator = Accelerator(mixed_precision=None if mixed_precision == "no" else mixed_precision, cpu=cpu)
        self.world_size = self.accelerator.num_processes
        self.rank = self.accelerator.process_index

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        return self.accelerator.prepare(model, optimizer)

    def unwrap(self, model: Any) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model, keep_fp32_wrapper=True)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def backward_scale(self) -> float:
        # DDP, FSDP and ZeRO average gradients over ranks; each rank's loss is already its share
        # of the global sum, so the average must be turned back into that sum.
        return float(self.world_size)

    def no_sync(self, model: Any) -> contextlib.AbstractContextManager:
        return self.accelerator.no_sync(model) if self.world_size > 1 else contextlib.nullcontext()

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.accelerator.autocast()

    def clip_grad_norm(self, model: Any, max_norm: float) -> float:
        return float(self.accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_norm))

    def _reduce(self, value: float, op: str) -> float:
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
        return float(tensor.item())

    def sum(self, value: float) -> float:
        return self._reduce(value, "SUM")

    def max(self, value: float) -> float:
        return self._reduce(value, "MAX")

    def all_gather(self, value: Any) -> list[Any]:
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each key's mean over the ranks that reported it (ranks may report different keys)."""
        if self.world_size == 1:
            return metrics
        gathered = self.all_gather(metrics)
        keys = dict.fromkeys(k for m in gathered for k in m)
        return {k: sum(m[k] for m in gathered if k in m) / sum(1 for m in gathered if k in m) for k in keys}

    def model_state(self, model: Any) -> dict[str, torch.Tensor]:
        return self.accelerator.get_state_dict(model)  # gathers FSDP / ZeRO-3 shards

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    def close(self) -> None:
        # An explicit teardown: a process that exits with the group alive can abort in the
        # communication library's destructor ("terminate called without an active exception").
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            self.wait()
            dist.destroy_process_group()


@contextlib.contextmanager
def generation_context(dist: Distributed, model: Any) -> Iterator[None]:
    """Full parameters on every rank while the in-process policy generates (FSDP shards them).

    DDP and single-process models are whole already. For large sharded models, generate with
    vLLM engines instead (``docs/scaling.md``)."""
    if isinstance(dist, AccelerateGroup) and str(dist.accelerator.distributed_type).endswith("FSDP"):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(model, writeback=False, recurse=True):
            yield
    else:
        yield
