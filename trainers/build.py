"""Construction of a training run: ``build_run(config) -> Run``, everything the loop needs.

In order (the order fixes what the run's seed draws, so a run is reproducible): the run folder
and the process group; the seed; the model (with LoRA adapters, or a frozen reference copy
when KL is on) and, on ``resume``, its weights from the latest checkpoint; the optimizer (and
the multi-process wrapping); the generating policy (``policy.backend``); the training tasks,
the MT-GRPO balancer and the data cursor; the environments (threads or a Ray pool) and the
rollout engine; the sampler; on ``resume``, the optimizer, RNG and data state; the metrics
logger (rank 0). Every combination that cannot run is refused here with one sentence.
"""

from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from turngym.agents.rollout import RolloutEngine
from turngym.trainers.checkpoint import (
    check_world_size,
    latest_checkpoint,
    load_training_state,
    load_weights,
)
from turngym.trainers.config import TrainConfig
from turngym.trainers.data import TaskCursor, TrainingTasks
from turngym.trainers.distributed import AccelerateGroup, Distributed
from turngym.trainers.metrics import MetricsLogger
from turngym.trainers.multitask import TaskBalancer, task_families
from turngym.trainers.samplers import Sampler, build_sampler

__all__ = ["Run", "build_run", "resolve_device", "seed_everything"]

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class Run:
    """The parts of a training run (see the module docstring for how each is made)."""

    config: TrainConfig
    run_dir: Path
    dist: Distributed
    device: torch.device
    model: torch.nn.Module
    """The bare model: it generates, evaluates and is saved."""
    train_model: Any
    """What the update runs through (DDP/FSDP-wrapped under a multi-process launch)."""
    optimizer: torch.optim.Optimizer
    ref_model: Any
    """The KL reference: a frozen copy, a peft ``disable_adapter`` context factory, or None."""
    tokenizer: Any
    pad_id: int
    policy: Any
    """The policy that evaluates (and, without asynchronous rollouts, generates the rollouts)."""
    engine: RolloutEngine
    env_pool: Any
    tasks: TrainingTasks
    cursor: TaskCursor
    balancer: TaskBalancer | None
    sampler: Sampler
    np_rng: np.random.Generator
    step: int
    resumed: bool
    logger: MetricsLogger | None


def build_run(config: TrainConfig, resume: bool = False, model: Any = None, tokenizer: Any = None) -> Run:
    """Everything a run needs, from ``config`` (``model``/``tokenizer``: use these instead of
    loading ``policy.model``); ``resume`` continues from the run folder's latest checkpoint."""
    from transformers.utils import logging as hf_logging

    from turngym.trainers.backends import build_policy

    hf_logging.disable_progress_bar()  # checkpoint writes are not long work worth a bar
    cfg = config
    run_dir = Path(cfg.run.out_dir)
    if not resume and ((run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()):
        raise FileExistsError(f"{run_dir} already holds a run: continue it with --resume, or choose another --out")
    dist, device = _process_group(cfg, run_dir)
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True)
    if cfg.policy.torch_threads:
        torch.set_num_threads(cfg.policy.torch_threads)
    seed_everything(cfg.run.seed + dist.rank)
    model, tokenizer, ref_model = _model(cfg, device, model, tokenizer)
    ckpt = _checkpoint_weights(run_dir, model, dist) if resume else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    train_model, optimizer = dist.prepare(model, optimizer)
    model = dist.unwrap(train_model)
    # policy.backend: hf shares the model's weights; vllm is an engine synced after each update
    policy = build_policy(cfg, model, tokenizer, dist.world_size)
    tasks, balancer = _tasks(cfg, dist)
    cursor = TaskCursor(tasks)
    engine, env_pool = _rollout_engine(cfg, policy, model, tokenizer, dist)
    sampler = build_sampler(cfg, engine, cursor, balancer, dist, train_model, model)
    np_rng = np.random.default_rng(cfg.run.seed)
    step = 0
    if ckpt is not None:
        state = load_training_state(ckpt, optimizer, np_rng, dist.rank, dist.world_size)
        step = state["step"]
        sampler.load_state_dict(state)
        log.info("resumed from %s at step %d", ckpt, step)
    logger = MetricsLogger(run_dir, tensorboard=cfg.run.tensorboard, wandb=cfg.run.wandb,
                           config=cfg.model_dump(mode="json"),
                           resume_step=step if ckpt is not None else None) if dist.is_main else None
    return Run(cfg, run_dir, dist, device, model, train_model, optimizer, ref_model, tokenizer, pad_id, policy,
               engine, env_pool, tasks, cursor, balancer, sampler, np_rng, step, resume, logger)


