"""The PPO-clip update over a step's rows (``docs/algorithms.md`` section 1).

:func:`ppo_update` is the whole contract: it takes one row per turn (``turngym.trainers.rows``)
and makes ``optim.ppo_epochs`` passes over them, each pass split into ``optim.mini_batches``
optimizer steps. A mini-batch is packed into sequences (``pack_rows``), bucketed into
micro-batches within ``optim.micro_batch_tokens`` and its gradient accumulated over them: each
micro-batch's loss is weighted by the configured aggregation's own weighting
(:class:`~turngym.trainers.losses.Aggregation`), over every rank's rows under a multi-process
launch, so the step equals one pass over the whole mini-batch.

The old policy of the ratio: with one epoch and one mini-batch it *is* the model being updated,
so its logprobs are taken (detached) from the update's own forward pass; with
``behaviour_logprobs="rollout"`` they are the rollout engine's (asynchronous rollouts: the
importance ratio corrects the staleness; ``optim.old_logprobs: rollout``: no pass spent on
them); otherwise they are recomputed before the first pass. The gap to the rollout engine's
logprobs is logged either way (from the recompute pass, or from the first mini-batch's
forward, before its optimizer step). The reference logprobs are computed when KL is on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from turngym.trainers.config import TrainConfig
from turngym.trainers.distributed import Distributed, SingleProcess
from turngym.trainers.losses import (
    Aggregation,
    Counts,
    LossConfig,
    aggregation,
    logprob_mismatch,
    policy_loss,
)
from turngym.trainers.rows import (
    Packed,
    Row,
    collate,
    collate_packed,
    micro_batches,
    pack_rows,
    per_turn,
    share_prompts,
    takes_branch_masks,
    token_logprobs,
)

__all__ = ["ppo_update"]

#: The rollout/train logprob gap is measured on at most this many rows when it has its own pass.
GAP_ROWS = 512


def _padding_row(pad_id: int) -> Row:
    """A one-token row with zero weight: what a rank with nothing to train on feeds its model so
    that it still joins every collective its peers make (FSDP gathers, the gradient all-reduce)."""
    return Row([pad_id], [pad_id], 0.0, [0.0], old_logprobs=[0.0], ref_logprobs=[0.0])


def _padding_pack(pad_id: int) -> Packed:
    return Packed([pad_id, pad_id], [_padding_row(pad_id)])


def _sequences(model: torch.nn.Module, rows: Sequence[Row], config: TrainConfig, pack: bool) -> list[Packed]:
    """The sequences the model runs over: turns packed per trajectory (``pack``), then, with
    ``optim.share_prompts``, each group's shared first prompt computed once where that pays
    (``turngym.trainers.rows.share_prompts``)."""
    packs = pack_rows(rows, pack)
    if pack and config.optim.share_prompts and takes_branch_masks(model):
        packs = share_prompts(packs, config.optim.micro_batch_tokens)
    return packs


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


def _fill_reference(model: torch.nn.Module, ref_model: Any, packs: Sequence[Packed], pad_id: int, budget: int,
                    device: torch.device, dist: Distributed) -> None:
    """``row.ref_logprobs`` from ``ref_model``: a separate model, or a context manager factory
    under which ``model`` is the reference (a peft model's ``disable_adapter``)."""
    is_module = isinstance(ref_model, torch.nn.Module)
    context = ref_model() if callable(ref_model) and not is_module else contextlib.nullcontext()
    with context:
        _fill_logprobs(ref_model if is_module else model, packs, pad_id, budget, device, "ref_logprobs", dist)


@dataclass
class _Gap:
    """The rollout engine's logprobs against the training model's, over (tokens, metrics) parts."""

    parts: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    def add(self, tokens: float, rollout_logp: torch.Tensor, train_logp: torch.Tensor, mask: torch.Tensor) -> None:
        self.parts.append((tokens, logprob_mismatch(rollout_logp, train_logp, mask)))

    def metrics(self) -> dict[str, list[float]]:
        if not self.parts:
            return {}
        tokens = sum(t for t, _ in self.parts) or 1.0
        out = {"rollout_train_gap_abs_max": [max(g["abs_max"] for _, g in self.parts)]}
        for key in ("abs_mean", "k3"):
            out[f"rollout_train_gap_{key}"] = [sum(t * g[key] for t, g in self.parts) / tokens]
        return out


@dataclass
class _Update:
    """What every mini-batch of one :func:`ppo_update` call shares."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    pad_id: int
    device: torch.device
    dist: Distributed
    pack: bool
    agg: Aggregation
    old_from_forward: bool
    """Take the old logprobs from the update's own forward pass (one epoch, one mini-batch)."""
    gap: _Gap | None
    """Where to add the rollout/train gap measured in the forward pass; None: not measured there."""


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

    See the module docstring. ``dist`` spreads the update over ranks, each with its own rows
    (see ``turngym.trainers.distributed``); every rank must call this. ``pack`` (default): turns
    whose prompt extends an earlier turn's prompt + response are trained inside one sequence
    (``turngym.trainers.rows.pack_rows``), each with its own advantage, logprobs and clipping;
    the loss is the per-turn one up to float rounding. ``pack=False`` runs one sequence per turn.
    """
    dist = dist or SingleProcess()
    optim = config.optim
    n_mini = int(dist.max(min(optim.mini_batches, max(len(rows), 1))))
    single_pass = optim.ppo_epochs == 1 and n_mini == 1
    have_rollout = bool(rows) and all(len(r.rollout_logprobs) == len(r.response_ids) for r in rows)
    # the engine's logprobs as the old policy: decided over every rank (a recompute pass is collective)
    use_rollout = behaviour_logprobs == "rollout" and dist.max(float(bool(rows) and not have_rollout)) == 0
    gap = _Gap()
    model.eval()
    _before_update(model, rows, config, pad_id, device, ref_model, dist, pack,
                   recompute_old=not single_pass and not use_rollout)
    if have_rollout and not single_pass and not use_rollout:
        measured = collate(rows[:GAP_ROWS], pad_id)
        gap.add(1.0, measured["rollout_logp"], measured["old_logp"], measured["response_mask"])
    if use_rollout:
        for r in rows:
            r.old_logprobs = list(r.rollout_logprobs)
    # otherwise the gap is measured in the first mini-batch's forward, before any optimizer step
    update = _Update(model, optimizer, config, pad_id, device, dist, pack, aggregation(config.loss.loss_agg),
                     old_from_forward=single_pass and not use_rollout,
                     gap=gap if have_rollout and (single_pass or use_rollout) else None)
    metrics: dict[str, list[float]] = {}
    model.train()
    for _epoch in range(optim.ppo_epochs):
        order = rng.permutation(len(rows))
        for mini in np.array_split(order, n_mini):
            for k, v in _mini_batch_step(update, [rows[i] for i in mini]).items():
                metrics.setdefault(k, []).append(v)
            update.gap = None
    metrics.update(gap.metrics())
    model.eval()
    return {f"train/{k}": float(np.mean(v)) for k, v in metrics.items()}


def _before_update(model: torch.nn.Module, rows: list[Row], config: TrainConfig, pad_id: int, device: torch.device,
                   ref_model: Any, dist: Distributed, pack: bool, recompute_old: bool) -> None:
    """The old logprobs (when ``recompute_old``: neither the update's forward nor the rollout
    engine gives them) and the reference logprobs (when KL is on), each in one no-grad pass
    over the packed rows."""
    if not recompute_old and not config.loss.use_kl:
        return
    packs = _sequences(model, rows, config, pack)
    budget = config.optim.micro_batch_tokens
    if recompute_old:
        _fill_logprobs(model, packs, pad_id, budget, device, "old_logprobs", dist)
    if config.loss.use_kl:
        _fill_reference(model, ref_model, packs, pad_id, budget, device, dist)


def _mini_batch_step(update: _Update, rows: list[Row]) -> dict[str, float]:
    """One optimizer step over ``rows``: micro-batches, each weighted by the aggregation's
    share of the (global) mini-batch, gradients accumulated; returns the step's metrics."""
    dist, optim = update.dist, update.config.optim
    local = Counts(tokens=sum(len(r.response_ids) for r in rows), rows=len(rows))
    total = Counts(tokens=dist.sum(local.tokens), rows=dist.sum(local.rows))  # every rank's rows
    configured = update.config.loss
    constant = update.agg.mini_batch_constant(
        configured.loss_agg_constant, lambda: dist.max(max((len(r.response_ids) for r in rows), default=0)))
    loss_cfg = configured if constant == configured.loss_agg_constant else configured.model_copy(
        update={"loss_agg_constant": constant})
    update.optimizer.zero_grad(set_to_none=True)
    metrics: dict[str, float] = {}
    packs = _sequences(update.model, rows, update.config, update.pack)
    batches = _equal_micro_batches(packs, optim.micro_batch_tokens, dist)
    for b_index, idx in enumerate(batches):
        batch_packs = [packs[i] for i in idx]
        batch_rows = [row for p in batch_packs for row in p.rows]
        part = Counts(tokens=sum(len(r.response_ids) for r in batch_rows), rows=len(batch_rows))
        if batch_rows:
            weight, local_weight = update.agg.weight(part, total), update.agg.weight(part, local)
        else:  # this rank has fewer micro-batches than another: a zero-weight pass
            batch_packs, weight, local_weight = [_padding_pack(update.pad_id)], 0.0, 0.0
        last = b_index == len(batches) - 1
        for k, v in _micro_batch(update, batch_packs, loss_cfg, weight, last).items():
            metrics[k] = metrics.get(k, 0.0) + v * local_weight
    if optim.grad_clip > 0:
        metrics["grad_norm"] = dist.clip_grad_norm(update.model, optim.grad_clip)
    update.optimizer.step()
    return metrics


def _micro_batch(update: _Update, packs: list[Packed], loss_cfg: LossConfig, weight: float,
                 last: bool) -> dict[str, float]:
    """Forward and backward of one micro-batch, its loss scaled by ``weight``; gradients are
    synchronised across ranks only on the mini-batch's ``last`` micro-batch."""
    dist, model = update.dist, update.model
    batch = collate_packed(packs, update.pad_id, update.device)
    with (contextlib.nullcontext() if last else dist.no_sync(model)), dist.autocast():
        # entropy is always logged; it needs a graph only when it is in the loss
        logp, entropy = token_logprobs(model, batch, with_entropy=True, entropy_grad=loss_cfg.entropy_coef != 0)
        # one row per turn from here on: the loss never sees how turns were packed
        logp = per_turn(logp, batch)
        entropy = per_turn(entropy, batch) if entropy is not None else None
        mask = batch["mask"]
        if update.old_from_forward:
            batch["old_logp"] = logp.detach()
        if update.gap is not None and weight > 0:
            update.gap.add(float(mask.sum()), batch["rollout_logp"], logp.detach(), mask)
        loss, metrics = policy_loss(logp, batch["old_logp"], batch["advantages"], mask, loss_cfg,
                                    ref_logp=batch["ref_logp"] if loss_cfg.use_kl else None, entropy=entropy)
        dist.backward(loss * (weight * dist.backward_scale()))
    return metrics
