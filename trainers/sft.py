"""Supervised warm start on an environment's expert demonstrations (``turngym sft``).

Environments with a solver implement ``TurnEnv.expert_reply()``. Demonstrations are recorded
through the same :class:`~turngym.agents.agent.Agent` the rollout engine uses, so each
demonstration turn's prompt ids are exactly what the model will see during RL; the loss is
cross-entropy on the reply tokens (plus the end-of-turn token) only. This is how agent
pipelines start RL from a model that already acts sensibly (docs/design.md, "Evidence").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from turngym.agents.agent import Agent, AgentConfig, EpisodeMemory, Exchange
from turngym.agents.rollout import derive_seed
from turngym.trainers.rows import Row, collate, micro_batches, token_logprobs

__all__ = ["NoExpertError", "collect_demonstrations", "sft"]


class NoExpertError(ValueError):
    """The environment has no solver (``expert_reply`` returns None)."""


def collect_demonstrations(
    env_id: str,
    task_ids: Sequence[str],
    tokenizer: Any,
    agent_config: AgentConfig,
    env_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    max_turns: int = 100,
) -> list[Row]:
    """One row per expert turn over the given tasks (prompt ids as the agent builds them)."""
    from turngym.envs import make

    env = make(env_id, **(env_kwargs or {}))
    base = env.unwrapped
    agent = Agent(tokenizer, agent_config)
    tools = [t.schema() for t in getattr(base, "tools", [])]
    eos = tokenizer.eos_token_id
    rows: list[Row] = []
    try:
        for task_id in task_ids:
            obs, info = env.reset(seed=derive_seed(seed, "sft", task_id), options={"task": task_id})
            memory = EpisodeMemory(instructions=getattr(base, "instructions", ""), tools=tools, task=obs)
            for _ in range(max_turns):
                reply = base.expert_reply()
                if reply is None:
                    if not rows:
                        raise NoExpertError(f"{env_id} has no expert (its expert_reply() returns None)")
                    break
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
) -> dict[str, float]:
    """Cross-entropy on the response tokens of ``rows``; returns the last epoch's mean loss."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    model.train()
    losses: list[float] = []
    steps_done = 0
    total_steps = epochs * max(1, -(-len(rows) // batch_rows))
    bar = tqdm(total=total_steps, desc="sft", unit="step", disable=None if progress else True)  # None: off when not a terminal
    stopped = False
    for _epoch in range(epochs):
        losses = []
        order = rng.permutation(len(rows))
        for first in range(0, len(rows), batch_rows):
            batch_idx = order[first : first + batch_rows]
            batch_rows_ = [rows[i] for i in batch_idx]
            tokens = sum(len(r.response_ids) for r in batch_rows_)
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for idx in micro_batches([len(r) for r in batch_rows_], micro_batch_tokens):
                batch = collate([batch_rows_[i] for i in idx], pad, device)
                logp, _ = token_logprobs(model, batch)
                loss = -(logp * batch["response_mask"]).sum() / tokens
                loss.backward()
                total += loss.item()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(total)
            steps_done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{total:.3f}")
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                stopped = True
                break
        if stopped:
            break
    bar.close()
    model.eval()
    return {"sft/loss": float(np.mean(losses)) if losses else float("nan"), "sft/steps": steps_done,
            "sft/seconds": time.perf_counter() - start, "sft/rows": len(rows)}
