"""Training rows: one row per turn, packed trajectories, and length-bucketed micro-batches.

Each turn is a policy step (docs/algorithms.md, section 0): a row is that turn's exact prompt ids
(the context the agent saw) and the response ids the policy produced, with the turn's
advantage broadcast to every response token. Rows are made from the step's turn table
(:func:`rows_from_table`, ``turngym.trainers.turns``), in its order.

Packing: where a turn's prompt + response ids are a token prefix of a later turn's prompt
(token-in/token-out prompts with full-history memory), the model computes the same logprobs
for that turn's response tokens inside the later sequence, so :func:`pack_rows` joins such
turns into one :class:`Packed` sequence (the longest turn's prompt + response) and the model
runs over a trajectory once instead of once per turn. Each turn keeps its own advantage,
old/rollout/reference logprobs and clipping: :func:`collate_packed` lays the packed forward
pass's logprobs back out one row per turn (:func:`per_turn`), so the loss, its aggregation
and its metrics see exactly the per-turn rows. Turns whose prompts are not prefixes (windowed
memory) stay sequences of their own.

Sequences are grouped into micro-batches by length so a short one never pays for a long one:
sort by length, then fill each micro-batch while its padded size (sequences x longest) stays
within a token budget.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from turngym.agents.kv_cache import planless_attention
from turngym.agents.trajectory import Trajectory
from turngym.trainers.turns import TurnTable

__all__ = [
    "Packed",
    "Row",
    "collate",
    "collate_packed",
    "estimator_inputs",
    "micro_batches",
    "pack_rows",
    "per_turn",
    "rows_from_table",
    "rows_from_trajectories",
    "share_prompts",
    "takes_branch_masks",
    "token_logprobs",
]


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


def rows_from_table(table: TurnTable, advantages: Sequence[float] | np.ndarray, drop_zero: bool = False) -> list[Row]:
    """One row per turn of ``table`` that has a response, in table order, with ``advantages[i]``
    (one per turn of the table). ``drop_zero`` also leaves out turns whose advantage is 0 (they
    have no gradient). The rows share the table's id and logprob lists (nothing mutates them)."""
    advantages = np.asarray(advantages, dtype=np.float64)
    if len(advantages) != len(table):
        raise ValueError(f"{len(advantages)} advantages for {len(table)} turns")
    keep = table.response_lengths > 0
    if drop_zero:
        keep &= advantages != 0.0
    return [Row(table.prompt_ids[i], table.response_ids[i], float(advantages[i]), table.logprobs[i],
                group_id=table.group_ids[i], traj_id=table.traj_ids[i], task_id=table.task_ids[i])
            for i in np.flatnonzero(keep).tolist()]


def estimator_inputs(trajectories: Sequence[Trajectory]) -> dict[str, Any]:
    """The per-turn columns ``turngym.trainers.estimators.estimate_columns`` takes, in turn order
    (:meth:`TurnTable.estimator_columns`)."""
    return TurnTable.from_trajectories(trajectories).estimator_columns()


def rows_from_trajectories(trajectories: Sequence[Trajectory], advantages: Sequence[float]) -> list[Row]:
    """One row per turn, in the order of :func:`estimator_inputs`; turns with no response are skipped."""
    return rows_from_table(TurnTable.from_trajectories(trajectories), advantages)


@dataclass
class Packed:
    """One training sequence: ``ids`` and the turns trained on it. Each row's prompt + response
    is a prefix of ``ids``, so its response tokens sit at ``len(row.prompt_ids)`` onwards.

    A sequence made by :func:`share_prompts` holds several sequences that start with the same
    prompt: ``ids`` is that prompt once, then each one's rest (a *branch*) in turn;
    ``branches`` gives each branch's (start, end) in ``ids`` and ``shifts[i]`` how far row i's
    tokens moved (its response starts at ``len(row.prompt_ids) + shifts[i]``). A branch's
    tokens see the shared prompt and their own branch only, at the positions they had alone.
    """

    ids: list[int]
    rows: list[Row]
    branches: list[tuple[int, int]] = field(default_factory=list)
    shifts: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def shift(self, i: int) -> int:
        return self.shifts[i] if self.shifts else 0


def share_prompts(packs: Sequence[Packed], budget: int) -> list[Packed]:
    """Sequences whose first turns have the same prompt (a group's samples of one task; with
    windowed memory, turns that saw the same observation) joined into one sequence that holds
    the prompt once (:class:`Packed`), up to ``budget`` tokens each.

    Only where it saves work: the shared prompt must be at least as long as the sequences'
    average rest. Each branch attends to the whole prompt and to itself, so a joined sequence
    of k branches has ~k times one sequence's attention; where the prompt is the larger part
    (single-turn groups: a 42-token prompt, 23-token replies) the tokens saved outweigh that,
    and multi-turn trajectories whose later turns dwarf the first prompt stay as they are.
    Sequences already joined, or without a shared prompt, pass through unchanged."""
    by_prompt: dict[tuple[int, ...], list[Packed]] = {}
    for pack in packs:
        if not pack.branches:
            by_prompt.setdefault(tuple(pack.rows[0].prompt_ids), []).append(pack)
    out = [pack for pack in packs if pack.branches]
    for prompt, members in by_prompt.items():
        rests = [len(m) - len(prompt) for m in members]
        if len(members) < 2 or len(prompt) < sum(rests) / len(rests):
            out += members
            continue
        chunk: list[Packed] = []
        length = len(prompt)  # of the joined sequence so far
        for member, rest in zip(members, rests):
            if chunk and length + rest > budget:
                out.append(_joined(list(prompt), chunk))
                chunk, length = [], len(prompt)
            chunk.append(member)
            length += rest
        out.append(_joined(list(prompt), chunk))
    return out


