"""The per-turn RL trainer: the loop. Rollouts -> advantages -> one row per turn -> PPO-clip update.

One training step (:meth:`Trainer.train_step`):

1. The sampler (``turngym.trainers.samplers``) rolls out the step's tasks, ``rollout.group_size``
   times each, with the current weights: ``run.tasks_per_step`` tasks from a data cursor, with
   DAPO's dynamic sampling (``run.dynamic_sampling``) or MT-GRPO's family balance
   (``multitask.key``), optionally one step ahead in a thread (``run.async_rollouts``).
   Episodes that errored are counted and kept out of training.
2. The step's turns become one table of columns (``turngym.trainers.turns.TurnTable``), and the
   estimator named in the config turns its rewards (+ anchors, strata, and any column its
   signature names) into one advantage per turn (``turngym.trainers.estimators``).
3. Each turn with a response and a non-zero advantage becomes a training row, made from the same
   table: its exact prompt ids and response ids, its advantage on every response token; turns
   whose prompt extends an earlier turn's prompt + response (full-history memory) are packed
   into one sequence per trajectory (``turngym.trainers.rows``).
4. The PPO-clip update over length-bucketed micro-batches with gradient accumulation
   (``turngym.trainers.update``), normalised over the whole mini-batch (over every rank's rows
   under a multi-process launch, ``turngym.trainers.distributed``).
5. The in-process policy shares the model object, so new weights are live at once
   (``policy.sync_weights`` for backends that hold their own copy).

Every ``run.eval_every`` steps the held-out split is evaluated with the same code as
``turngym eval`` (files in ``out_dir/eval/step-N``); every ``run.checkpoint_every`` steps a
checkpoint is written atomically, and ``resume=True`` continues from the latest one exactly.
What a run is made of, and how, is ``turngym.trainers.build.build_run``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from turngym.agents.progress import Progress
from turngym.agents.trajectory import Trajectory, write_jsonl
from turngym.envs.tasks import Task
from turngym.trainers.build import build_run, resolve_device, seed_everything
from turngym.trainers.checkpoint import save_checkpoint
from turngym.trainers.config import TrainConfig
from turngym.trainers.distributed import generation_context
from turngym.trainers.estimators import estimate_columns
from turngym.trainers.generalization import memorisation_warning, window_mean
from turngym.trainers.metrics import plot_metrics, read_metrics
from turngym.trainers.rows import rows_from_table
from turngym.trainers.sampling import overlong_penalty
from turngym.trainers.schedules import lr_at
from turngym.trainers.turns import TurnTable
from turngym.trainers.update import ppo_update

__all__ = ["Trainer", "resolve_device", "ppo_update", "seed_everything"]

log = logging.getLogger(__name__)


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


def _postfix(metrics: dict[str, float]) -> dict[str, str]:
    """The progress bar's numbers: training reward and success, held-out success when evaluated."""
    postfix = {"reward": f"{metrics.get('rollout/reward_mean', 0):.2f}",
               "train_success": f"{metrics.get('rollout/success_rate', 0):.2f}"}
    if "eval/success_rate" in metrics:
        postfix["held_out"] = f"{metrics['eval/success_rate']:.2f}"
    return postfix


