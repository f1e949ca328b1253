"""Which engine generates the trainer's rollouts and evaluations: ``policy.backend``.

``build_policy(config, model, tokenizer, world_size) -> Policy``, by name from
:data:`POLICY_BACKENDS`:

- ``hf`` (default): :class:`~turngym.agents.hf.HFPolicy` over the trained model itself. It
  shares the weights, so an update is live at once.
- ``vllm``: a vLLM engine in the trainer's process (GPU, extra ``[gpu]``), started from the
  model's current weights (:meth:`~turngym.agents.vllm_policy.VLLMPolicy.from_model`, which
  also covers a resumed or warm-started model). After every update the trainer calls
  ``policy.sync_weights(model.state_dict())``, which loads the new weights into the engine in
  place and drops its prefix cache. ``policy.vllm`` holds ``vllm.LLM`` keyword arguments
  (``gpu_memory_utilization``, ``max_model_len``, ``enforce_eager``, ...). One training process,
  full weights (no LoRA) and synchronous rollouts for now: each other combination is refused
  with one sentence.

The contract the trainer relies on (a policy with ``generate`` and ``sync_weights``) is tested
on CPU with a double of exactly the vLLM calls the backend makes (``tests/agents/fake_vllm.py``);
the run on a real engine is the ``gpu``-marked test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from turngym.trainers.config import TrainConfig

__all__ = ["POLICY_BACKENDS", "build_policy"]


def _hf(config: TrainConfig, model: Any, tokenizer: Any) -> Any:
    from turngym.agents.hf import HFPolicy

    return HFPolicy(model, tokenizer, max_batch_size=config.policy.max_batch_size,
                    reuse_kv=config.policy.reuse_kv, draft_budget=config.policy.draft_budget)


def _vllm(config: TrainConfig, model: Any, tokenizer: Any) -> Any:
    from turngym.agents.vllm_policy import VLLMPolicy

    if config.policy.lora:
        raise ValueError("policy.backend=vllm trains full weights for now; set policy.lora=false or policy.backend=hf")
    if config.run.async_rollouts:
        raise ValueError("policy.backend=vllm and run.async_rollouts cannot be combined yet")
    return VLLMPolicy.from_model(model, tokenizer, seed=config.run.seed, **config.policy.vllm)


#: ``policy.backend`` name -> ``factory(train config, model, tokenizer) -> Policy``.
POLICY_BACKENDS: dict[str, Callable[[TrainConfig, Any, Any], Any]] = {"hf": _hf, "vllm": _vllm}


def build_policy(config: TrainConfig, model: Any, tokenizer: Any, world_size: int = 1) -> Any:
    """The policy that generates the trainer's rollouts (see the module docstring)."""
    factory = POLICY_BACKENDS.get(config.policy.backend)
    if factory is None:
        raise ValueError(f"unknown policy.backend {config.policy.backend!r}; known: {', '.join(sorted(POLICY_BACKENDS))}")
    if config.policy.backend != "hf" and world_size > 1:
        raise ValueError(f"policy.backend={config.policy.backend} runs in one training process; use hf for a multi-process launch")
    return factory(config, model, tokenizer)
