"""Supervised warm start on an environment's expert demonstrations (``turngym sft``).

Environments with a solver implement ``TurnEnv.expert_reply()``. The expert is a policy like
any other (:class:`~turngym.agents.scripted.EpisodePolicy`): its episodes run through the
rollout engine with the run's rollout settings, so each demonstration turn's prompt ids are
exactly what the model will see there during RL; the loss is cross-entropy on the reply tokens
(plus the end-of-turn token) only. This is how agent pipelines start RL from a model that
already acts sensibly (docs/design.md, "Evidence").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from turngym.agents.agent import AgentConfig
from turngym.agents.policy import EpisodeView
from turngym.agents.progress import Progress
from turngym.agents.rollout import EpisodeSpec, RolloutConfig, RolloutEngine, derive_seed
from turngym.agents.scripted import EpisodePolicy, NoExpertError, expert
from turngym.agents.trajectory import Trajectory
from turngym.envs.tasks import Task
from turngym.trainers.rows import Row, collate, micro_batches, token_logprobs

__all__ = ["NoExpertError", "collect_demonstrations", "misspell", "sft"]

log = logging.getLogger(__name__)


#: Demonstration episodes run at once (each holds an environment: a sandbox, a browser).
DEMO_BATCH = 64


def collect_demonstrations(
    env_id: str,
    tasks: Sequence[str | Task],
    tokenizer: Any,
    agent_config: AgentConfig,
    env_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    max_turns: int = 100,
    recovery_rate: float = 0.0,
) -> list[Row]:
    """One row per expert turn over the given tasks (ids or Task objects), in task order.

    The expert (:func:`turngym.agents.scripted.expert`) plays one episode per task through the
    rollout engine with ``agent_config`` (the run's rollout config: memory, window, prompt budget,
    tool-call style, and its environment deadlines and concurrency), so a row's prompt ids are
    the ones the engine builds for that turn during RL. A row's response is the expert's reply
    ids plus EOS. Task ``t`` resets with seed ``derive_seed(seed, "sft", t)``; an episode ends
    when the environment ends it, after ``max_turns`` turns (misspelt ones included), or when
    the expert has no reply. An episode whose environment fails is logged and keeps the rows it
    had. Raises :class:`NoExpertError` when the environment has no expert, or it never replied.

    ``recovery_rate``: before each expert turn, with this probability, the environment first
    receives a misspelt copy of the expert's reply (:func:`misspell`; never trained on), so the
    expert's reply that follows is a demonstration of recovering from the environment's
    invalid-reply observation. Without these, a policy that samples one malformed reply during
    RL meets a prompt it never saw and tends to stay malformed for the rest of the episode.
    """
    player = _RecoveringExpert(recovery_rate, seed)
    config = RolloutConfig.model_validate(
        {**agent_config.model_dump(), "group_size": 1, "max_turns": max_turns, "progress": False})
    engine = RolloutEngine(EpisodePolicy(player, tokenizer), env_id, tokenizer, config, env_kwargs=env_kwargs)
    rows: list[Row] = []
    for first in range(0, len(tasks), DEMO_BATCH):
        specs = [_demo_spec(task, seed, first + i) for i, task in enumerate(tasks[first : first + DEMO_BATCH])]
        for traj in engine.run_episodes(specs):
            rows += _demo_rows(traj, player.slips)
    if tasks and not rows:
        raise NoExpertError(f"{env_id}'s expert gave no demonstration (its expert_reply() returned None)")
    return rows


class _RecoveringExpert:
    """``act`` of the demonstrations: the environment's expert, whose reply is first misspelt
    with probability ``rate`` (a generator per episode, seeded by the run seed and the task).
    ``slips`` holds the ``(traj_id, turn)`` of the misspelt turns, which are never trained on."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate, self.seed = rate, seed
        self.slips: set[tuple[str, int]] = set()

    def __call__(self, view: EpisodeView) -> str | None:
        reply = expert(view)
        if reply is None or self.rate <= 0:
            return reply
        rng = view.state.get("rng")
        if rng is None:
            rng = view.state["rng"] = np.random.default_rng(derive_seed(self.seed, "sft-recovery", view.task_id))
        if rng.random() < self.rate:
            self.slips.add((view.traj_id, view.turn))
            return misspell(reply, rng)  # the expert answers the observation this produces next turn
        return reply


def _demo_spec(task: str | Task, seed: int, index: int) -> EpisodeSpec:
    task_id = task.id if isinstance(task, Task) else task
    return EpisodeSpec(task=task, seed=derive_seed(seed, "sft", task_id), traj_id=f"{task_id}/{index}")


def _demo_rows(traj: Trajectory, slips: set[tuple[str, int]]) -> list[Row]:
    """The expert turns of one demonstration episode as training rows (misspelt turns left out)."""
    if traj.status == "error":
        log.warning("demonstration %s ended with an environment error after %d turns: %s",
                    traj.traj_id, len(traj.turns), traj.error)
    return [Row(prompt_ids=list(turn.prompt_ids), response_ids=list(turn.response_ids), task_id=traj.task_id)
            for turn in traj.turns if (traj.traj_id, turn.step) not in slips]


