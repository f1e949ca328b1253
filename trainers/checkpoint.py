"""Checkpoints: everything needed to continue a run exactly.

A checkpoint is a folder ``step-000123/`` holding the model weights (or only the LoRA adapters
when the model is a peft model), the optimizer state, the RNG states (Python, NumPy, torch),
the trainer state (step, data cursor, metric history) and the config (``config.json``). It is written into a
temporary folder and renamed into place, so a run killed mid-write never leaves a half
checkpoint; ``latest`` names the newest complete one.

Under a multi-process launch every rank calls :func:`save_checkpoint` with the same arguments
(plus its ``rank``, the ``world_size`` and a ``barrier``): each rank writes its own optimizer and
RNG state (``state-rank{r}.pt``; sharded optimizers hold different shards), rank 0 writes the
weights (``model_state``: the full state dict, gathered from FSDP / ZeRO-3 shards) and renames
the folder into place once every rank has written.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointMismatchError", "policy_card", "save_checkpoint", "load_checkpoint", "load_weights", "load_training_state",
    "check_world_size", "latest_checkpoint", "prepare_run_dir", "rng_state", "set_rng_state",
]


class CheckpointMismatchError(ValueError):
    """A checkpoint that this launch cannot continue (written by another number of processes,
    or for a model of another shape)."""


#: Rollout settings that shape a training run, not how one episode is decoded.
_RUN_ONLY = frozenset({"group_size", "seed", "progress", "concurrency"})


def policy_card(config: Any = None) -> dict[str, Any]:
    """The policy card of a checkpoint written under ``config`` (a ``TrainConfig``): the rollout
    settings of training's evaluation (its temperature is ``run.eval_temperature``), its seed
    and environment. Without a config: only the format, which still marks the tokenizer as
    the one the model trained with."""
    card: dict[str, Any] = {"format": 1}
    if config is None:
        return card
    from turngym.agents.rollout import RolloutConfig

    rollout = config.rollout.model_dump(mode="json", include=set(RolloutConfig.model_fields) - _RUN_ONLY)
    rollout["temperature"] = config.run.eval_temperature
    card.update(rollout=rollout, seed=config.run.seed,
                env={"id": config.env.id, "kwargs": config.env.kwargs, "split": config.env.eval_split})
    return card


def rng_state(np_rng: np.random.Generator | None = None) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy_global": np.random.get_state(),
        "numpy": np_rng.bit_generator.state if np_rng is not None else None,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any], np_rng: np.random.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy_global"])
    if np_rng is not None and state.get("numpy") is not None:
        np_rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    np_rng: np.random.Generator | None = None,
    tokenizer: Any = None,
    keep: int = 3,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
    config: Any = None,
) -> Path:
    """Write checkpoint ``step`` atomically (see the module docstring); ``config`` (the run's
    ``TrainConfig``) goes into ``config.json`` and the policy card."""
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    final = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f".tmp-step-{step:06d}"
    barrier = barrier or (lambda: None)
    if rank == 0:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state(np_rng)}, tmp / _state_name(rank, world_size))
    barrier()
    if rank == 0:
        _write_model(tmp, model, tokenizer, model_state, policy_card(config))
        if config is not None:
            (tmp / "config.json").write_text(config.model_dump_json(indent=2))
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "world_size": world_size, **trainer_state},
                                                           default=float))
    if rank != 0:
        barrier()
        return final
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    latest_tmp = ckpt_root / ".latest.tmp"
    latest_tmp.write_text(final.name)
    latest_tmp.replace(ckpt_root / "latest")
    old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
    for stale in old[:-keep] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final


def _state_name(rank: int, world_size: int) -> str:
    return "state.pt" if world_size == 1 else f"state-rank{rank}.pt"


def _write_model(folder: Path, model: torch.nn.Module, tokenizer: Any, model_state: dict[str, torch.Tensor] | None,
                 card: dict[str, Any]) -> None:
    from turngym.agents.models import POLICY_CARD

    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder / "model", state_dict=model_state)  # a peft model saves only its adapters
    else:
        torch.save(model_state if model_state is not None else model.state_dict(), folder / "model.pt")
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(folder / "model")
    if (folder / "model").is_dir():
        (folder / "model" / POLICY_CARD).write_text(json.dumps(card, indent=2))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if path.is_dir() else None


#: What a run writes into its folder; a run that never checkpointed leaves only these behind.
RUN_ARTIFACTS = ("checkpoints", "metrics.jsonl", "tensorboard", "eval", "samples", "curves.png", "summary.json",
                 "config.yaml")


def prepare_run_dir(run_dir: str | Path, resume: bool, main: bool = True) -> tuple[bool, str]:
    """Whether a run in ``run_dir`` continues from a checkpoint, and a note for the user (or "").

    - A checkpoint, ``resume``: continue from it (the metrics logger then forgets what was
      logged after its step: ``MetricsLogger(resume_step=...)``).
    - A checkpoint, no ``resume``: :class:`FileExistsError` (nothing is overwritten).
    - No checkpoint (a run killed before its first, or none at all): start afresh, removing what
      an earlier attempt left (:data:`RUN_ARTIFACTS` only, never other files), and say so when
      there was something or ``resume`` was asked for.

    Under a multi-process launch every rank calls it for the decision; only the ``main`` one
    removes files.
    """
    run_dir = Path(run_dir)
    if latest_checkpoint(run_dir) is not None:
        if not resume:
            raise FileExistsError(f"{run_dir} already holds a run: continue it with --resume, or choose another --out")
        return True, ""
    left = [run_dir / name for name in RUN_ARTIFACTS if (run_dir / name).exists()]
    for path in left if main else []:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if left:
        return False, f"{run_dir} holds no checkpoint (a run stopped before its first): starting it afresh"
    return False, f"{run_dir} holds no checkpoint to resume from: starting afresh" if resume else ""


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    np_rng: np.random.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Restore model weights, optimizer and RNG states in place; returns the trainer state."""
    check_world_size(path, rank, world_size)
    load_weights(path, model)
    return load_training_state(path, optimizer, np_rng, rank, world_size)


