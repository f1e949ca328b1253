"""Policy losses: PPO clipped surrogate (dual-clip, GSPO sequence ratios), KL, entropy, aggregation.

Formulas and defaults: ``docs/algorithms.md`` section 1 (and GSPO in section 2). All inputs
are ``(rows, tokens)`` tensors: ``logp``/``old_logp``/``ref_logp`` are the log-probabilities of
the sampled response tokens, ``mask`` is 1 on valid response tokens, ``advantages`` is one value
per row (broadcast to its tokens) or one per token.

    loss = agg(L_pg) - entropy_coef * agg(H) + kl_coef * agg(KL)

The pieces are pure functions (each tested on the worked numbers); :func:`policy_loss` wires
them together from a flat :class:`LossConfig`. Each aggregation mode is an :class:`Aggregation`
that also says how a micro-batch's loss is weighted inside its mini-batch's (what the update's
gradient accumulation uses), so a new mode brings its own weighting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AGGREGATIONS",
    "Aggregation",
    "Counts",
    "KL_ESTIMATORS",
    "LossConfig",
    "aggregate",
    "aggregation",
    "entropy_from_logits",
    "gspo_log_ratio",
    "kl_penalty",
    "logprob_mismatch",
    "policy_loss",
    "ppo_clip_loss",
]

#: Log-ratios are clamped before exp so that a wild token cannot overflow the ratio.
LOG_RATIO_CLAMP = 20.0
#: GSPO clamps its (token-form) sequence log-ratio from above at this value.
GSPO_LOG_RATIO_MAX = 10.0


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def _token_mean(values: torch.Tensor, mask: torch.Tensor, constant: float | None) -> torch.Tensor:
    # sum(M*L) / sum(M) over the whole mini-batch
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _valid_rows(mask: torch.Tensor) -> torch.Tensor:
    return (mask.sum(dim=-1) > 0).to(mask.dtype)


def _seq_mean_token_sum(
    values: torch.Tensor, mask: torch.Tensor, constant: float | None
) -> torch.Tensor:
    # (1/B') sum_i sum_t M*L, B' = rows with >= 1 valid token
    per_row = (values * mask).sum(dim=-1)
    return per_row.sum() / _valid_rows(mask).sum().clamp_min(1.0)


def _seq_mean_token_mean(
    values: torch.Tensor, mask: torch.Tensor, constant: float | None
) -> torch.Tensor:
    # (1/B') sum_i (sum_t M*L / sum_t M)
    tokens = mask.sum(dim=-1)
    per_row = (values * mask).sum(dim=-1) / tokens.clamp_min(1.0)
    return per_row.sum() / _valid_rows(mask).sum().clamp_min(1.0)


def _seq_mean_token_sum_norm(
    values: torch.Tensor, mask: torch.Tensor, constant: float | None
) -> torch.Tensor:
    # Dr. GRPO: sum(M*L) / C, C = max response length (the padded width when not given)
    c = float(mask.shape[-1]) if constant is None else float(constant)
    return (values * mask).sum() / c


@dataclass(frozen=True)
class Counts:
    """Response tokens and rows (turns) of a batch: what a micro-batch's weight depends on."""

    tokens: float
    rows: float


def _token_share(part: Counts, whole: Counts) -> float:
    return part.tokens / max(whole.tokens, 1)


def _row_share(part: Counts, whole: Counts) -> float:
    return part.rows / max(whole.rows, 1)


def _additive(part: Counts, whole: Counts) -> float:
    return 1.0


@dataclass(frozen=True)
class Aggregation:
    """One aggregation mode: its reduction, and the micro-batch weighting that goes with it.

    An update splits a mini-batch into micro-batches and accumulates their gradients; the sum of
    ``weight(part, whole) * reduce(part)`` over the parts must be ``reduce(whole)``. A mean over
    tokens weighs a part by its share of the tokens, a mean over rows by its share of the rows,
    and a sum divided by a constant is additive (weight 1) once the constant is fixed for the
    whole mini-batch: ``constant_is_longest`` modes (Dr. GRPO) default it to the mini-batch's
    longest response, not each micro-batch's padded width.
    """

    reduce: Callable[[torch.Tensor, torch.Tensor, float | None], torch.Tensor]
    """``fn(values, mask, constant) -> scalar``."""
    share: Callable[[Counts, Counts], float]
    constant_is_longest: bool = False

    def __call__(self, values: torch.Tensor, mask: torch.Tensor, constant: float | None = None) -> torch.Tensor:
        return self.reduce(values, mask, constant)

    def weight(self, part: Counts, whole: Counts) -> float:
        """The factor on a micro-batch's loss (``part``) inside the loss of ``whole``."""
        return self.share(part, whole)

    def mini_batch_constant(self, configured: float | None, longest: Callable[[], float]) -> float | None:
        """The constant the mini-batch's micro-batches share: ``configured``, or for
        ``constant_is_longest`` modes without one ``max(longest(), 1)`` (``longest`` is called
        only then: under a multi-process launch it is a collective)."""
        if configured is not None or not self.constant_is_longest:
            return configured
        return float(max(longest(), 1))