def _joined(prompt: list[int], members: list[Packed]) -> Packed:
    if len(members) == 1:
        return members[0]
    ids, rows, branches, shifts = list(prompt), [], [], []
    for member in members:
        start = len(ids)
        ids += member.ids[len(prompt):]
        branches.append((start, len(ids)))
        rows += member.rows
        shifts += [start - len(prompt)] * len(member.rows)
    return Packed(ids, rows, branches, shifts)


def pack_rows(rows: Sequence[Row], pack: bool = True) -> list[Packed]:
    """Rows joined into sequences: within each trajectory (``traj_id``), in prompt-length order,
    a row whose prompt starts with the current sequence (the last joined row's prompt +
    response) extends it; any other row starts a new one. ``pack=False``: one sequence per row.
    Every row is in exactly one sequence."""
    if not pack:
        return [Packed(row.prompt_ids + row.response_ids, [row]) for row in rows]
    by_traj: dict[str, list[Row]] = {}
    for row in rows:
        by_traj.setdefault(row.traj_id, []).append(row)
    packs: list[Packed] = []
    for turns in by_traj.values():
        current: Packed | None = None
        for row in sorted(turns, key=lambda r: len(r.prompt_ids)):
            n = len(current.ids) if current is not None else 0
            if current is not None and len(row.prompt_ids) >= n and row.prompt_ids[:n] == current.ids:
                current.ids = row.prompt_ids + row.response_ids
                current.rows.append(row)
            else:
                current = Packed(row.prompt_ids + row.response_ids, [row])
                packs.append(current)
    return packs


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


def collate_packed(packs: Sequence[Packed], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-padded tensors for a micro-batch of sequences, and the per-turn layout of the loss.

    Per sequence (``[P, W]`` and ``[P, W-1]``): ``input_ids``, ``attention_mask``, and
    ``response_mask`` marking positions whose *next* token is a response token (as in
    :func:`collate`). Per turn (``[N, R]``: N rows in sequence order, R the longest response):
    ``turn_index`` (where each response token's logprob is in the flattened ``[P, W-1]``
    output of :func:`token_logprobs`, see :func:`per_turn`), ``mask`` (1 on response tokens),
    ``advantages``, ``old_logp``, ``rollout_logp`` and ``ref_logp``.
    """
    width = max(len(p) for p in packs)
    rows = [row for p in packs for row in p.rows]
    longest = max(len(r.response_ids) for r in rows)
    input_ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(packs), width), dtype=torch.long)
    positions = torch.zeros((len(packs), width - 1), dtype=torch.float32)
    index = torch.zeros((len(rows), longest), dtype=torch.long)
    per_token = {key: torch.zeros((len(rows), longest), dtype=torch.float32)
                 for key in ("mask", "advantages", "old_logp", "rollout_logp", "ref_logp")}
    steps = torch.arange(longest)
    j = 0
    for p, pack in enumerate(packs):
        input_ids[p, : len(pack)] = torch.tensor(pack.ids, dtype=torch.long)
        attention[p, : len(pack)] = 1
        for i, row in enumerate(pack.rows):
            start, m = len(row.prompt_ids) - 1 + pack.shift(i), len(row.response_ids)
            positions[p, start : start + m] = 1.0
            index[j, :m] = p * (width - 1) + start + steps[:m]
            per_token["mask"][j, :m] = 1.0
            per_token["advantages"][j, :m] = row.advantage
            for src, key in ((row.old_logprobs, "old_logp"), (row.rollout_logprobs, "rollout_logp"),
                             (row.ref_logprobs, "ref_logp")):
                if len(src) == m:
                    per_token[key][j, :m] = torch.tensor(src, dtype=torch.float32)
            j += 1
    tensors = {"input_ids": input_ids, "attention_mask": attention, "response_mask": positions,
               "turn_index": index, **per_token}
    if any(pack.branches for pack in packs):
        tensors.update(_branch_layout(packs, width))
    return {k: v.to(device) for k, v in tensors.items()}


def _branch_layout(packs: Sequence[Packed], width: int) -> dict[str, torch.Tensor]:
    """For a micro-batch holding shared-prompt sequences: each token's ``position_ids`` (its
    position in its own sequence), a ``(P, 1, W, W)`` boolean ``branch_mask`` (a token sees
    the shared prompt and the earlier tokens of its own branch) and ``source_index`` (``[P,
    W-1]``: the position whose logits predict token t+1 — t itself, except that a branch's
    first token is predicted from the shared prompt's last position)."""
    position_ids = torch.arange(width).repeat(len(packs), 1)
    source = torch.arange(width - 1).repeat(len(packs), 1)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    branch = torch.zeros((len(packs), width), dtype=torch.long)  # 0: shared prompt (or no branches)
    for p, pack in enumerate(packs):
        prompt = pack.branches[0][0] if pack.branches else 0
        for b, (start, end) in enumerate(pack.branches, start=1):
            branch[p, start:end] = b
            position_ids[p, start:end] = torch.arange(prompt, prompt + end - start)
            source[p, start - 1] = prompt - 1
        branch[p, len(pack):] = -1  # padding sees only itself and the prompt: finite, never read
    sees = (branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :])
    return {"position_ids": position_ids, "branch_mask": (sees & causal)[:, None], "source_index": source}


