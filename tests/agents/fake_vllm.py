"""A CPU double of exactly the vLLM API that :mod:`turngym.agents.vllm_policy` calls.

``install(monkeypatch)`` puts it in ``sys.modules`` as ``vllm`` (and ``vllm.inputs``). Behind
the same calls sits a transformers model loaded from the folder ``LLM`` is given, sampled with
:class:`~turngym.agents.hf.HFPolicy`; ``load_weights`` behaves as vLLM's model loaders do
(``(name, tensor)`` pairs in Hugging Face names, an unknown name is an error, returns the
loaded names). Every call is recorded in ``LLM.calls`` so a test can check what the trainer
did with the engine. Only what the backend uses exists here: a call the code starts making
and this double lacks fails the CPU test, which is the point.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import torch

ENGINES: list[LLM] = []


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    stop: list[str] | None = None
    include_stop_str_in_output: bool = False
    seed: int | None = None
    logprobs: int | None = None


def TokensPrompt(prompt_token_ids: list[int]) -> dict[str, Any]:  # noqa: N802 — vLLM's name (a TypedDict)
    return {"prompt_token_ids": list(prompt_token_ids)}


@dataclass
class _Logprob:
    logprob: float


@dataclass
class _CompletionOutput:
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, _Logprob]]
    finish_reason: str


@dataclass
class _RequestOutput:
    outputs: list[_CompletionOutput]


class _Model:
    """What ``worker.model_runner.get_model()`` returns: the engine's weights with vLLM's loader."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def load_weights(self, weights) -> set[str]:
        # state_dict names include tied weights (lm_head.weight), as a HF state dict pushes them
        targets = self.module.state_dict(keep_vars=True)
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                target = targets.get(name)
                if target is None:
                    raise KeyError(f"vLLM model has no weight {name!r}")
                target.copy_(tensor.to(target.dtype))
                loaded.add(name)
        return loaded


@dataclass
class LLM:
    model: str
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    max_model_len: int | None = None
    enforce_eager: bool = False
    seed: int = 0
    calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from turngym.agents.hf import HFPolicy

        self._tokenizer = AutoTokenizer.from_pretrained(self.model)
        self.hf_model = AutoModelForCausalLM.from_pretrained(self.model, dtype=torch.float32).eval()
        self._policy = HFPolicy(self.hf_model, self._tokenizer)
        ENGINES.append(self)

    def get_tokenizer(self) -> Any:
        self.calls.append("get_tokenizer")
        return self._tokenizer

    def generate(self, prompts: list[dict[str, Any]], params: list[SamplingParams], use_tqdm: bool = True) -> list[_RequestOutput]:
        from turngym.agents.policy import SamplingParams as TurngymSampling

        self.calls.append("generate")
        assert len(prompts) == len(params) and all(p.n == 1 and p.logprobs == 0 for p in params)
        first = params[0]
        sampling = TurngymSampling(temperature=first.temperature, top_p=first.top_p, max_tokens=first.max_tokens,
                                   stop=list(first.stop or []), seeds=[p.seed for p in params] if first.seed is not None else None)
        completions = self._policy.generate([p["prompt_token_ids"] for p in prompts], sampling)
        return [
            _RequestOutput([_CompletionOutput(
                text=c.text, token_ids=list(c.token_ids),
                logprobs=[{t: _Logprob(lp)} for t, lp in zip(c.token_ids, c.logprobs)],
                finish_reason="length" if c.finish_reason == "length" else "stop",
            )])
            for c in completions
        ]

    def collective_rpc(self, method, args: tuple = ()) -> list[Any]:
        self.calls.append("collective_rpc")
        model = _Model(self.hf_model)
        worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(get_model=lambda: model))
        return [method(worker, *args)]

    def reset_prefix_cache(self) -> bool:
        self.calls.append("reset_prefix_cache")
        return True


def install(monkeypatch) -> types.ModuleType:
    """Make ``import vllm`` (and ``from vllm.inputs import TokensPrompt``) give this double."""
    module = types.ModuleType("vllm")
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = TokensPrompt
    module.LLM, module.SamplingParams, module.inputs = LLM, SamplingParams, inputs
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    ENGINES.clear()
    return module