def check_world_size(path: str | Path, rank: int = 0, world_size: int = 1) -> None:
    """Raise :class:`CheckpointMismatchError` unless this rank has a state file in ``path``."""
    path = Path(path)
    if not (path / _state_name(rank, world_size)).is_file():
        saved = json.loads((path / "trainer_state.json").read_text()).get("world_size", 1)
        raise CheckpointMismatchError(f"{path} was written by {saved} training process(es); resume it with {saved}, not {world_size}")


def load_weights(path: str | Path, model: torch.nn.Module) -> None:
    """The checkpoint's weights (or LoRA adapters) into the bare, unsharded model, in place."""
    path = Path(path)
    if _is_peft(model):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = next((path / "model").glob("adapter_model.*"))
        state = load_file(adapter) if adapter.suffix == ".safetensors" else torch.load(adapter)
        set_peft_model_state_dict(model, state)
    elif (path / "model.pt").is_file():
        _load_state(path, model, torch.load(path / "model.pt"))
    else:
        _check_shape(path, model)
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(path / "model", dtype=next(model.parameters()).dtype)
        _load_state(path, model, loaded.state_dict())


#: Config keys that fix the shapes of a transformers model's weights.
_SHAPE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size")


def _check_shape(path: Path, model: torch.nn.Module) -> None:
    """Compare the saved ``config.json`` with the model's before loading anything: a checkpoint of
    another model (``policy.model`` changed since it was written) is one sentence, not a
    page of size-mismatch errors."""
    saved_file, config = path / "model" / "config.json", getattr(model, "config", None)
    if config is None or not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text())
    differ = [f"{k} {saved[k]} (this model: {getattr(config, k)})" for k in _SHAPE_KEYS
              if k in saved and hasattr(config, k) and saved[k] != getattr(config, k)]
    if differ:
        raise CheckpointMismatchError(f"{path} holds a model of another shape: {', '.join(differ)}; "
                                      "resume with the policy.model it was trained with, or start a new run folder")


def _load_state(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # missing, unexpected or differently shaped weights
        first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise CheckpointMismatchError(f"{path} does not fit this model ({first}); resume with the "
                                      "policy.model it was trained with, or start a new run folder") from None


def load_training_state(
    path: str | Path,
    optimizer: torch.optim.Optimizer | None,
    np_rng: np.random.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """This rank's optimizer and RNG states (load after ``accelerate`` prepared the optimizer, so
    sharded states land on their shards); returns the trainer state."""
    path = Path(path)
    check_world_size(path, rank, world_size)
    state = torch.load(path / _state_name(rank, world_size), weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"], np_rng)
    return json.loads((path / "trainer_state.json").read_text())