#: mode name -> :class:`Aggregation`.
AGGREGATIONS: dict[str, Aggregation] = {
    "token-mean": Aggregation(_token_mean, _token_share),
    "seq-mean-token-sum": Aggregation(_seq_mean_token_sum, _row_share),
    "seq-mean-token-mean": Aggregation(_seq_mean_token_mean, _row_share),
    "seq-mean-token-sum-norm": Aggregation(_seq_mean_token_sum_norm, _additive, constant_is_longest=True),
}

AggMode = Literal[
    "token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"
]


def aggregation(mode: str) -> Aggregation:
    """The :class:`Aggregation` named ``mode``."""
    try:
        return AGGREGATIONS[mode]
    except KeyError:
        raise ValueError(
            f"unknown loss aggregation {mode!r} (known: {', '.join(AGGREGATIONS)})"
        ) from None


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    constant: float | None = None,
) -> torch.Tensor:
    """Reduce per-token ``values`` to a scalar with one of :data:`AGGREGATIONS`."""
    return aggregation(mode)(values, mask.to(values.dtype), constant)


# --------------------------------------------------------------------------------------------
# KL and entropy
# --------------------------------------------------------------------------------------------


def _k3(d: torch.Tensor) -> torch.Tensor:
    # Schulman's low-variance estimator: x = log(ref/p); exp(x) - x - 1 >= 0, clamped
    x = torch.clamp(-d, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(x) - x - 1.0, -10.0, 10.0)


#: name -> ``fn(d)`` with ``d = logp - ref_logp`` per token.
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "k1": lambda d: d,
    "abs": torch.abs,
    "k2": lambda d: 0.5 * d * d,
    "k3": _k3,
    "low_var_kl": _k3,
}


def kl_penalty(
    logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "low_var_kl"
) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate from sampled-token log-probs (docs/algorithms.md section 1)."""
    try:
        fn = KL_ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(
            f"unknown KL estimator {estimator!r} (known: {', '.join(KL_ESTIMATORS)})"
        ) from None
    return fn(logp - ref_logp)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy H = logsumexp(z) - sum softmax(z) * z, over the last dimension."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)


# --------------------------------------------------------------------------------------------
# Surrogates
# --------------------------------------------------------------------------------------------


def gspo_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO (2507.18071) token-form sequence log-ratio, per token.

    log s_i = mean_t(logp - old_logp) over valid tokens;
    log s_it = stopgrad(log s_i) + logp_t - stopgrad(logp_t), clamped at 10 from above:
    its value is log s_i at every token, its gradient that of logp_t.
    """
    mask = mask.to(logp.dtype)
    seq = ((logp - old_logp) * mask).sum(dim=-1) / mask.sum(dim=-1).clamp_min(1.0)
    token_form = seq.detach().unsqueeze(-1) + logp - logp.detach()
    return torch.clamp(token_form, max=GSPO_LOG_RATIO_MAX)