def _process_group(cfg: TrainConfig, run_dir: Path) -> tuple[Distributed, torch.device]:
    """This process's place in the launch and its device; rank 0 makes the run folder."""
    device = resolve_device(cfg.policy.device)
    dist = Distributed.create(cfg.optim.mixed_precision, device)
    if isinstance(dist, AccelerateGroup):
        device = dist.device  # this rank's GPU under a multi-GPU launch
    if cfg.run.tasks_per_step < dist.world_size:
        raise ValueError(f"run.tasks_per_step={cfg.run.tasks_per_step} is smaller than the "
                         f"{dist.world_size} training processes: every process needs a task")
    dist.wait()  # every rank has seen the folder as it was before rank 0 writes to it
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    return dist, device


def _model(cfg: TrainConfig, device: torch.device, model: Any, tokenizer: Any) -> tuple[Any, Any, Any]:
    """(model on ``device``, tokenizer, KL reference): with ``policy.lora`` the model is a peft
    model and its adapter-disabled base the reference; else a frozen copy when KL is on."""
    from turngym.agents.models import load_model

    if model is None:
        model, tokenizer = load_model(cfg.policy.model)
    model.to(device)
    ref_model: Any = None
    if cfg.policy.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.policy.lora_r, lora_alpha=cfg.policy.lora_alpha, lora_dropout=cfg.policy.lora_dropout,
                          target_modules=cfg.policy.lora_target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        ref_model = model.disable_adapter  # the LoRA-disabled base is the reference
    elif cfg.loss.use_kl:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    return model, tokenizer, ref_model


def _checkpoint_weights(run_dir: Path, model: torch.nn.Module, dist: Distributed) -> Path:
    """The latest checkpoint, its weights loaded into the bare model (before accelerate shards it)."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint to resume from in {run_dir / 'checkpoints'}")
    check_world_size(ckpt, dist.rank, dist.world_size)
    load_weights(ckpt, model)
    return ckpt


def _tasks(cfg: TrainConfig, dist: Distributed) -> tuple[TrainingTasks, TaskBalancer | None]:
    """The training tasks (``turngym.trainers.data``) and, with ``multitask.key``, the MT-GRPO
    balancer over the frozen split's families."""
    from turngym.envs import make

    probe = make(cfg.env.id, **cfg.env.kwargs)
    suite = probe.unwrapped.suite
    probe.close()
    source = cfg.env.train_tasks
    if cfg.multitask.key and source == "auto":
        source = "split"  # MT-GRPO's families are the frozen split's metadata values
    tasks = TrainingTasks(suite, source, cfg.env.train_split, cfg.run.seed)
    if not cfg.multitask.key:
        return tasks, None
    if tasks.generated:
        raise ValueError("multitask.key (MT-GRPO) balances the families of a frozen split: set env.train_tasks=split")
    if cfg.run.async_rollouts:
        raise ValueError("multitask.key (MT-GRPO) and run.async_rollouts cannot be combined yet")
    if dist.world_size > 1:
        raise ValueError("multitask.key (MT-GRPO) runs in one training process; unset it for a multi-process launch")
    mt = cfg.multitask
    balancer = TaskBalancer(task_families(tasks.split, mt.key), seed=cfg.run.seed, lam=mt.lam, beta=mt.beta,
                            cap=mt.cap, momentum=mt.momentum)
    return tasks, balancer


def _rollout_engine(cfg: TrainConfig, policy: Any, model: torch.nn.Module, tokenizer: Any,
                    dist: Distributed) -> tuple[RolloutEngine, Any]:
    """(the engine that rolls out training episodes, the Ray environment pool or None). With
    asynchronous rollouts its policy is a copy of the model that the prefetch thread refreshes."""
    from turngym.agents.hf import HFPolicy

    if cfg.run.overlong_cache_tokens > cfg.rollout.max_tokens:
        raise ValueError(f"run.overlong_cache_tokens={cfg.run.overlong_cache_tokens} exceeds "
                         f"rollout.max_tokens={cfg.rollout.max_tokens}")
    env: Any = cfg.env.id
    env_pool = None
    if cfg.rollout.backend != "thread":
        from turngym.agents.ray_pool import make_env_pool

        env_pool = env = make_env_pool(cfg.rollout.backend, cfg.env.id, cfg.rollout, cfg.env.kwargs,
                                       num_actors=cfg.rollout.ray_actors, num_cpus_per_actor=cfg.rollout.ray_cpus_per_actor,
                                       address=cfg.rollout.ray_address)
    rollout_policy = policy
    if cfg.run.async_rollouts:
        if dist.world_size > 1:
            raise ValueError("run.async_rollouts runs in one training process; turn it off for a multi-process launch")
        rollout_policy = HFPolicy(copy.deepcopy(model).eval().requires_grad_(False), tokenizer,
                                  max_batch_size=cfg.policy.max_batch_size)
    return RolloutEngine(rollout_policy, env, tokenizer, cfg.rollout, env_kwargs=cfg.env.kwargs), env_pool
