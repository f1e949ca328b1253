"""The per-turn RL trainer: rollouts -> advantages -> one row per turn -> PPO-clip update.

One training step:

1. ``run.tasks_per_step`` train tasks (a seeded permutation walked by a data cursor), each
   rolled out ``rollout.group_size`` times by the batched engine with the current weights.
   Episodes that errored are counted and kept out of training. With ``run.dynamic_sampling``
   (DAPO), groups whose rewards are all equal are dropped and refilled with new rollouts.
2. The estimator named in the config turns per-turn rewards (+ anchors, strata) into one
   advantage per turn (``turngym.trainers.estimate``).
3. Each turn becomes a row: its exact prompt ids and response ids, its advantage on every
   response token. Turns whose prompt extends an earlier turn's prompt + response
   (token-in/token-out, full-history memory) are packed into one sequence per trajectory
   (``turngym.trainers.rows``): one forward pass per trajectory, each turn still with its own
   advantage, logprobs and clipping. ``old_logp`` is the training model's own logprob
   (recomputed before the update when there are several PPO passes, taken from the update's
   forward when there is one; the gap to the rollout engine's logprobs is logged), or with
   asynchronous rollouts the rollout engine's logprob (the importance ratio corrects the
   staleness); the reference logprobs are computed when KL is on.
4. PPO-clip update over length-bucketed micro-batches with gradient accumulation; the loss is
   normalised over the whole mini-batch, as if it had been one batch (over every rank's rows
   under a multi-process launch, ``turngym.trainers.distributed``).
5. The in-process policy shares the model object, so new weights are live at once
   (``policy.sync_weights`` for backends that hold their own copy).

Every ``run.eval_every`` steps the held-out split is evaluated with the same code as
``turngym eval`` (files in ``out_dir/eval/step-N``); every ``run.checkpoint_every`` steps a
checkpoint is written atomically, and ``resume=True`` continues from the latest one exactly.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from turngym.agents.progress import Progress
from turngym.agents.rollout import RolloutEngine, rollout_stats
from turngym.agents.trajectory import Trajectory, write_jsonl
from turngym.envs.tasks import Task
from turngym.trainers.async_rollout import RolloutPrefetcher, snapshot
from turngym.trainers.checkpoint import (
    check_world_size,
    latest_checkpoint,
    load_training_state,
    load_weights,
    save_checkpoint,
)
from turngym.trainers.config import TrainConfig
from turngym.trainers.data import TrainingTasks
from turngym.trainers.distributed import (
    AccelerateGroup,
    Distributed,
    SingleProcess,
    generation_context,
)
from turngym.trainers.estimators import estimate
from turngym.trainers.generalization import memorisation_warning, window_mean
from turngym.trainers.losses import logprob_mismatch, policy_loss
from turngym.trainers.metrics import MetricsLogger, plot_metrics, read_metrics
from turngym.trainers.multitask import TaskBalancer, task_families
from turngym.trainers.rows import (
    Packed,
    Row,
    collate,
    collate_packed,
    estimator_inputs,
    micro_batches,
    pack_rows,
    per_turn,
    rows_from_trajectories,
    token_logprobs,
)
from turngym.trainers.sampling import fill_to_targets, informative_group_mask, overlong_penalty
from turngym.trainers.schedules import lr_at

__all__ = ["Trainer", "resolve_device", "ppo_update"]

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _padding_row(pad_id: int) -> Row:
    """A one-token row with zero weight: what a rank with nothing to train on feeds its model so
    that it still joins every collective its peers make (FSDP gathers, the gradient all-reduce)."""
    return Row([pad_id], [pad_id], 0.0, [0.0], old_logprobs=[0.0], ref_logprobs=[0.0])


def _padding_pack(pad_id: int) -> Packed:
    return Packed([pad_id, pad_id], [_padding_row(pad_id)])


def _equal_micro_batches(packs: Sequence[Packed], budget: int, dist: Distributed) -> list[list[int]]:
    """Length-bucketed micro-batches of sequences, padded with empty ones to the most any rank
    has (every rank must run the same number of forward/backward passes)."""
    batches = micro_batches([len(p) for p in packs], budget) if packs else []
    most = int(dist.max(len(batches)))
    return batches + [[] for _ in range(most - len(batches))]


def _fill_logprobs(model: torch.nn.Module, packs: Sequence[Packed], pad_id: int, budget: int, device: torch.device,
                   attr: str, dist: Distributed) -> None:
    """Set ``row.<attr>`` to the model's logprobs of each row's response tokens (no grad)."""
    with torch.no_grad(), dist.autocast():
        for idx in _equal_micro_batches(packs, budget, dist):
            batch_packs = [packs[i] for i in idx] or [_padding_pack(pad_id)]
            batch = collate_packed(batch_packs, pad_id, device)
            logp, _ = token_logprobs(model, batch)
            values = per_turn(logp, batch).float().cpu()
            for j, row in enumerate(row for p in batch_packs[: len(idx)] for row in p.rows):
                setattr(row, attr, values[j, : len(row.response_ids)].tolist())


def ppo_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rows: list[Row],
    config: TrainConfig,
    pad_id: int,
    device: torch.device,
    rng: np.random.Generator,
    ref_model: Any = None,
    dist: Distributed | None = None,
    behaviour_logprobs: str = "recompute",
    pack: bool = True,
) -> dict[str, float]:
    """Recompute old (and reference) logprobs, then the PPO-clip update; returns mean metrics.

    With one epoch and one mini-batch the old policy *is* the model being updated, so its
    logprobs are taken (detached) from the update's own forward pass instead of a separate one
    (the ratio is exactly 1 either way; this saves a forward over every row).
    ``behaviour_logprobs="rollout"`` makes the PPO ratio pi_theta / pi_rollout, with the rollout
    engine's logprobs as the old policy: the importance ratio that corrects rollouts generated
    by older weights (the asynchronous option). ``dist`` spreads the update over ranks, each
    with its own rows (see ``turngym.trainers.distributed``); every rank must call this.

    ``pack`` (default): turns whose prompt extends an earlier turn's prompt + response are
    trained inside one sequence (``turngym.trainers.rows.pack_rows``), each with its own
    advantage, logprobs and clipping; the loss is the per-turn one up to float rounding.
    ``pack=False`` runs one sequence per turn.
    """
    dist = dist or SingleProcess()
    loss_cfg, optim = config.loss, config.optim
    n_mini = int(dist.max(min(optim.mini_batches, max(len(rows), 1))))
    single_pass = optim.ppo_epochs == 1 and n_mini == 1
    have_rollout = bool(rows) and all(len(r.rollout_logprobs) == len(r.response_ids) for r in rows)
    model.eval()
    if not single_pass or loss_cfg.use_kl:
        packs = pack_rows(rows, pack)
    if not single_pass:
        _fill_logprobs(model, packs, pad_id, optim.micro_batch_tokens, device, "old_logprobs", dist)
    if loss_cfg.use_kl:
        ref_ctx = ref_model() if callable(ref_model) and not isinstance(ref_model, torch.nn.Module) else contextlib.nullcontext()
        with ref_ctx:
            _fill_logprobs(ref_model if isinstance(ref_model, torch.nn.Module) else model, packs, pad_id,
                           optim.micro_batch_tokens, device, "ref_logprobs", dist)
    metrics: dict[str, list[float]] = {}
    gap_parts: list[tuple[float, dict[str, float]]] = []  # (tokens, gap metrics) per micro-batch
    if have_rollout and not single_pass:
        gap = collate(rows[:512], pad_id)  # the rollout/train gap, on at most 512 rows
        gap_parts.append((1.0, logprob_mismatch(gap["rollout_logp"], gap["old_logp"], gap["response_mask"])))
    if have_rollout and behaviour_logprobs == "rollout":
        for r in rows:
            r.old_logprobs = list(r.rollout_logprobs)
    take_old_from_forward = single_pass and behaviour_logprobs != "rollout"

    model.train()
    for _epoch in range(optim.ppo_epochs):
        order = rng.permutation(len(rows))
        for mini in np.array_split(order, n_mini):
            mini_rows = [rows[i] for i in mini]
            local_tokens = sum(len(r.response_ids) for r in mini_rows)
            total_tokens = dist.sum(local_tokens)  # the loss is normalised over every rank's rows
            total_rows = dist.sum(len(mini_rows))
            cfg = loss_cfg
            if cfg.loss_agg == "seq-mean-token-sum-norm" and cfg.loss_agg_constant is None:
                longest = dist.max(max((len(r.response_ids) for r in mini_rows), default=0))
                cfg = cfg.model_copy(update={"loss_agg_constant": float(max(longest, 1))})
            optimizer.zero_grad(set_to_none=True)
            step_metrics: dict[str, float] = {}
            mini_packs = pack_rows(mini_rows, pack)
            batches = _equal_micro_batches(mini_packs, optim.micro_batch_tokens, dist)
            for b_index, idx in enumerate(batches):
                batch_packs = [mini_packs[i] for i in idx]
                batch_rows = [row for p in batch_packs for row in p.rows]
                if batch_rows:
                    # each micro-batch's mean re-weighted to its share of the (global) mini-batch
                    if cfg.loss_agg == "token-mean":
                        share = sum(len(r.response_ids) for r in batch_rows)
                        weight, local_weight = share / max(total_tokens, 1), share / max(local_tokens, 1)
                    elif cfg.loss_agg == "seq-mean-token-sum-norm" and cfg.loss_agg_constant:
                        weight = local_weight = 1.0
                    else:
                        weight, local_weight = len(batch_rows) / max(total_rows, 1), len(batch_rows) / len(mini_rows)
                else:
                    batch_packs, weight, local_weight = [_padding_pack(pad_id)], 0.0, 0.0
                batch = collate_packed(batch_packs, pad_id, device)
                last = b_index == len(batches) - 1
                with (contextlib.nullcontext() if last else dist.no_sync(model)), dist.autocast():
                    # entropy is always logged; it needs a graph only when it is in the loss
                    logp, entropy = token_logprobs(model, batch, with_entropy=True, entropy_grad=cfg.entropy_coef != 0)
                    # one row per turn from here on: the loss never sees how turns were packed
                    logp = per_turn(logp, batch)
                    entropy = per_turn(entropy, batch) if entropy is not None else None
                    mask = batch["mask"]
                    if single_pass:
                        if take_old_from_forward:
                            batch["old_logp"] = logp.detach()
                        if have_rollout and weight > 0:
                            gap_parts.append((float(mask.sum()),
                                              logprob_mismatch(batch["rollout_logp"], logp.detach(), mask)))
                    loss, m = policy_loss(logp, batch["old_logp"], batch["advantages"], mask, cfg,
                                          ref_logp=batch["ref_logp"] if cfg.use_kl else None, entropy=entropy)
                    dist.backward(loss * (weight * dist.backward_scale()))
                for k, v in m.items():
                    step_metrics[k] = step_metrics.get(k, 0.0) + v * local_weight
            if optim.grad_clip > 0:
                step_metrics["grad_norm"] = dist.clip_grad_norm(model, optim.grad_clip)
            optimizer.step()
            for k, v in step_metrics.items():
                metrics.setdefault(k, []).append(v)
    if gap_parts:
        tokens = sum(t for t, _ in gap_parts) or 1.0
        metrics["rollout_train_gap_abs_max"] = [max(g["abs_max"] for _, g in gap_parts)]
        for key in ("abs_mean", "k3"):
            metrics[f"rollout_train_gap_{key}"] = [sum(t * g[key] for t, g in gap_parts) / tokens]
    model.eval()
    return {f"train/{k}": float(np.mean(v)) for k, v in metrics.items()}


@contextlib.contextmanager
def _run_log(path: Path, enabled: bool):
    """While the run lasts, everything turngym logs at INFO and above also goes to ``path``."""
    if not enabled:
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("turngym")
    level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def _success(key: str, evaluation: dict[str, float]) -> dict[str, Any]:
    """An evaluation's held-out success and its 95% interval, as the run's summary keeps them."""
    return {key: evaluation["eval/success_rate"],
            f"{key}_ci": [evaluation["eval/success_ci_low"], evaluation["eval/success_ci_high"]]}


class Trainer:
    """Runs a :class:`~turngym.trainers.config.TrainConfig`; see the module docstring."""

    def __init__(self, config: TrainConfig, resume: bool = False, model: Any = None, tokenizer: Any = None) -> None:
        from transformers.utils import logging as hf_logging

        from turngym.agents.hf import HFPolicy
        from turngym.agents.models import load_model
        from turngym.envs import make
        from turngym.trainers.backends import build_policy

        hf_logging.disable_progress_bar()  # checkpoint writes are not long work worth a bar
        self.config = cfg = config
        self.run_dir = Path(cfg.run.out_dir)
        if not resume and ((self.run_dir / "metrics.jsonl").exists() or (self.run_dir / "checkpoints").exists()):
            raise FileExistsError(f"{self.run_dir} already holds a run: continue it with --resume, or choose another --out")
        self.device = resolve_device(cfg.policy.device)
        self.dist = Distributed.create(cfg.optim.mixed_precision, self.device)
        if isinstance(self.dist, AccelerateGroup):
            self.device = self.dist.device  # this rank's GPU under a multi-GPU launch
        if cfg.run.tasks_per_step < self.dist.world_size:
            raise ValueError(f"run.tasks_per_step={cfg.run.tasks_per_step} is smaller than the "
                             f"{self.dist.world_size} training processes: every process needs a task")
        self.dist.wait()  # every rank has seen the folder as it was before rank 0 writes to it
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resumed = resume
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True)
        if cfg.policy.torch_threads:
            torch.set_num_threads(cfg.policy.torch_threads)
        seed_everything(cfg.run.seed + self.dist.rank)
        if model is None:
            model, tokenizer = load_model(cfg.policy.model)
        model.to(self.device)
        self.ref_model: Any = None
        if cfg.policy.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=cfg.policy.lora_r, lora_alpha=cfg.policy.lora_alpha,
                                                     lora_dropout=cfg.policy.lora_dropout,
                                                     target_modules=cfg.policy.lora_target_modules, task_type="CAUSAL_LM"))
            self.ref_model = model.disable_adapter  # the LoRA-disabled base is the reference
        elif cfg.loss.use_kl:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        ckpt = None
        if resume:  # weights go into the bare model, before accelerate shards it
            ckpt = latest_checkpoint(self.run_dir)
            if ckpt is None:
                raise FileNotFoundError(f"no checkpoint to resume from in {self.run_dir / 'checkpoints'}")
            check_world_size(ckpt, self.dist.rank, self.dist.world_size)
            load_weights(ckpt, model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        # train_model is what the update runs through (DDP/FSDP-wrapped under a multi-process
        # launch); model is the bare one that generates, evaluates and is saved.
        self.train_model, self.optimizer = self.dist.prepare(model, optimizer)
        self.model = self.dist.unwrap(self.train_model)
        # policy.backend: hf shares the model's weights; vllm is an engine synced after each update
        self.policy = build_policy(cfg, self.model, tokenizer, self.dist.world_size)
        probe = make(cfg.env.id, **cfg.env.kwargs)
        suite = probe.unwrapped.suite
        probe.close()
        source = cfg.env.train_tasks
        if cfg.multitask.key and source == "auto":
            source = "split"  # MT-GRPO's families are the frozen split's metadata values
        self.tasks = TrainingTasks(suite, source, cfg.env.train_split, cfg.run.seed)
        self.balancer: TaskBalancer | None = None
        if cfg.multitask.key:
            if self.tasks.generated:
                raise ValueError("multitask.key (MT-GRPO) balances the families of a frozen split: "
                                 "set env.train_tasks=split")
            if cfg.run.async_rollouts:
                raise ValueError("multitask.key (MT-GRPO) and run.async_rollouts cannot be combined yet")
            if self.dist.world_size > 1:
                raise ValueError("multitask.key (MT-GRPO) runs in one training process; unset it for a multi-process launch")
            mt = cfg.multitask
            self.balancer = TaskBalancer(task_families(self.tasks.split, mt.key), seed=cfg.run.seed, lam=mt.lam,
                                         beta=mt.beta, cap=mt.cap, momentum=mt.momentum)
        if cfg.run.overlong_cache_tokens > cfg.rollout.max_tokens:
            raise ValueError(f"run.overlong_cache_tokens={cfg.run.overlong_cache_tokens} exceeds "
                             f"rollout.max_tokens={cfg.rollout.max_tokens}")
        env: Any = cfg.env.id
        self.env_pool = None
        if cfg.rollout.backend != "thread":
            from turngym.agents.ray_pool import make_env_pool

            self.env_pool = env = make_env_pool(cfg.rollout.backend, cfg.env.id, cfg.rollout, cfg.env.kwargs,
                                                num_actors=cfg.rollout.ray_actors,
                                                num_cpus_per_actor=cfg.rollout.ray_cpus_per_actor,
                                                address=cfg.rollout.ray_address)
        # The policy that generates training rollouts: the trained model itself, or with the
        # asynchronous option a copy that the prefetch thread refreshes between batches.
        rollout_policy = self.policy
        self.prefetcher: RolloutPrefetcher | None = None
        if cfg.run.async_rollouts:
            if self.dist.world_size > 1:
                raise ValueError("run.async_rollouts runs in one training process; turn it off for a multi-process launch")
            rollout_policy = HFPolicy(copy.deepcopy(self.model).eval().requires_grad_(False), tokenizer,
                                      max_batch_size=cfg.policy.max_batch_size)
        self.engine = RolloutEngine(rollout_policy, env, tokenizer, cfg.rollout, env_kwargs=cfg.env.kwargs)
        self.np_rng = np.random.default_rng(cfg.run.seed)
        self.step = 0
        self.cursor = 0
        self.trained_cursor = 0  # the cursor after the last batch trained on (the prefetcher runs ahead)
        self.history: list[dict[str, float]] = []
        if ckpt is not None:
            state = load_training_state(ckpt, self.optimizer, self.np_rng, self.dist.rank, self.dist.world_size)
            self.step, self.cursor = state["step"], state["cursor"]
            if self.balancer is not None:
                self.balancer.load_state_dict(state["multitask"])
            self.trained_cursor = self.cursor
            log.info("resumed from %s at step %d", ckpt, self.step)
        self.logger = MetricsLogger(self.run_dir, tensorboard=cfg.run.tensorboard, wandb=cfg.run.wandb,
                                    config=cfg.model_dump(mode="json"),
                                    resume_step=self.step if ckpt is not None else None) if self.dist.is_main else None

    # -- data -----------------------------------------------------------------------------------
    def next_tasks(self, n: int) -> list[Task]:
        """The next ``n`` training tasks (``turngym.trainers.data``); advances the data cursor."""
        out = self.tasks.take(self.cursor, n)
        self.cursor += n
        return out

    # -- one step -----------------------------------------------------------------------------------
    def collect(self, step: int | None = None) -> tuple[list[Trajectory], dict[str, float]]:
        """This rank's rollouts of a step (all of them in a single process): whole groups of
        its share of the step's tasks; the data cursor advances identically on every rank."""
        cfg, dist = self.config, self.dist
        step = self.step if step is None else step
        if self.balancer is not None:
            return self._collect_multitask(step)
        target = len(dist.shard(list(range(cfg.run.tasks_per_step))))
        tasks = dist.shard(self.next_tasks(cfg.run.tasks_per_step))
        rounds = cfg.run.max_refill_rounds + 1 if cfg.run.dynamic_sampling else 1
        with generation_context(dist, self.train_model):
            trajs = self.engine.run(tasks, run_index=step * rounds)
            all_trajs = list(trajs)
            kept = [t for t in trajs if t.status != "error"]
            metrics: dict[str, float] = {}
            if cfg.run.dynamic_sampling:
                kept = self._drop_flat_groups(kept)
                refill = 1
                while refill < rounds:
                    # every rank draws the same refill tasks and takes the slice its own shortfall needs
                    needs = dist.all_gather(max(target - len({t.group_id for t in kept}), 0))
                    if sum(needs) == 0:
                        break
                    drawn = self.next_tasks(sum(needs))
                    offset = sum(needs[: dist.rank])
                    mine = drawn[offset : offset + needs[dist.rank]]
                    extra = self.engine.run(mine, run_index=step * rounds + refill) if mine else []
                    all_trajs += extra
                    kept += self._drop_flat_groups([t for t in extra if t.status != "error"])
                    refill += 1
                metrics["rollout/refill_rounds"] = refill - 1
        metrics.update(self._rollout_metrics(all_trajs, kept))
        return kept, metrics

    def _collect_multitask(self, step: int) -> tuple[list[Trajectory], dict[str, float]]:
        """MT-GRPO: groups per task family drawn from the balancer's weights; with dynamic
        sampling, over-generated and refilled to keep the families' ratio (``fill_to_targets``)."""
        cfg, balancer = self.config, self.balancer
        assert balancer is not None
        rounds = cfg.run.max_refill_rounds + 1 if cfg.run.dynamic_sampling else 1
        all_trajs: list[Trajectory] = []
        generated: dict[str, list[list[float]]] = {}
        calls = 0

        def produce(requests: dict[str, int]):
            nonlocal calls
            tasks = [t for name, n in requests.items() for t in balancer.next_tasks(name, n)]
            trajs = self.engine.run(tasks, run_index=step * rounds + calls)
            calls += 1
            all_trajs.extend(trajs)
            groups: dict[str, list[Trajectory]] = {}
            for t in trajs:
                groups.setdefault(t.group_id, []).append(t)
            for group in groups.values():
                ok = [t for t in group if t.status != "error"]
                if ok:
                    name = balancer.family_of[ok[0].task_id]
                    generated.setdefault(name, []).append([t.total_reward for t in ok])
                    yield name, ok

        targets = balancer.targets(cfg.run.tasks_per_step, step)
        metrics: dict[str, float] = {}
        if cfg.run.dynamic_sampling:
            result = fill_to_targets(produce, targets, lambda g: [t.total_reward for t in g],
                                     max_refill_rounds=cfg.run.max_refill_rounds, multipliers=balancer.multipliers())
            kept = [t for g in result.all_groups() for t in g]
            metrics["rollout/refill_rounds"] = result.rounds
        else:
            kept = [t for _, g in produce(targets) for t in g]
        metrics.update(balancer.update(generated))
        metrics.update(self._rollout_metrics(all_trajs, kept))
        return kept, metrics

    def _rollout_metrics(self, all_trajs: list[Trajectory], kept: list[Trajectory]) -> dict[str, float]:
        stats = rollout_stats(all_trajs)
        return {
            "rollout/reward_mean": stats["mean_reward"],
            "rollout/success_rate": stats["success_rate"],
            "rollout/episodes": stats["episodes"],
            "rollout/error_episodes": stats["error"],
            "rollout/turns_mean": stats["turns"] / max(stats["episodes"], 1),
            "rollout/invalid_rate": float(np.mean([not u.action_valid for t in kept for u in t.turns])) if kept else 0.0,
        }

    def _drop_flat_groups(self, trajs: list[Trajectory]) -> list[Trajectory]:
        keep = informative_group_mask([t.total_reward for t in trajs], [t.group_id for t in trajs])
        return [t for t, k in zip(trajs, keep) if k]

    def advantages(self, trajs: Sequence[Trajectory]) -> np.ndarray:
        inputs = estimator_inputs(trajs)
        cache = self.config.run.overlong_cache_tokens
        if cache:  # DAPO overlong shaping, on each turn's reward
            lengths = [len(turn.response_ids) for t in trajs for turn in t.turns]
            inputs["rewards"] = inputs["rewards"] + overlong_penalty(lengths, self.config.rollout.max_tokens, cache)
        return estimate(self.config.estimator.name, inputs["rewards"], inputs["group_ids"], inputs["traj_ids"],
                        inputs["steps"], anchors=inputs["anchors"], strata=inputs["strata"],
                        **self.config.estimator.options)

    def _next_batch(self) -> tuple[list[Trajectory], dict[str, float]]:
        if not self.config.run.async_rollouts:
            trajs, metrics = self.collect()
            self.trained_cursor = self.cursor
            return trajs, metrics
        if self.prefetcher is None:
            self.prefetcher = RolloutPrefetcher(
                lambda k: (*self.collect(k), self.cursor),  # the producer thread alone moves the cursor
                self.engine.policy.sync_weights, snapshot(self.model), first_step=self.step,
                max_staleness=self.config.run.max_staleness, stop_step=self.config.run.steps)
        batch = self.prefetcher.get(self.step)
        trajs, metrics, self.trained_cursor = batch.result
        metrics["rollout/staleness"] = batch.step - batch.weights_version
        return trajs, metrics

    def train_step(self) -> dict[str, float]:
        start = time.perf_counter()
        trajs, metrics = self._next_batch()
        rollout_s = time.perf_counter() - start  # with async rollouts: the time spent waiting for them
        if trajs:
            adv = self.advantages(trajs)
            i = 0
            for t in trajs:  # shown by the trajectory viewer
                for turn in t.turns:
                    turn.advantage = float(adv[i])
                    i += 1
            rows = rows_from_trajectories(trajs, adv)
            rows = [r for r in rows if r.advantage != 0.0]  # a zero advantage has no gradient
        else:
            adv, rows = np.zeros(0), []
        metrics["train/rows"] = len(rows)
        metrics["train/advantage_abs_mean"] = float(np.mean(np.abs(adv))) if len(adv) else 0.0
        optim = self.config.optim
        metrics["train/lr"] = lr_at(self.step, self.config.run.steps, optim.lr, optim.lr_schedule, optim.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = metrics["train/lr"]
        if rows or self.dist.world_size > 1:  # every rank joins the update's collectives
            metrics.update(ppo_update(self.train_model, self.optimizer, rows, self.config, self.pad_id, self.device,
                                      self.np_rng, self.ref_model, dist=self.dist,
                                      behaviour_logprobs="rollout" if self.prefetcher is not None else "recompute"))
        if self.prefetcher is not None:
            self.prefetcher.publish(self.step + 1, snapshot(self.model))
        elif trajs:
            self.policy.sync_weights(self.model.state_dict())
        self.last_trajectories = trajs
        metrics["time/rollout_s"] = rollout_s
        metrics["time/step_s"] = time.perf_counter() - start
        metrics = self.dist.mean_metrics(metrics)
        if "train/rows" in metrics:
            metrics["train/rows"] *= self.dist.world_size  # rows over all ranks, not per rank
        self.step += 1
        return metrics

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, label: str | None = None) -> dict[str, float]:
        """Held-out evaluation with the same code and files as ``turngym eval`` (on rank 0; the
        other ranks wait and get the same numbers)."""
        with generation_context(self.dist, self.train_model):
            result = self._evaluate(label) if self.dist.is_main else {}
            self.dist.wait()
        return self.dist.all_gather(result)[0]

    def _evaluate(self, label: str | None) -> dict[str, float]:
        from turngym.agents.evaluation.policies import policy_runner
        from turngym.agents.evaluation.runner import EvalConfig, evaluate

        cfg = self.config
        out = self.run_dir / "eval" / (label or f"step-{self.step:06d}")
        eval_cfg = EvalConfig(envs=[cfg.env.id], split=cfg.env.eval_split, policy=f"train:{self.run_dir}@{self.step}",
                              runs=cfg.run.eval_runs, max_tasks=cfg.run.eval_tasks, seed=cfg.run.seed,
                              ks=[1], report=True)
        runner = policy_runner(self.policy, {
            "env_kwargs": cfg.env.kwargs, "tokenizer": self.tokenizer,
            "rollout": cfg.rollout.model_copy(update={"temperature": cfg.run.eval_temperature, "progress": False}),
        })
        results = evaluate(eval_cfg, runner, out)
        stats = results.envs[0].stats
        return {"eval/success_rate": stats.pass1.mean, "eval/success_ci_low": stats.pass1.low,
                "eval/success_ci_high": stats.pass1.high, "eval/reward_mean": stats.mean_reward}

    def save_samples(self) -> None:
        """A few of the last step's training trajectories, with their per-turn advantages, as
        ``samples/step-N.jsonl`` (readable with ``turngym.agents.read_jsonl``)."""
        n = self.config.run.sample_trajectories
        if n > 0 and self.dist.is_main and getattr(self, "last_trajectories", None):
            write_jsonl(self.last_trajectories[:n], self.run_dir / "samples" / f"step-{self.step:06d}.jsonl")

    # -- the loop -----------------------------------------------------------------------------------
    def save(self) -> Path:
        state = self.dist.model_state(self.train_model) if self.dist.world_size > 1 else None
        return save_checkpoint(self.run_dir, self.step, self.model, self.optimizer,
                               self._trainer_state(), self.np_rng, self.tokenizer, keep=self.config.run.keep_checkpoints,
                               rank=self.dist.rank, world_size=self.dist.world_size, barrier=self.dist.wait,
                               model_state=state, config=self.config)

    def _trainer_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cursor": self.trained_cursor}
        if self.balancer is not None:
            state["multitask"] = self.balancer.state_dict()
        return state

    def warm_start(self) -> dict[str, float]:
        """Supervised warm start on the environment's expert demonstrations (``sft`` section)."""
        from turngym.trainers.sft import collect_demonstrations, sft

        cfg = self.config
        if self.dist.world_size > 1:
            raise ValueError("the supervised warm start runs in one process: run `turngym sft` first, "
                             "then train from its output (policy.model=DIR) with sft.enabled=false")
        tasks = self.tasks.demonstrations(cfg.sft.episodes)
        agent_cfg = cfg.rollout  # the rollout config carries the agent's memory settings
        rows = collect_demonstrations(cfg.env.id, tasks, self.tokenizer, agent_cfg, cfg.env.kwargs, seed=cfg.run.seed,
                                      recovery_rate=cfg.sft.recovery_rate)
        return sft(self.model, self.tokenizer, rows, lr=cfg.sft.lr, epochs=cfg.sft.epochs, batch_rows=cfg.sft.batch_rows,
                   micro_batch_tokens=cfg.optim.micro_batch_tokens, seed=cfg.run.seed, max_seconds=cfg.sft.max_seconds,
                   steps=cfg.sft.steps)

    def train(self) -> dict[str, Any]:
        """The whole run (warm start, steps, evaluations, checkpoints); returns its summary. What
        it logs also goes to ``out_dir/train.log`` (rank 0)."""
        with _run_log(self.run_dir / "train.log", self.dist.is_main):
            log.info("training on %s", self.tasks.describe())
            return self._train()

    def _train(self) -> dict[str, Any]:
        cfg = self.config
        summary: dict[str, Any] = {}
        if self.step == 0 and not self.resumed:  # a run resumed at step 0 has had its warm start
            before = self.evaluate("before-sft" if cfg.sft.enabled else "step-000000")
            self._report("before training", before)
            summary.update(_success("eval_before", before))
            if not cfg.sft.enabled:
                self._log(0, before)
            else:
                # the RL curve starts from the warm start: its evaluation is step 0's `eval/*`
                sft_metrics = self.warm_start()
                after_sft = self.evaluate("step-000000")
                self._report(f"after the warm start ({sft_metrics['sft/steps']:.0f} steps)", after_sft)
                self._log(0, {**sft_metrics, **after_sft, **{f"pre_sft_{k}": v for k, v in before.items()}})
                summary.update(_success("eval_after_sft", after_sft))
                summary.update(sft_metrics)
                self.save()
        # a bar on a terminal, a plain line about every 30 s elsewhere (a log file, CI, nohup)
        bar = Progress("train", total=cfg.run.steps, unit="step", initial=self.step, disable=not self.dist.is_main)
        try:
            while self.step < cfg.run.steps:
                metrics = self.train_step()
                if cfg.run.eval_every and self.step % cfg.run.eval_every == 0 and self.step < cfg.run.steps:
                    metrics.update(self.evaluate())
                    self.save_samples()
                self._log(self.step, metrics)
                if "eval/success_rate" in metrics:
                    self._report(f"step {self.step}/{cfg.run.steps}", metrics)
                    self._check_generalization()
                postfix = {"reward": f"{metrics.get('rollout/reward_mean', 0):.2f}",
                           "train_success": f"{metrics.get('rollout/success_rate', 0):.2f}"}
                if "eval/success_rate" in metrics:
                    postfix["held_out"] = f"{metrics['eval/success_rate']:.2f}"
                bar.set_postfix(**postfix)
                bar.update(1)
                if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
            if self.prefetcher is not None:
                self.prefetcher.close()
                self.prefetcher = None
        final = self.evaluate()
        self.save_samples()
        self._log(self.step, final)
        self._report(f"after RL (step {self.step})", final)
        summary.update(_success("eval_after", final))
        summary["generalization_warning"] = self._check_generalization()
        self.save()
        if self.env_pool is not None:
            self.env_pool.close()
        if self.logger is not None:
            self.logger.close()
            records = read_metrics(self.logger.path)
            summary["plot"] = str(plot_metrics(records, self.run_dir / "curves.png", title=f"{cfg.env.id} · {cfg.estimator.name}"))
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _report(self, label: str, evaluation: dict[str, float]) -> None:
        """One line per evaluation, in the terminal and in ``train.log``: held-out success with
        its interval next to the training rollouts' success since the previous evaluation."""
        line = (f"{label}: held-out success {evaluation['eval/success_rate']:.1%} "
                f"[{evaluation['eval/success_ci_low']:.1%}, {evaluation['eval/success_ci_high']:.1%}]")
        if self.logger is not None and self.step > 0:
            records = read_metrics(self.logger.path)
            train = [(int(r["step"]), r["rollout/success_rate"]) for r in records if "rollout/success_rate" in r]
            window = self.config.run.eval_every or self.step
            recent = window_mean(train, self.step - window + 1, self.step)
            if recent is not None:
                line += f"; training rollouts {recent:.1%} (last {min(window, self.step)} steps)"
        log.info(line)

    def _check_generalization(self) -> str | None:
        """Log a warning when training-rollout success climbed since step 0 while held-out
        success did not (``turngym.trainers.generalization``); returns the warning."""
        if self.logger is None:
            return None
        records = read_metrics(self.logger.path)
        train = [(int(r["step"]), r["rollout/success_rate"]) for r in records if "rollout/success_rate" in r]
        evals = [r for r in records if "eval/success_rate" in r]
        if not train or len(evals) < 2:
            return None
        window = max(self.config.run.eval_every, 5)
        now = int(train[-1][0])
        first = window_mean(train, 1, window)
        latest = window_mean(train, now - window + 1, now)
        assert first is not None and latest is not None
        start, end = evals[0], evals[-1]
        warning = memorisation_warning(first, latest, start["eval/success_rate"], end["eval/success_rate"],
                                       end.get("eval/success_ci_high"))
        if warning:
            log.warning("step %d: %s", self.step, warning)
        return warning

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        if self.logger is not None:  # rank 0 logs for the whole group
            self.logger.log(step, metrics)