def ppo_clip_loss(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = 3.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token PPO clipped surrogate with dual-clip (docs/algorithms.md section 1).

    r = exp(clamp(log_ratio, -20, 20)); L1 = -A r; L2 = -A clip(r, 1-eps_low, 1+eps_high);
    L = max(L1, L2); for A < 0, L = min(L, -A c) (dual-clip, c > 1; None disables).
    Returns (L, clipped, dual_clipped) where ``clipped`` marks L2 > L1 (the clipfrac numerator)
    and ``dual_clipped`` the tokens where the dual-clip bound won. A clipped token has no
    gradient: its loss is a constant in logp.
    """
    if advantages.dim() == log_ratio.dim() - 1:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(torch.clamp(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    l1 = -advantages * ratio
    l2 = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(l1, l2)
    clipped = l2 > l1
    dual_clipped = torch.zeros_like(clipped)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        bound = -advantages * dual_clip
        dual_clipped = (advantages < 0) & (loss > bound)
        loss = torch.where(advantages < 0, torch.minimum(loss, bound), loss)
    return loss, clipped, dual_clipped


# --------------------------------------------------------------------------------------------
# The whole loss
# --------------------------------------------------------------------------------------------


class LossConfig(BaseModel):
    """Policy-loss settings (defaults: docs/algorithms.md section 1; recipes noted per field)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    eps_low: float = Field(0.2, ge=0.0, lt=1.0)
    """Lower clip range: the ratio is clipped at 1 - eps_low (DAPO and default 0.2)."""
    eps_high: float = Field(0.2, ge=0.0)
    """Upper clip range: the ratio is clipped at 1 + eps_high (DAPO clip-higher: 0.28)."""
    dual_clip: float | None = Field(3.0, gt=1.0)
    """Dual-clip constant c: for A < 0 the loss is capped at -A*c. None disables it. Token
    ratios only: GSPO's sequence-ratio loss has no dual-clip."""
    ratio: Literal["token", "sequence"] = "token"
    """``token``: PPO per-token ratios; ``sequence``: GSPO sequence ratios s_i = exp(mean_t log r)
    (pair with ``loss_agg="seq-mean-token-mean"`` and eps around 3e-4/4e-4 as in the paper)."""
    loss_agg: AggMode = "token-mean"
    """How per-token losses become a scalar (token-mean, seq-mean-token-sum, seq-mean-token-mean,
    seq-mean-token-sum-norm); the same mode aggregates the entropy and KL terms."""
    loss_agg_constant: float | None = Field(None, gt=0.0)
    """C for seq-mean-token-sum-norm (Dr. GRPO); None = the max response length (the padded
    width of the batch). Set it to the configured max response length for a stable scale."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (subtracted from the loss)."""
    use_kl: bool = False
    """Add a KL penalty against the reference policy (needs ``ref_logp``); off in DAPO."""
    kl_coef: float = Field(0.001, ge=0.0)
    """Weight of the KL penalty when ``use_kl``."""
    kl_estimator: Literal["k1", "abs", "k2", "k3", "low_var_kl"] = "low_var_kl"
    """Per-token KL estimator (k3 = low_var_kl)."""


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _surrogate_metrics(pg_loss: torch.Tensor, clipped: torch.Tensor, dual: torch.Tensor, log_ratio: torch.Tensor,
                       logp: torch.Tensor, old_logp: torch.Tensor, mask_f: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        ratio = torch.exp(torch.clamp(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
        return {
            "pg_loss": pg_loss.item(),
            "clipfrac": _masked_mean(clipped.to(mask_f.dtype), mask_f).item(),
            "dual_clipfrac": _masked_mean(dual.to(mask_f.dtype), mask_f).item(),
            "ratio_mean": _masked_mean(ratio, mask_f).item(),
            "ppo_kl": _masked_mean(old_logp - logp, mask_f).item(),
        }


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig | None = None,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """loss = agg(L_pg) - entropy_coef*agg(H) + kl_coef*agg(KL), and its metrics.

    ``old_logp`` must be recomputed by the training model before the update (log the gap to
    the rollout engine's log-probs with :func:`logprob_mismatch`). ``entropy`` is per token
    (see :func:`entropy_from_logits`); it is only needed when ``entropy_coef != 0`` but is
    logged whenever given. Metrics are Python floats: ``pg_loss``, ``clipfrac`` (fraction of
    valid tokens with L2 > L1), ``dual_clipfrac``, ``ratio_mean``, ``ppo_kl`` (mean
    old_logp - logp), and ``kl``/``entropy`` when computed.
    """
    config = config or LossConfig()
    mask_f = mask.to(logp.dtype)
    if config.ratio == "sequence":  # GSPO: no dual-clip
        log_ratio, dual_clip = gspo_log_ratio(logp, old_logp, mask_f), None
    else:
        log_ratio, dual_clip = logp - old_logp, config.dual_clip
    pg, clipped, dual = ppo_clip_loss(log_ratio, advantages, config.eps_low, config.eps_high, dual_clip)
    pg_loss = aggregate(pg, mask_f, config.loss_agg, config.loss_agg_constant)
    loss = pg_loss
    metrics = _surrogate_metrics(pg_loss, clipped, dual, log_ratio, logp, old_logp, mask_f)
    if config.entropy_coef != 0.0 and entropy is None:
        raise ValueError("entropy_coef is set but no per-token entropy was given")
    if entropy is not None:
        ent = aggregate(entropy, mask_f, config.loss_agg, config.loss_agg_constant)
        metrics["entropy"] = ent.item()
        if config.entropy_coef != 0.0:
            loss = loss - config.entropy_coef * ent
    if config.use_kl:
        if ref_logp is None:
            raise ValueError("use_kl is set but no reference log-probs were given")
        kl = aggregate(kl_penalty(logp, ref_logp, config.kl_estimator), mask_f, config.loss_agg,
                       config.loss_agg_constant)
        metrics["kl"] = kl.item()
        loss = loss + config.kl_coef * kl
    metrics["loss"] = loss.item()
    return loss, metrics


def logprob_mismatch(
    rollout_logp: torch.Tensor, train_logp: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """The rollout-engine vs training-model log-prob gap on valid tokens (to be logged).

    ``abs_mean``/``abs_max`` of the difference, and the k3 KL(train || rollout) estimate.
    """
    with torch.no_grad():
        mask_f = mask.to(train_logp.dtype)
        diff = (train_logp - rollout_logp) * mask_f
        return {
            "abs_mean": _masked_mean(diff.abs(), mask_f).item(),
            "abs_max": diff.abs().max().item() if diff.numel() else 0.0,
            "k3": _masked_mean(_k3(train_logp - rollout_logp), mask_f).item(),
        }
