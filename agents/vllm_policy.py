"""The vLLM backend (GPU, extra ``[gpu]``): fast sampling with logprobs, weights pushed in place.

``VLLMPolicy("path/or/hf-id").generate(prompts, sampling) -> list[Completion]``

- Prompts are token-id lists (sent as ``TokensPrompt``, so vLLM never re-tokenises) or chat
  messages (rendered with the tokenizer's chat template here).
- Each prompt gets its own ``vllm.SamplingParams`` with its seed, so results do not depend on
  the batch. Stop strings are kept in the text (``include_stop_str_in_output``); token ids
  include the EOS token when the model stopped by itself, as :class:`~turngym.agents.hf.HFPolicy`
  does.
- Logprobs: ``logprobs=0`` asks vLLM for the sampled token's logprob only. vLLM (V1) computes
  them from the raw model logits before temperature/top-p (``logprobs_mode="raw_logprobs"``,
  its default), i.e. temperature-1 logprobs, the same definition as the HF backend. Pass
  ``logprobs_mode=...`` through ``llm_kwargs`` on versions that accept it to be explicit.
- :meth:`VLLMPolicy.sync_weights` copies a trainer's (merged, Hugging Face-named) state dict
  into the running engine's model with the model's own ``load_weights`` (which maps HF names to
  vLLM's fused layers), then drops the prefix cache, whose KV entries were computed with the old
  weights. The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so the tensors
  are handed over by reference, not serialised. LoRA trainers merge adapters before syncing.

Starting points: ``VLLMPolicy(path_or_hf_id)``; :meth:`VLLMPolicy.from_model` (an in-memory
transformers model, e.g. the trainer's, saved once to a folder vLLM loads); and
:func:`load_vllm_policy` for the ``vllm:SPEC`` policy spec of ``turngym eval`` (a folder, a
Hugging Face id, or a turngym model name such as ``smollm2``).

vLLM is imported only when this class is used; on a machine without it the constructor
raises :class:`VLLMUnavailable` with one sentence.

The calls made into vLLM are exactly: ``vllm.LLM(model=..., ...)``, ``LLM.get_tokenizer()``,
``LLM.generate(list of vllm.inputs.TokensPrompt, list of vllm.SamplingParams, use_tqdm=False)``,
``LLM.collective_rpc(fn, args=(weights,))`` (``fn(worker, weights)`` reaches
``worker.model_runner.get_model().load_weights(weights=...)``) and ``LLM.reset_prefix_cache()``;
``tests/agents/fake_vllm.py`` implements these on a transformers model so the trainer-to-engine
contract is tested on CPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from turngym.agents.policy import Completion, Prompt, SamplingParams, prompt_token_ids

__all__ = ["VLLMPolicy", "VLLMUnavailable", "load_vllm_policy", "vllm_available"]


class VLLMUnavailable(RuntimeError):
    """vLLM (extra ``[gpu]``) or a CUDA GPU is missing."""


def vllm_available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _import_vllm() -> Any:
    # In-process engine: sync_weights hands tensors over by reference (must be set before
    # vllm is imported, since vllm reads its environment at import).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError:
        raise VLLMUnavailable("the vLLM backend needs vllm and a CUDA GPU: pip install 'turngym[gpu]'") from None
    return vllm


def _load_weights_in_worker(worker: Any, weights: list[tuple[str, Any]]) -> int:
    """Runs inside the vLLM worker (``collective_rpc`` passes the worker first)."""
    runner = worker.model_runner
    model = runner.get_model() if hasattr(runner, "get_model") else runner.model
    loaded = model.load_weights(weights=iter(weights))
    return len(loaded) if loaded is not None else len(weights)


class VLLMPolicy:
    """A vLLM engine as a :class:`~turngym.agents.policy.Policy` (see module doc)."""

    def __init__(
        self,
        model: str,
        *,
        gpu_memory_utilization: float = 0.5,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            seed=seed,
            **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._owned_dir: Path | None = None

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, workdir: str | Path | None = None, **kwargs: Any) -> VLLMPolicy:
        """An engine serving an in-memory transformers model (e.g. the trainer's).

        The weights and tokenizer are saved once to ``workdir`` (default: a temporary folder
        removed by :meth:`close`), which vLLM loads; later updates go in with
        :meth:`sync_weights`, never through the disk.
        """
        owned = workdir is None
        folder = Path(tempfile.mkdtemp(prefix="turngym-vllm-")) if owned else Path(workdir)  # type: ignore[arg-type]
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        policy = cls(str(folder), **kwargs)
        if owned:  # removed by close(), or when the policy is collected, whichever comes first
            policy._owned_dir = folder
            weakref.finalize(policy, shutil.rmtree, folder, True)
        return policy

    def close(self) -> None:
        """Remove the folder :meth:`from_model` made (the engine lives as long as this object)."""
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The token ids of a prompt: ids as given, chat messages through the chat template."""
        return prompt_token_ids(self.tokenizer, prompt)

    def generate(self, prompts: list[Prompt], sampling: SamplingParams) -> list[Completion]:
        from vllm.inputs import TokensPrompt

        if sampling.seeds is not None and len(sampling.seeds) != len(prompts):
            raise ValueError(f"got {len(sampling.seeds)} seeds for {len(prompts)} prompts")
        seeds = sampling.seeds or [None] * len(prompts)
        inputs = [TokensPrompt(prompt_token_ids=self.prompt_ids(p)) for p in prompts]
        params = [
            self._vllm.SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                stop=list(sampling.stop) or None,
                include_stop_str_in_output=True,
                seed=seed,
                logprobs=0,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        return [self._completion(out.outputs[0]) for out in outputs]

    @staticmethod
    def _completion(output: Any) -> Completion:
        token_ids = [int(t) for t in output.token_ids]
        logprobs: list[float] = []
        for token, candidates in zip(token_ids, output.logprobs or []):
            logprobs.append(float(candidates[token].logprob))
        return Completion(
            text=output.text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason="length" if output.finish_reason == "length" else "stop",
        )

    def sync_weights(self, state_dict: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """Load new weights (Hugging Face parameter names) into the engine in place."""
        items = state_dict.items() if isinstance(state_dict, Mapping) else state_dict
        weights = [(name, tensor.detach()) for name, tensor in items]
        if hasattr(self.llm, "collective_rpc"):  # vLLM >= 0.7, V0 and V1 engines
            self.llm.collective_rpc(_load_weights_in_worker, args=(weights,))
        else:  # older V0 engines: the driver worker lives in this process
            model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
            model.load_weights(weights=iter(weights))
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()


def load_vllm_policy(spec: str, **kwargs: Any) -> VLLMPolicy:
    """The engine for the ``vllm:SPEC`` policy spec (``spec`` is the part after ``vllm:``).

    A local folder or a Hugging Face id is loaded by vLLM itself; a turngym model name
    (``smollm2``, ``tiny:...``, see :mod:`turngym.agents.models`) is built with transformers
    and handed over through :meth:`VLLMPolicy.from_model`.
    """
    from turngym.agents.models import MODEL_LOADERS, load_model, parse_spec

    _import_vllm()  # fail in one sentence before loading anything
    if parse_spec(spec)[0] in MODEL_LOADERS:
        model, tokenizer = load_model(spec)
        return VLLMPolicy.from_model(model, tokenizer, **kwargs)
    return VLLMPolicy(str(Path(spec).expanduser()) if Path(spec).expanduser().is_dir() else spec, **kwargs)
