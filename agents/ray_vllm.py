"""vLLM engines as Ray actors on GPU nodes (extras ``[ray]`` and ``[gpu]``).

``RayVLLMPolicy(model, num_engines=2)`` is a :class:`~turngym.agents.policy.Policy`: each
engine is a Ray actor (:class:`VLLMEngine`, one GPU each by default) wrapping a
:class:`~turngym.agents.vllm_policy.VLLMPolicy`. ``generate`` splits the batch into one
contiguous share per engine (one remote call each), gathers them and returns the completions
in prompt order; every prompt carries its own seed, so the split does not change the samples.

Weights after each update: ``sync_weights(state_dict)`` puts the (merged, Hugging Face-named)
state dict in Ray's object store ONCE (``ray.put`` of CPU tensors) and every engine loads it
from there with ``VLLMPolicy.sync_weights`` — the generic path, which works across nodes.
Engines on the trainer's node read the object through shared memory (plasma), so co-located
pushes are a memory copy. Future work: an NCCL broadcast group between the trainer and the
engines (vLLM's ``StatelessProcessGroup`` / ``PyNcclCommunicator``) to skip the CPU round
trip; ``sync_from_checkpoint(path)`` (the engines reload a saved checkpoint) is the fallback
when neither fits.

Rollout/train mismatch: :func:`logprob_gap` compares the logprobs the engines sampled with
against the trainer's logprobs of the same tokens (pure function; log its output each step).

Nothing here imports Ray or vLLM at module import: on a machine without them the classes raise
one sentence when used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from turngym.agents.policy import Completion, Prompt, SamplingParams

__all__ = ["RayVLLMPolicy", "VLLMEngine", "logprob_gap", "split_evenly"]


def logprob_gap(rollout_logprobs: Sequence[Sequence[float]], train_logprobs: Sequence[Sequence[float]]) -> dict[str, float]:
    """How far the generation engine's token logprobs are from the trainer's for the same tokens.

    With r_t = train_t - rollout_t per token (log of the importance ratio pi_train/pi_rollout):
    ``mean_abs`` = mean |r_t|; ``max_abs`` = max |r_t|; ``kl`` = mean(exp(r) - 1 - r), the k3
    estimator of KL(rollout || train) (Schulman, "Approximating KL divergence"), >= 0 per token;
    ``ratio_mean`` = mean exp(r_t). Sequences are paired and must have equal lengths.
    """
    if len(rollout_logprobs) != len(train_logprobs):
        raise ValueError(f"{len(rollout_logprobs)} rollout sequences but {len(train_logprobs)} train sequences")
    for a, b in zip(rollout_logprobs, train_logprobs):
        if len(a) != len(b):
            raise ValueError(f"a sequence has {len(a)} rollout logprobs but {len(b)} train logprobs")
    r = np.concatenate([np.asarray(b, float) - np.asarray(a, float) for a, b in zip(rollout_logprobs, train_logprobs)]
                       or [np.zeros(0)])
    if r.size == 0:
        return {"mean_abs": 0.0, "max_abs": 0.0, "kl": 0.0, "ratio_mean": 1.0, "tokens": 0.0}
    ratio = np.exp(r)
    return {"mean_abs": float(np.abs(r).mean()), "max_abs": float(np.abs(r).max()),
            "kl": float((ratio - 1.0 - r).mean()), "ratio_mean": float(ratio.mean()), "tokens": float(r.size)}


def split_evenly(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous [start, end) ranges covering ``range(n)``, sizes differing by at most one."""
    base, extra = divmod(n, parts)
    bounds, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


class VLLMEngine:
    """One vLLM engine in a Ray actor (wrapped with ``ray.remote`` by :class:`RayVLLMPolicy`)."""

    def __init__(self, model: str, **vllm_kwargs: Any) -> None:
        from turngym.agents.vllm_policy import VLLMPolicy

        self.policy = VLLMPolicy(model, **vllm_kwargs)
        self.version = 0

    def generate(self, prompts: list[Prompt], sampling: SamplingParams) -> list[Completion]:
        return self.policy.generate(prompts, sampling)

    def sync_weights(self, state_dict: Mapping[str, Any], version: int) -> int:
        """Load the pushed weights; returns the weights version now served."""
        self.policy.sync_weights(state_dict)
        self.version = version
        return version

    def sync_from_checkpoint(self, path: str, version: int) -> int:
        """Fallback push: load a saved Hugging Face checkpoint's tensors (safetensors files)."""
        from pathlib import Path

        from safetensors.torch import load_file

        state: dict[str, Any] = {}
        for file in sorted(Path(path).glob("*.safetensors")):
            state.update(load_file(str(file)))
        if not state:
            raise FileNotFoundError(f"no .safetensors files in {path}")
        return self.sync_weights(state, version)

    def weights_version(self) -> int:
        return self.version


class RayVLLMPolicy:
    """``num_engines`` vLLM engines in Ray actors, used as one policy; see the module docstring.

    ``tokenizer`` (for the rollout engine's prompts): loaded here with ``transformers`` from
    ``model``. ``actor_options`` go to every engine's ``.options()`` (default one GPU each,
    spread over nodes); ``vllm_kwargs`` to :class:`~turngym.agents.vllm_policy.VLLMPolicy`.
    """

    def __init__(self, model: str, num_engines: int = 1, *, actor_options: dict[str, Any] | None = None,
                 address: str | None = None, **vllm_kwargs: Any) -> None:
        from turngym.agents.ray_pool import _import_ray

        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False)
        self._ray = ray
        options = {"num_gpus": 1, "scheduling_strategy": "SPREAD", **(actor_options or {})}
        engine_cls = ray.remote(VLLMEngine)
        self.engines = [engine_cls.options(**options).remote(model, **vllm_kwargs) for _ in range(num_engines)]
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.version = 0

    def generate(self, prompts: list[Prompt], sampling: SamplingParams) -> list[Completion]:
        if sampling.seeds is not None and len(sampling.seeds) != len(prompts):
            raise ValueError(f"got {len(sampling.seeds)} seeds for {len(prompts)} prompts")
        refs = []
        for (start, end), engine in zip(split_evenly(len(prompts), len(self.engines)), self.engines):
            if start == end:
                continue
            share = sampling.model_copy(update={"seeds": sampling.seeds[start:end] if sampling.seeds else None})
            refs.append(engine.generate.remote(prompts[start:end], share))
        return [c for part in self._ray.get(refs) for c in part]

    def sync_weights(self, state_dict: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> int:
        """Push new weights to every engine through the object store; returns the new version."""
        items = state_dict.items() if isinstance(state_dict, Mapping) else state_dict
        ref = self._ray.put({name: tensor.detach().to("cpu") for name, tensor in items})
        self.version += 1
        self._ray.get([e.sync_weights.remote(ref, self.version) for e in self.engines])
        return self.version

    def sync_from_checkpoint(self, path: str) -> int:
        """The fallback push: every engine reloads the checkpoint at ``path`` (a shared filesystem)."""
        self.version += 1
        self._ray.get([e.sync_from_checkpoint.remote(path, self.version) for e in self.engines])
        return self.version

    def close(self) -> None:
        for engine in self.engines:
            self._ray.kill(engine)
        self.engines = []