def misspell(reply: str, rng: np.random.Generator) -> str:
    """``reply`` with one character deleted or replaced by another of its characters: the kind of
    slip sampling makes. (It may still be valid; the environment decides.)"""
    if not reply:
        return " "
    i = int(rng.integers(len(reply)))
    if rng.random() < 0.5 or len(set(reply)) < 2:
        return reply[:i] + reply[i + 1 :]
    other = rng.choice([c for c in sorted(set(reply)) if c != reply[i]])
    return reply[:i] + str(other) + reply[i + 1 :]


def sft(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: list[Row],
    lr: float = 1e-3,
    epochs: int = 3,
    batch_rows: int = 64,
    micro_batch_tokens: int = 8192,
    seed: int = 0,
    max_seconds: float | None = None,
    progress: bool = True,
    steps: int | None = None,
    check: Callable[[int], float] | None = None,
    check_every: int = 25,
    stop_at: float | None = None,
    check_from: int = 0,
    stop_nearest: bool = False,
) -> dict[str, float]:
    """Cross-entropy on the response tokens of ``rows``: ``steps`` optimizer steps of
    ``batch_rows`` rows (default: ``epochs`` passes), each pass over a fresh seeded permutation.
    Returns the mean loss of the last pass (or of the steps since the last pass began).

    ``check(step) -> success`` (e.g. greedy success on validation tasks), when given, runs every
    ``check_every`` steps from step ``check_from`` on (before the last) with the model in eval
    mode, and is logged; once it
    returns ``>= stop_at`` the warm start stops there. With ``stop_nearest`` it stops at whichever
    of that check and the one before it came nearer the target, keeping that check's weights (a
    curve that jumps past the target between two checks then ends below it rather than far
    above). A deterministic check keeps the run a function of its seed.

    ``max_seconds`` is a safety limit only: hitting it logs a warning, since the warm start then
    depends on the machine's speed and two identical commands would train different models.
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    per_pass = max(1, -(-len(rows) // batch_rows))
    total_steps = steps if steps is not None else epochs * per_pass
    model.train()
    losses: list[float] = []
    order = np.zeros(0, dtype=int)
    bar = Progress("warm start", total=total_steps, unit="step", disable=not progress)  # plain lines off a terminal
    steps_done = 0
    checked: list[float] = []
    check_seconds = 0.0
    previous: dict[str, torch.Tensor] | None = None
    while steps_done < total_steps:
        first = (steps_done % per_pass) * batch_rows
        if first == 0:  # a new pass over the demonstrations
            order, losses = rng.permutation(len(rows)), []
        batch = [rows[i] for i in order[first : first + batch_rows]]
        losses.append(_sft_step(model, optimizer, params, batch, pad, micro_batch_tokens, device))
        steps_done += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if check is not None and steps_done % check_every == 0 and check_from <= steps_done < total_steps:
            check_start = time.perf_counter()
            checked.append(_run_check(model, check, steps_done, total_steps))
            check_seconds += time.perf_counter() - check_start
            if stop_at is not None and checked[-1] >= stop_at:
                if stop_nearest and previous is not None and _previous_nearer(checked, stop_at):
                    model.load_state_dict(previous)
                    log.info("warm start stops at the check of step %d (validation success %.1f%%): nearer "
                             "sft.stop_at_success=%s than step %d's %.1f%%", steps_done - check_every,
                             100 * checked[-2], stop_at, steps_done, 100 * checked[-1])
                    steps_done -= check_every
                    checked.pop()
                else:
                    log.info("warm start stops after %d of %d steps: validation success %.1f%% >= "
                             "sft.stop_at_success=%s", steps_done, total_steps, 100 * checked[-1], stop_at)
                break
            if stop_nearest and stop_at is not None:  # this check's weights, in case the next one overshoots the target
                previous = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if max_seconds is not None and time.perf_counter() - start > max_seconds and steps_done < total_steps:
            log.warning("warm start stopped by sft.max_seconds=%s after %d of %d steps: this run now depends on "
                        "the machine's speed, not only on its seed", max_seconds, steps_done, total_steps)
            break
    bar.close()
    model.eval()
    metrics = {"sft/loss": float(np.mean(losses)) if losses else float("nan"), "sft/steps": steps_done,
               "sft/seconds": time.perf_counter() - start, "sft/rows": len(rows)}
    if checked:  # sft/seconds includes the checks' time
        metrics.update({"sft/validation_success": checked[-1], "sft/check_seconds": check_seconds})
    return metrics


def _previous_nearer(checked: list[float], target: float) -> bool:
    """Whether the check before the last fell short of ``target`` by less than the last one
    (which reached it) overshot it: ``stop_nearest`` then keeps the earlier check."""
    return len(checked) >= 2 and target - checked[-2] < checked[-1] - target


def _run_check(model: torch.nn.Module, check: Callable[[int], float], step: int, total_steps: int) -> float:
    """``check(step)`` with the model in eval mode (then back in train mode), logged."""
    model.eval()
    try:
        success = float(check(step))
    finally:
        model.train()
    log.info("warm start step %d/%d: validation success %.1f%%", step, total_steps, 100 * success)
    return success


def _sft_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
              rows: list[Row], pad: int, micro_batch_tokens: int, device: torch.device) -> float:
    """One optimizer step of token-mean cross-entropy over ``rows`` (micro-batched)."""
    tokens = sum(len(r.response_ids) for r in rows)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for idx in micro_batches([len(r) for r in rows], micro_batch_tokens):
        batch = collate([rows[i] for i in idx], pad, device)
        logp, _ = token_logprobs(model, batch)
        loss = -(logp * batch["response_mask"]).sum() / tokens
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return total
