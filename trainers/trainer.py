"""The per-turn RL trainer: rollouts -> advantages -> one row per turn -> PPO-clip update.

One training step:

1. ``run.tasks_per_step`` train tasks (a seeded permutation walked by a data cursor), each
   rolled out ``rollout.group_size`` times by the batched engine with the current weights.
   Episodes that errored are counted and kept out of training. With ``run.dynamic_sampling``
   (DAPO), groups whose rewards are all equal are dropped and refilled with new rollouts.
2. The estimator named in the config turns per-turn rewards (+ anchors, strata) into one
   advantage per turn (``turngym.trainers.estimate``).
3. Each turn becomes a row: its exact prompt ids and response ids, its advantage on every
   response token. ``old_logp`` is recomputed by the training model before the update (the
   gap to the rollout engine's logprobs is logged), and the reference logprobs when KL is on.
4. PPO-clip update over length-bucketed micro-batches with gradient accumulation; the loss is
   normalised over the whole mini-batch, as if it had been one batch.
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
from tqdm.auto import tqdm

from turngym.agents.rollout import RolloutEngine, rollout_stats
from turngym.agents.trajectory import Trajectory, write_jsonl
from turngym.trainers.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from turngym.trainers.config import TrainConfig
from turngym.trainers.estimators import estimate
from turngym.trainers.losses import logprob_mismatch, policy_loss
from turngym.trainers.metrics import MetricsLogger, plot_metrics, read_metrics
from turngym.trainers.rows import Row, collate, estimator_inputs, micro_batches, rows_from_trajectories, token_logprobs
from turngym.trainers.sampling import informative_group_mask

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


def _fill_logprobs(model: torch.nn.Module, rows: Sequence[Row], pad_id: int, budget: int, device: torch.device, attr: str) -> None:
    """Set ``row.<attr>`` to the model's logprobs of each row's response tokens (no grad)."""
    with torch.no_grad():
        for idx in micro_batches([len(r) for r in rows], budget):
            batch_rows = [rows[i] for i in idx]
            batch = collate(batch_rows, pad_id, device)
            logp, _ = token_logprobs(model, batch)
            for b, row in enumerate(batch_rows):
                start = len(row.prompt_ids) - 1
                setattr(row, attr, logp[b, start : start + len(row.response_ids)].float().cpu().tolist())


def ppo_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rows: list[Row],
    config: TrainConfig,
    pad_id: int,
    device: torch.device,
    rng: np.random.Generator,
    ref_model: Any = None,
) -> dict[str, float]:
    """Recompute old (and reference) logprobs, then the PPO-clip update; returns mean metrics."""
    loss_cfg, optim = config.loss, config.optim
    model.eval()
    _fill_logprobs(model, rows, pad_id, optim.micro_batch_tokens, device, "old_logprobs")
    if loss_cfg.use_kl:
        ref_ctx = ref_model() if callable(ref_model) and not isinstance(ref_model, torch.nn.Module) else contextlib.nullcontext()
        with ref_ctx:
            _fill_logprobs(ref_model if isinstance(ref_model, torch.nn.Module) else model, rows, pad_id,
                           optim.micro_batch_tokens, device, "ref_logprobs")
    gap = collate(rows[:512], pad_id)  # the rollout/train gap, on at most 512 rows
    have_rollout = all(len(r.rollout_logprobs) == len(r.response_ids) for r in rows)
    metrics: dict[str, list[float]] = {}
    if have_rollout:
        for k, v in logprob_mismatch(gap["rollout_logp"], gap["old_logp"], gap["response_mask"]).items():
            metrics[f"rollout_train_gap_{k}"] = [v]

    model.train()
    for _epoch in range(optim.ppo_epochs):
        order = rng.permutation(len(rows))
        for mini in np.array_split(order, min(optim.mini_batches, len(rows))):
            mini_rows = [rows[i] for i in mini]
            total_tokens = sum(len(r.response_ids) for r in mini_rows)
            total_rows = len(mini_rows)
            cfg = loss_cfg
            if cfg.loss_agg == "seq-mean-token-sum-norm" and cfg.loss_agg_constant is None:
                cfg = cfg.model_copy(update={"loss_agg_constant": float(max(len(r.response_ids) for r in mini_rows))})
            optimizer.zero_grad(set_to_none=True)
            step_metrics: dict[str, float] = {}
            for idx in micro_batches([len(r) for r in mini_rows], optim.micro_batch_tokens):
                batch_rows = [mini_rows[i] for i in idx]
                batch = collate(batch_rows, pad_id, device)
                logp, entropy = token_logprobs(model, batch, with_entropy=True)  # entropy is always logged
                loss, m = policy_loss(logp, batch["old_logp"], batch["advantages"], batch["response_mask"], cfg,
                                      ref_logp=batch["ref_logp"] if cfg.use_kl else None, entropy=entropy)
                # each micro-batch's mean re-weighted to its share of the mini-batch
                if cfg.loss_agg == "token-mean":
                    weight = sum(len(r.response_ids) for r in batch_rows) / total_tokens
                elif cfg.loss_agg == "seq-mean-token-sum-norm":
                    weight = 1.0 if cfg.loss_agg_constant else len(batch_rows) / total_rows
                else:
                    weight = len(batch_rows) / total_rows
                (loss * weight).backward()
                for k, v in m.items():
                    step_metrics[k] = step_metrics.get(k, 0.0) + v * weight
            if optim.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], optim.grad_clip)
                step_metrics["grad_norm"] = float(norm)
            optimizer.step()
            for k, v in step_metrics.items():
                metrics.setdefault(k, []).append(v)
    model.eval()
    return {f"train/{k}": float(np.mean(v)) for k, v in metrics.items()}


class Trainer:
    """Runs a :class:`~turngym.trainers.config.TrainConfig`; see the module docstring."""

    def __init__(self, config: TrainConfig, resume: bool = False, model: Any = None, tokenizer: Any = None) -> None:
        from turngym.agents.hf import HFPolicy
        from turngym.agents.models import load_model
        from turngym.envs import make

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # checkpoint writes are not long work worth a bar
        self.config = cfg = config
        self.run_dir = Path(cfg.run.out_dir)
        if not resume and ((self.run_dir / "metrics.jsonl").exists() or (self.run_dir / "checkpoints").exists()):
            raise FileExistsError(f"{self.run_dir} already holds a run: continue it with --resume, or choose another --out")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resumed = resume
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True)
        if cfg.policy.torch_threads:
            torch.set_num_threads(cfg.policy.torch_threads)
        seed_everything(cfg.run.seed)
        self.device = resolve_device(cfg.policy.device)
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
        self.model, self.tokenizer = model, tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.policy = HFPolicy(model, tokenizer, max_batch_size=cfg.policy.max_batch_size)
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                           lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        probe = make(cfg.env.id, **cfg.env.kwargs)
        self.train_tasks = [t.id for t in probe.unwrapped.suite.split(cfg.env.train_split)]
        probe.close()
        env: Any = cfg.env.id
        self.env_pool = None
        if cfg.rollout.backend != "thread":
            from turngym.agents.ray_pool import make_env_pool

            self.env_pool = env = make_env_pool(cfg.rollout.backend, cfg.env.id, cfg.rollout, cfg.env.kwargs,
                                                num_actors=cfg.rollout.ray_actors,
                                                num_cpus_per_actor=cfg.rollout.ray_cpus_per_actor,
                                                address=cfg.rollout.ray_address)
        self.engine = RolloutEngine(self.policy, env, tokenizer, cfg.rollout, env_kwargs=cfg.env.kwargs)
        self.np_rng = np.random.default_rng(cfg.run.seed)
        self.step = 0
        self.cursor = 0
        self.history: list[dict[str, float]] = []
        if resume:
            ckpt = latest_checkpoint(self.run_dir)
            if ckpt is None:
                raise FileNotFoundError(f"no checkpoint to resume from in {self.run_dir / 'checkpoints'}")
            state = load_checkpoint(ckpt, self.model, self.optimizer, self.np_rng)
            self.step, self.cursor = state["step"], state["cursor"]
            log.info("resumed from %s at step %d", ckpt, self.step)
        self.logger = MetricsLogger(self.run_dir, tensorboard=cfg.run.tensorboard, wandb=cfg.run.wandb,
                                    config=cfg.model_dump(mode="json"))

    # -- data -----------------------------------------------------------------------------------
    def next_tasks(self, n: int) -> list[str]:
        """The next ``n`` train tasks: epoch e walks a permutation seeded by (seed, e)."""
        out = []
        for _ in range(n):
            epoch, pos = divmod(self.cursor, len(self.train_tasks))
            order = np.random.default_rng([self.config.run.seed, epoch]).permutation(len(self.train_tasks))
            out.append(self.train_tasks[order[pos]])
            self.cursor += 1
        return out

    # -- one step -----------------------------------------------------------------------------------
    def collect(self) -> tuple[list[Trajectory], dict[str, float]]:
        cfg = self.config
        tasks = self.next_tasks(cfg.run.tasks_per_step)
        rounds = cfg.run.max_refill_rounds + 1 if cfg.run.dynamic_sampling else 1
        trajs = self.engine.run(tasks, run_index=self.step * rounds)
        all_trajs = list(trajs)
        kept = [t for t in trajs if t.status != "error"]
        metrics: dict[str, float] = {}
        if cfg.run.dynamic_sampling:
            kept = self._drop_flat_groups(kept)
            refill = 1
            while len({t.group_id for t in kept}) < cfg.run.tasks_per_step and refill < rounds:
                need = cfg.run.tasks_per_step - len({t.group_id for t in kept})
                extra = self.engine.run(self.next_tasks(need), run_index=self.step * rounds + refill)
                all_trajs += extra
                kept += self._drop_flat_groups([t for t in extra if t.status != "error"])
                refill += 1
            metrics["rollout/refill_rounds"] = refill - 1
        stats = rollout_stats(all_trajs)
        metrics.update({
            "rollout/reward_mean": stats["mean_reward"],
            "rollout/success_rate": stats["success_rate"],
            "rollout/episodes": stats["episodes"],
            "rollout/error_episodes": stats["error"],
            "rollout/turns_mean": stats["turns"] / max(stats["episodes"], 1),
            "rollout/invalid_rate": float(np.mean([not u.action_valid for t in kept for u in t.turns])) if kept else 0.0,
        })
        return kept, metrics

    def _drop_flat_groups(self, trajs: list[Trajectory]) -> list[Trajectory]:
        keep = informative_group_mask([t.total_reward for t in trajs], [t.group_id for t in trajs])
        return [t for t, k in zip(trajs, keep) if k]

    def advantages(self, trajs: Sequence[Trajectory]) -> np.ndarray:
        inputs = estimator_inputs(trajs)
        return estimate(self.config.estimator.name, inputs["rewards"], inputs["group_ids"], inputs["traj_ids"],
                        inputs["steps"], anchors=inputs["anchors"], strata=inputs["strata"],
                        **self.config.estimator.options)

    def train_step(self) -> dict[str, float]:
        start = time.perf_counter()
        trajs, metrics = self.collect()
        rollout_s = time.perf_counter() - start
        if trajs:
            adv = self.advantages(trajs)
            i = 0
            for t in trajs:  # shown by the trajectory viewer
                for turn in t.turns:
                    turn.advantage = float(adv[i])
                    i += 1
            rows = rows_from_trajectories(trajs, adv)
            rows = [r for r in rows if r.advantage != 0.0]  # a zero advantage has no gradient
            metrics["train/rows"] = len(rows)
            metrics["train/advantage_abs_mean"] = float(np.mean(np.abs(adv))) if len(adv) else 0.0
            if rows:
                metrics.update(ppo_update(self.model, self.optimizer, rows, self.config, self.pad_id, self.device,
                                          self.np_rng, self.ref_model))
            self.policy.sync_weights(self.model.state_dict())
        self.last_trajectories = trajs
        metrics["time/rollout_s"] = rollout_s
        metrics["time/step_s"] = time.perf_counter() - start
        self.step += 1
        return metrics

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, label: str | None = None) -> dict[str, float]:
        """Held-out evaluation with the same code and files as ``turngym eval``."""
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
        if n > 0 and getattr(self, "last_trajectories", None):
            write_jsonl(self.last_trajectories[:n], self.run_dir / "samples" / f"step-{self.step:06d}.jsonl")

    # -- the loop -----------------------------------------------------------------------------------
    def save(self) -> Path:
        return save_checkpoint(self.run_dir, self.step, self.model, self.optimizer,
                               {"cursor": self.cursor}, self.np_rng, self.tokenizer, keep=self.config.run.keep_checkpoints)

    def warm_start(self) -> dict[str, float]:
        """Supervised warm start on the environment's expert demonstrations (``sft`` section)."""
        from turngym.trainers.sft import collect_demonstrations, sft

        cfg = self.config
        rng = np.random.default_rng([cfg.run.seed, 7919])
        tasks = [self.train_tasks[i] for i in rng.integers(len(self.train_tasks), size=cfg.sft.episodes)]
        agent_cfg = cfg.rollout  # the rollout config carries the agent's memory settings
        rows = collect_demonstrations(cfg.env.id, tasks, self.tokenizer, agent_cfg, cfg.env.kwargs, seed=cfg.run.seed)
        return sft(self.model, self.tokenizer, rows, lr=cfg.sft.lr, epochs=cfg.sft.epochs, batch_rows=cfg.sft.batch_rows,
                   micro_batch_tokens=cfg.optim.micro_batch_tokens, seed=cfg.run.seed, max_seconds=cfg.sft.max_seconds)

    def train(self) -> dict[str, Any]:
        cfg = self.config
        summary: dict[str, Any] = {}
        if self.step == 0 and not self.resumed:  # a run resumed at step 0 has had its warm start
            before = self.evaluate("before-sft" if cfg.sft.enabled else "step-000000")
            summary["eval_before"] = before["eval/success_rate"]
            if not cfg.sft.enabled:
                self.logger.log(0, before)
            else:
                # the RL curve starts from the warm start: its evaluation is step 0's `eval/*`
                sft_metrics = self.warm_start()
                after_sft = self.evaluate("step-000000")
                self.logger.log(0, {**sft_metrics, **after_sft, **{f"pre_sft_{k}": v for k, v in before.items()}})
                summary["eval_after_sft"] = after_sft["eval/success_rate"]
                summary.update(sft_metrics)
                self.save()
        bar = tqdm(total=cfg.run.steps, initial=self.step, desc="train", unit="step", disable=None)  # None: off when not a terminal
        while self.step < cfg.run.steps:
            metrics = self.train_step()
            if cfg.run.eval_every and self.step % cfg.run.eval_every == 0 and self.step < cfg.run.steps:
                metrics.update(self.evaluate())
                self.save_samples()
            self.logger.log(self.step, metrics)
            bar.set_postfix(reward=f"{metrics.get('rollout/reward_mean', 0):.2f}",
                            success=f"{metrics.get('rollout/success_rate', 0):.2f}")
            bar.update(1)
            if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0:
                self.save()
        bar.close()
        final = self.evaluate()
        self.save_samples()
        self.logger.log(self.step, final)
        summary["eval_after"] = final["eval/success_rate"]
        self.save()
        self.logger.close()
        if self.env_pool is not None:
            self.env_pool.close()
        records = read_metrics(self.logger.path)
        summary["plot"] = str(plot_metrics(records, self.run_dir / "curves.png", title=f"{cfg.env.id} · {cfg.estimator.name}"))
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
