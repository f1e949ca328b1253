"""turngym.trainers: advantage estimators, policy losses and batch sampling for per-turn RL.

- :mod:`turngym.trainers.estimators`: ``estimate(name, ...)`` and the ``ESTIMATORS`` registry
  (grpo, dr_grpo, rloo, reinforce_pp, gigpo, flow_grpo, stratified).
- :mod:`turngym.trainers.losses`: ``policy_loss`` with ``LossConfig`` (PPO dual-clip, GSPO,
  KL k1/abs/k2/k3, entropy, four aggregation modes).
- :mod:`turngym.trainers.sampling`: DAPO dynamic sampling and overlong shaping, MT-GRPO task
  weights and the ratio-preserving sampler.
- :mod:`turngym.trainers.trainer`: the loop (``Trainer``, ``turngym train``): steps,
  evaluations, checkpoints, logs. Its parts: :mod:`~turngym.trainers.build` (``build_run``:
  what a run is made of), :mod:`~turngym.trainers.samplers` (which rollouts make a step's
  batch: plain, DAPO refill, MT-GRPO families, prefetched), :mod:`~turngym.trainers.turns`
  (the step's turns as columns), :mod:`~turngym.trainers.rows` (training rows, packing,
  micro-batches) and :mod:`~turngym.trainers.update` (``ppo_update``); around them
  :mod:`~turngym.trainers.multitask` (MT-GRPO's balancer),
  :mod:`~turngym.trainers.async_rollout` (bounded-staleness prefetch) and
  :mod:`~turngym.trainers.distributed` (one process or many through ``accelerate``).

Formulas and worked examples: docs/algorithms.md.
"""

from turngym.trainers.estimators import (
    ESTIMATORS,
    EstimatorError,
    RowBatch,
    estimate,
    register_estimator,
)
from turngym.trainers.losses import (
    LossConfig,
    aggregate,
    entropy_from_logits,
    kl_penalty,
    logprob_mismatch,
    policy_loss,
)
from turngym.trainers.sampling import (
    FillResult,
    fill_batch,
    fill_to_targets,
    generation_weights,
    informative_group_mask,
    is_informative,
    overlong_penalty,
    sampler_multipliers,
    target_counts,
    task_weight_gradient,
    task_weights,
    update_task_logits,
    update_zero_gradient_rate,
)

__all__ = [
    "ESTIMATORS",
    "EstimatorError",
    "FillResult",
    "LossConfig",
    "RowBatch",
    "aggregate",
    "entropy_from_logits",
    "estimate",
    "fill_batch",
    "fill_to_targets",
    "generation_weights",
    "informative_group_mask",
    "is_informative",
    "kl_penalty",
    "logprob_mismatch",
    "overlong_penalty",
    "policy_loss",
    "register_estimator",
    "sampler_multipliers",
    "target_counts",
    "task_weight_gradient",
    "task_weights",
    "update_task_logits",
    "update_zero_gradient_rate",
]