class Trainer:
    """Runs a :class:`~turngym.trainers.config.TrainConfig`; see the module docstring.

    The run's parts (``build_run``) are attributes: ``model`` (bare), ``train_model`` (what the
    update runs through), ``optimizer``, ``ref_model``, ``tokenizer``, ``policy``, ``engine``,
    ``env_pool``, ``tasks``, ``sampler``, ``dist``, ``logger``; ``step`` counts updates.
    """

    def __init__(self, config: TrainConfig, resume: bool = False, model: Any = None, tokenizer: Any = None) -> None:
        run = build_run(config, resume, model, tokenizer)
        self.config, self.run_dir, self.dist, self.device = run.config, run.run_dir, run.dist, run.device
        self.model, self.train_model, self.optimizer, self.ref_model = run.model, run.train_model, run.optimizer, run.ref_model
        self.tokenizer, self.pad_id, self.policy, self.engine = run.tokenizer, run.pad_id, run.policy, run.engine
        self.env_pool, self.tasks, self.balancer, self.sampler = run.env_pool, run.tasks, run.balancer, run.sampler
        self.np_rng, self.step, self.resumed, self.logger = run.np_rng, run.step, run.resumed, run.logger
        self._cursor = run.cursor
        self.data_state = self.sampler.state_dict()
        """The data state of the batches trained on (the sampler may have run ahead)."""
        self.last_trajectories: list[Trajectory] = []

    # -- data -----------------------------------------------------------------------------------
    @property
    def cursor(self) -> int:
        """The data cursor: training tasks handed out so far (``turngym.trainers.data``)."""
        return self._cursor.position

    @property
    def trained_cursor(self) -> int:
        """The data cursor after the last batch trained on (what a checkpoint keeps)."""
        return int(self.data_state["cursor"])

    def next_tasks(self, n: int) -> list[Task]:
        """The next ``n`` training tasks; advances the data cursor."""
        return self._cursor.take(n)

    def collect(self, step: int | None = None) -> tuple[list[Trajectory], dict[str, float]]:
        """This rank's rollouts of a step from the sampler: (kept trajectories, metrics)."""
        batch = self.sampler.next_batch(self.step if step is None else step)
        return batch.trajectories, batch.metrics

    # -- one step -----------------------------------------------------------------------------------
    def advantages(self, table: TurnTable) -> np.ndarray:
        """One advantage per turn of ``table`` from the configured estimator; with
        ``run.overlong_cache_tokens``, DAPO's overlong shaping is added to each turn's reward."""
        columns = table.estimator_columns()
        cache = self.config.run.overlong_cache_tokens
        if cache:
            columns["rewards"] = columns["rewards"] + overlong_penalty(table.response_lengths,
                                                                       self.config.rollout.max_tokens, cache)
        return estimate_columns(self.config.estimator.name, columns, **self.config.estimator.options)

    def train_step(self) -> dict[str, float]:
        """Roll out, credit and update once; returns the step's metrics (every rank's mean)."""
        start = time.perf_counter()
        batch = self.sampler.next_batch(self.step)
        rollout_s = time.perf_counter() - start  # with async rollouts: the time spent waiting for them
        self.data_state = batch.state
        metrics = batch.metrics
        metrics.update(self._learn(batch.trajectories))
        self.sampler.after_update(self.step + 1, self.model)
        if batch.trajectories:  # a no-op for a policy that shares the model's weights
            self.policy.sync_weights(self.model.state_dict())
        self.last_trajectories = batch.trajectories
        metrics["time/rollout_s"] = rollout_s
        metrics["time/step_s"] = time.perf_counter() - start
        metrics = self.dist.mean_metrics(metrics)
        if "train/rows" in metrics:
            metrics["train/rows"] *= self.dist.world_size  # rows over all ranks, not per rank
        self.step += 1
        return metrics

    def _learn(self, trajs: list[Trajectory]) -> dict[str, float]:
        """Advantages for the step's turns, the rows worth training on, the update."""
        adv, rows = np.zeros(0), []
        if trajs:
            table = TurnTable.from_trajectories(trajs)
            adv = self.advantages(table)
            table.write_advantages(adv)  # shown by the trajectory viewer
            rows = rows_from_table(table, adv, drop_zero=True)  # a zero advantage has no gradient
        metrics: dict[str, float] = {"train/rows": len(rows),
                                     "train/advantage_abs_mean": float(np.mean(np.abs(adv))) if len(adv) else 0.0}
        optim = self.config.optim
        metrics["train/lr"] = lr_at(self.step, self.config.run.steps, optim.lr, optim.lr_schedule, optim.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = metrics["train/lr"]
        if rows or self.dist.world_size > 1:  # every rank joins the update's collectives
            metrics.update(ppo_update(self.train_model, self.optimizer, rows, self.config, self.pad_id, self.device,
                                      self.np_rng, self.ref_model, dist=self.dist,
                                      behaviour_logprobs=self._behaviour_logprobs()))
        return metrics

    def _behaviour_logprobs(self) -> str:
        """The update's old policy: the engine's logprobs when the sampler's rollouts are stale
        (asynchronous) or ``optim.old_logprobs`` asks for them, else recomputed."""
        stale = self.sampler.behaviour_logprobs == "rollout"
        return "rollout" if stale or self.config.optim.old_logprobs == "rollout" else "recompute"

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
                               dict(self.data_state), self.np_rng, self.tokenizer, keep=self.config.run.keep_checkpoints,
                               rank=self.dist.rank, world_size=self.dist.world_size, barrier=self.dist.wait,
                               model_state=state, config=self.config)

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
                   steps=cfg.sft.steps, check=self._validation_check(), check_every=cfg.sft.check_every,
                   stop_at=cfg.sft.stop_at_success, check_from=cfg.sft.check_from,
                   stop_nearest=cfg.sft.stop_nearest)

    def _validation_check(self) -> Callable[[int], float] | None:
        """With ``sft.stop_at_success``: ``check(step) -> success``, one greedy episode (at
        ``run.eval_temperature``) on each of ``sft.check_tasks`` validation tasks, seeded by the
        task alone, so the check, and where the warm start stops, depend only on the run seed."""
        cfg = self.config
        if cfg.sft.stop_at_success is None:
            return None
        from turngym.agents.rollout import EpisodeSpec, RolloutEngine, derive_seed

        rollout = cfg.rollout.model_copy(update={"temperature": cfg.run.eval_temperature, "progress": False})
        engine = RolloutEngine(self.policy, cfg.env.id, self.tokenizer, rollout, env_kwargs=cfg.env.kwargs)
        specs = [EpisodeSpec(task=task, seed=derive_seed(cfg.run.seed, "sft-check", task.id), traj_id=f"{task.id}/0")
                 for task in self.tasks.validation(cfg.sft.check_tasks)]

        def check(step: int) -> float:
            trajectories = engine.run_episodes(specs)
            return sum(t.success for t in trajectories) / len(trajectories)

        return check

    def train(self) -> dict[str, Any]:
        """The whole run (warm start, steps, evaluations, checkpoints); returns its summary. What
        it logs also goes to ``out_dir/train.log`` (rank 0)."""
        with _run_log(self.run_dir / "train.log", self.dist.is_main):
            log.info("training on %s", self.tasks.describe())
            summary = self._start() if self.step == 0 and not self.resumed else {}  # a resumed run has had its start
            self._steps()
            return self._finish(summary)

    def _start(self) -> dict[str, Any]:
        """Step 0: the held-out evaluation, then the warm start and its evaluation when enabled
        (the RL curve starts from the warm start: its evaluation is step 0's ``eval/*``)."""
        cfg = self.config
        before = self.evaluate("before-sft" if cfg.sft.enabled else "step-000000")
        self._report("before training", before)
        summary = _success("eval_before", before)
        if not cfg.sft.enabled:
            self._log(0, before)
            return summary
        sft_metrics = self.warm_start()
        after_sft = self.evaluate("step-000000")
        self._report(f"after the warm start ({sft_metrics['sft/steps']:.0f} steps)", after_sft)
        self._log(0, {**sft_metrics, **after_sft, **{f"pre_sft_{k}": v for k, v in before.items()}})
        summary.update(_success("eval_after_sft", after_sft))
        summary.update(sft_metrics)
        self.save()
        return summary

    def _steps(self) -> None:
        """Train to ``run.steps``: each step logged, evaluated and checkpointed on schedule."""
        cfg = self.config
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
                bar.set_postfix(**_postfix(metrics))
                bar.update(1)
                if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
            self.sampler.close()

    def _finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """The final evaluation and checkpoint; the summary, curves and ``summary.json``."""
        cfg = self.config
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