def per_turn(values: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-position values (``[P, W-1]``, e.g. :func:`token_logprobs`) laid out one row per turn
    (``[N, R]``, aligned with ``batch["mask"]``; padding entries hold arbitrary values)."""
    return values.reshape(-1)[batch["turn_index"]]


def _inner_model(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)  # DDP / FSDP wrappers
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    return inner


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    return _forward_takes_logits_to_keep(type(_inner_model(model)))


def takes_branch_masks(model: torch.nn.Module) -> bool:
    """Whether ``model`` attends through torch's SDPA, which takes the boolean ``(P, 1, W, W)``
    masks of shared-prompt sequences as they are (eager attention adds its mask to the
    scores, flash attention takes none)."""
    config = getattr(_inner_model(model), "config", None)
    return getattr(config, "_attn_implementation", None) == "sdpa"


@functools.cache
def _forward_takes_logits_to_keep(model_class: type) -> bool:
    # per class, once: token_logprobs runs for every micro-batch
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def _right_padded(attention: torch.Tensor) -> bool:
    """Whether every row of the mask is ones, then zeros (the layout :func:`collate` makes)."""
    lengths = attention.sum(dim=1, keepdim=True)
    return bool((attention == (torch.arange(attention.shape[1], device=attention.device) < lengths)).all())


def token_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], with_entropy: bool = False, entropy_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-position logprob of the next token (``[B, L-1]``) and optionally the entropy of the
    next-token distribution, computed in fp32.

    Only positions from the batch's first response token on are projected through the LM head
    (``logits_to_keep``; the prompt's logits are never used), the rest are 0: with a real
    vocabulary the head and its log-softmax are most of a small model's cost. A right-padded
    batch (what :func:`collate` and :func:`collate_packed` make) runs without its attention mask:
    a causal model's real positions never attend to the padding after them. ``entropy_grad``
    False computes the entropy without an autograd graph (when it is only logged).
    """
    width = batch["input_ids"].shape[1]
    mask = batch.get("response_mask")
    source = batch.get("source_index")  # shared-prompt sequences (collate_packed)
    first = 0
    if mask is not None and bool(mask.any()) and _takes_logits_to_keep(model):
        first = int(mask.any(0).nonzero()[0])
        if source is not None:  # a branch's first token is predicted from the shared prompt's end
            first = min(first, int(source[mask > 0].min()))
    kwargs: dict[str, Any] = {"logits_to_keep": width - first} if first else {}
    attention: torch.Tensor | None = batch["attention_mask"]
    if source is not None:
        attention, kwargs["position_ids"] = batch["branch_mask"], batch["position_ids"]
    elif _right_padded(attention):
        # a causal model's real positions never attend to the padding after them, so the mask
        # changes nothing that is read; without one attention takes its fused causal path
        # instead of materialising a (L x L) mask per row (~3x faster on CPU at 3k tokens)
        attention = None
    # no cuDNN attention on CUDA: it builds a plan per new shape, and every micro-batch's width
    # differs (agents/kv_cache.py); the backward runs the kernel the forward chose
    with planless_attention(batch["input_ids"].device):
        logits = model(input_ids=batch["input_ids"], attention_mask=attention, **kwargs).logits
    targets = batch["input_ids"][:, first + 1 :]
    if source is None:
        logp_all = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    else:  # each target's logits row, without copying the (rows, positions, vocabulary) tensor
        logp_all = torch.log_softmax(logits.float(), dim=-1)
        rows = (source[:, first:] - first).clamp(min=0)
        logp = logp_all[torch.arange(len(rows), device=rows.device)[:, None], rows, targets]
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logp_all.exp() * logp_all).sum(-1)
            if source is not None:
                entropy = entropy.gather(1, rows)
    if first:
        pad = logp.new_zeros(logp.shape[0], first)
        logp = torch.cat([pad, logp], dim=1)
        entropy = torch.cat([pad, entropy], dim=1) if entropy is not None else None
    return logp, entropy
