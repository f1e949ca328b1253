"""turngym.agents — policies, the agent loop, the batched multi-turn rollout engine, evaluation.

The light names are imported here; the torch-heavy ones (``HFPolicy``, ``load_policy``,
``load_model``) and the rest load on first use, so ``import turngym.agents`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from turngym.agents.policy import Completion, Policy, SamplingParams
from turngym.agents.trajectory import Trajectory, Turn, read_jsonl, write_jsonl

_LAZY = {
    "Agent": "turngym.agents.agent",
    "AgentConfig": "turngym.agents.agent",
    "EnvPool": "turngym.agents.env_pool",
    "ThreadEnvPool": "turngym.agents.env_pool",
    "EpisodeSpec": "turngym.agents.rollout",
    "RolloutConfig": "turngym.agents.rollout",
    "RolloutEngine": "turngym.agents.rollout",
    "rollout": "turngym.agents.rollout",
    "ScriptedPolicy": "turngym.agents.scripted",
    "EpisodePolicy": "turngym.agents.scripted",
    "HFPolicy": "turngym.agents.hf",
    "OpenAIPolicy": "turngym.agents.openai_http",
    "load_model": "turngym.agents.models",
    "load_policy": "turngym.agents.models",
    "register_model": "turngym.agents.models",
}

__all__ = ["Completion", "Policy", "SamplingParams", "Trajectory", "Turn", "read_jsonl", "write_jsonl", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'turngym.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
