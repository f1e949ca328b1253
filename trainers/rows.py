"""Training rows: one row per turn, and length-bucketed micro-batches.

Each turn is a policy step (docs/algorithms.md, section 0): a row is that turn's exact prompt ids
(the context the agent saw) and the response ids the policy produced, with the turn's
advantage broadcast to every response token. Rows are grouped into micro-batches by length so
a short turn never pays for a long one: sort by length, then fill each micro-batch while its
padded size (rows x longest row) stays within a token budget.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from turngym.agents.trajectory import Trajectory

__all__ = ["Row", "estimator_inputs", "rows_from_trajectories", "micro_batches", "collate", "token_logprobs"]


@dataclass
class Row:
    prompt_ids: list[int]
    response_ids: list[int]
    advantage: float = 0.0
    rollout_logprobs: list[float] = field(default_factory=list)
    old_logprobs: list[float] = field(default_factory=list)
    """The old policy of the PPO ratio, set by ``ppo_update`` (the training model's logprobs, or
    the rollout engine's with asynchronous rollouts)."""
    ref_logprobs: list[float] = field(default_factory=list)
    group_id: str = ""
    traj_id: str = ""
    task_id: str = ""

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def estimator_inputs(trajectories: Sequence[Trajectory]) -> dict[str, Any]:
    """The per-turn arrays ``turngym.trainers.estimate`` takes, in turn order."""
    turns = [(t, turn) for t in trajectories for turn in t.turns]
    return {
        "rewards": np.array([turn.reward for _, turn in turns], dtype=np.float64),
        "group_ids": [t.group_id for t, _ in turns],
        "traj_ids": [t.traj_id for t, _ in turns],
        "steps": np.array([turn.step for _, turn in turns], dtype=np.int64),
        "anchors": [turn.anchor for _, turn in turns],
        "strata": [turn.stratum for _, turn in turns],
        "action_valid": np.array([turn.action_valid for _, turn in turns], dtype=bool),
    }


def rows_from_trajectories(trajectories: Sequence[Trajectory], advantages: Sequence[float]) -> list[Row]:
    """One row per turn, in the order of :func:`estimator_inputs`; turns with no response are skipped."""
    rows, i = [], 0
    for traj in trajectories:
        for turn in traj.turns:
            if turn.response_ids:
                rows.append(Row(list(turn.prompt_ids), list(turn.response_ids), float(advantages[i]),
                                list(turn.logprobs), group_id=traj.group_id, traj_id=traj.traj_id, task_id=traj.task_id))
            i += 1
    return rows


def micro_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped so that ``len(batch) * max(length in batch) <= max_tokens`` (a row longer
    than the budget gets a micro-batch of its own). Longest rows first."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for idx in order.tolist():
        length = int(lengths[idx])
        if current and (len(current) + 1) * max(longest, length) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(idx)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


def collate(rows: Sequence[Row], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-padded tensors for a micro-batch.

    ``response_mask[b, t]`` marks positions ``t`` whose *next* token is a response token, so
    ``token_logprobs(...)[b, t]`` is the logprob of that response token; per-token tensors
    (``advantages``, ``old_logp``, ``rollout_logp``, ``ref_logp``) use the same alignment.
    """
    width = max(len(r) for r in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width - 1), dtype=torch.float32)
    adv = torch.zeros((n, width - 1), dtype=torch.float32)
    old = torch.zeros((n, width - 1), dtype=torch.float32)
    rollout = torch.zeros((n, width - 1), dtype=torch.float32)
    ref = torch.zeros((n, width - 1), dtype=torch.float32)
    for b, row in enumerate(rows):
        seq = row.prompt_ids + row.response_ids
        input_ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[b, : len(seq)] = 1
        start, end = len(row.prompt_ids) - 1, len(seq) - 1
        mask[b, start:end] = 1.0
        adv[b, start:end] = row.advantage
        for src, dst in ((row.old_logprobs, old), (row.rollout_logprobs, rollout), (row.ref_logprobs, ref)):
            if len(src) == len(row.response_ids):
                dst[b, start:end] = torch.tensor(src, dtype=torch.float32)
    return {k: v.to(device) for k, v in {
        "input_ids": input_ids, "attention_mask": attention, "response_mask": mask,
        "advantages": adv, "old_logp": old, "rollout_logp": rollout, "ref_logp": ref,
    }.items()}


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    inner = getattr(model, "module", model)  # DDP / FSDP wrappers
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    return _forward_takes_logits_to_keep(type(inner))


@functools.cache
def _forward_takes_logits_to_keep(model_class: type) -> bool:
    # per class, once: token_logprobs runs for every micro-batch
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def token_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], with_entropy: bool = False, entropy_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-position logprob of the next token (``[B, L-1]``) and optionally the entropy of the
    next-token distribution, computed in fp32.

    Only positions from the batch's first response token on are projected through the LM head
    (``logits_to_keep``; the prompt's logits are never used), the rest are 0: with a real
    vocabulary the head and its log-softmax are most of a small model's cost. ``entropy_grad``
    False computes the entropy without an autograd graph (when it is only logged).
    """
    width = batch["input_ids"].shape[1]
    mask = batch.get("response_mask")
    first = 0
    if mask is not None and bool(mask.any()) and _takes_logits_to_keep(model):
        first = int(mask.any(0).nonzero()[0])
    kwargs = {"logits_to_keep": width - first} if first else {}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs).logits[:, :-1].float()
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, batch["input_ids"][:, first + 1 :].unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    if first:
        pad = logp.new_zeros(logp.shape[0], first)
        logp = torch.cat([pad, logp], dim=1)
        entropy = torch.cat([pad, entropy], dim=1) if entropy is not None else None
    return logp, entropy
