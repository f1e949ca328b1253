"""The decoding and agent settings of an evaluation, and where each comes from.

In order: what the caller gave (``turngym eval --temperature ...``), else what a trained
checkpoint's policy card recorded (training's own evaluation: see
``turngym.agents.models.saved_eval_settings``), else :data:`DEFAULTS` (greedy). So
``turngym eval --policy runs/x/checkpoints/step-N/model`` decodes exactly as the evaluations
inside training did, and on the environment it trained on gets the same constructor arguments,
with nothing to repeat by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from turngym.agents.rollout import RolloutConfig

__all__ = ["DEFAULTS", "EvalSettings", "eval_settings"]

#: Settings of an evaluation that neither the caller nor a policy card fixes.
DEFAULTS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 256}


class EvalSettings(NamedTuple):
    rollout: RolloutConfig
    seed: int
    env_kwargs: dict[str, Any]
    """The trained environment's constructor arguments when exactly that environment is evaluated."""


def eval_settings(policy: str, given: dict[str, Any], seed: int | None, env_ids: Sequence[str]) -> EvalSettings:
    """How to evaluate ``policy`` on ``env_ids``; ``given`` holds the caller's ``RolloutConfig``
    fields and ``seed`` the caller's base seed (``None``: not given)."""
    from turngym.agents.models import saved_eval_settings

    card = saved_eval_settings(policy)
    saved = {k: v for k, v in card.get("rollout", {}).items() if k in RolloutConfig.model_fields}
    chosen = {k: v for k, v in given.items() if v is not None}
    rollout = RolloutConfig(**{**DEFAULTS, **saved, **chosen, "group_size": 1, "progress": False})
    env = card.get("env") or {}
    same_env = list(dict.fromkeys(env_ids)) == [env.get("id")]
    return EvalSettings(rollout, seed if seed is not None else int(card.get("seed", 0)),
                        dict(env.get("kwargs") or {}) if same_env else {})
