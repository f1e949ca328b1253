"""Supervised warm start on an environment's expert demonstrations (``turngym sft``).

Environments with a solver implement ``TurnEnv.expert_reply()``. Demonstrations are recorded
through the same :class:`~turngym.agents.agent.Agent` the rollout engine uses, so each
demonstration turn's prompt ids are exactly what the model will see during RL; the loss is
cross-entropy on the reply tokens (plus the end-of-turn token) only. This is how agent
pipelines start RL from a model that already acts sensibly (docs/design.md, "Evidence").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from turngym.agents.agent import Agent, AgentConfig, EpisodeMemory, Exchange
from turngym.agents.progress import Progress
from turngym.agents.rollout import derive_seed
from turngym.envs.tasks import Task
from turngym.trainers.rows import Row, collate, micro_batches, token_logprobs

__all__ = ["NoExpertError", "collect_demonstrations", "misspell", "sft"]

log = logging.getLogger(__name__)


class NoExpertError(ValueError):
    """The environment has no solver (``expert_reply`` returns None)."""


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
    """One row per expert turn over the given tasks (ids or Task objects; prompt ids as the
    agent builds them).

    ``recovery_rate``: before each expert turn, with this probability, the environment first
    receives a misspelt copy of the expert's reply (:func:`misspell`; never trained on), so the
    expert's reply that follows is a demonstration of recovering from the environment's
    invalid-reply observation. Without these, a policy that samples one malformed reply during
    RL meets a prompt it never saw and tends to stay malformed for the rest of the episode.
    """
    from turngym.envs import make

    env = make(env_id, **(env_kwargs or {}))
    base = env.unwrapped
    agent = Agent(tokenizer, agent_config)
    tools = [t.schema() for t in getattr(base, "tools", [])]
    eos = tokenizer.eos_token_id
    rows: list[Row] = []
    try:
        for task in tasks:
            task_id = task.id if isinstance(task, Task) else task
            obs, info = env.reset(seed=derive_seed(seed, "sft", task_id), options={"task": task})
            memory = EpisodeMemory(instructions=getattr(base, "instructions", ""), tools=tools, task=obs)
            rng = np.random.default_rng(derive_seed(seed, "sft-recovery", task_id))
            for _ in range(max_turns):
                reply = base.expert_reply()
                if reply is None:
                    if not rows:
                        raise NoExpertError(f"{env_id} has no expert (its expert_reply() returns None)")
                    break
                if recovery_rate > 0 and rng.random() < recovery_rate:
                    wrong = misspell(reply, rng)
                    obs, reward, terminated, truncated, info = env.step(wrong)
                    memory.history.append(Exchange(action=wrong, observation=obs, tool_output=bool(info.get("tool_calls"))))
                    if terminated or truncated:
                        break
                    continue  # the expert answers the observation the misspelling produced
                prompt = agent.build(memory)
                response = list(tokenizer(reply, add_special_tokens=False)["input_ids"]) + ([eos] if eos is not None else [])
                rows.append(Row(prompt_ids=list(prompt.ids or []), response_ids=response, task_id=task_id))
                obs, reward, terminated, truncated, info = env.step(reply)
                memory.history.append(Exchange(action=reply, observation=obs, tool_output=bool(info.get("tool_calls"))))
                if terminated or truncated:
                    break
    finally:
        env.close()
    return rows


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
) -> dict[str, float]:
    """Cross-entropy on the response tokens of ``rows``: ``steps`` optimizer steps of
    ``batch_rows`` rows (default: ``epochs`` passes), each pass over a fresh seeded permutation.
    Returns the mean loss of the last pass (or of the steps since the last pass began).

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
    while steps_done < total_steps:
        first = (steps_done % per_pass) * batch_rows
        if first == 0:  # a new pass over the demonstrations
            order, losses = rng.permutation(len(rows)), []
        batch = [rows[i] for i in order[first : first + batch_rows]]
        losses.append(_sft_step(model, optimizer, params, batch, pad, micro_batch_tokens, device))
        steps_done += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if max_seconds is not None and time.perf_counter() - start > max_seconds and steps_done < total_steps:
            log.warning("warm start stopped by sft.max_seconds=%s after %d of %d steps: this run now depends on "
                        "the machine's speed, not only on its seed", max_seconds, steps_done, total_steps)
            break
    bar.close()
    model.eval()
    return {"sft/loss": float(np.mean(losses)) if losses else float("nan"), "sft/steps": steps_done,
            "sft/seconds": time.perf_counter() - start, "sft/rows": len(rows)}


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
