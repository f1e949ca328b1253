"""The policy contract: text prompts in, completions with token ids and logprobs out.

``Policy.generate(prompts, sampling) -> list[Completion]``

- ``prompts``: one entry per request; each is either a list of prompt token ids (the agent
  built the exact prompt with the model's chat template — the ids are what the trainer will
  train on) or a list of chat messages (``[{"role": ..., "content": ...}]``) for backends that
  template themselves (HTTP endpoints).
- ``sampling``: :class:`SamplingParams` (temperature, top_p, max_tokens, stop strings, n=1 per
  prompt — the rollout engine repeats prompts for groups, with per-request seeds).
- Each :class:`Completion` has the response ``text``, its ``token_ids`` and the per-token
  ``logprobs`` under the sampling distribution's model (temperature 1 logits unless stated by
  the backend), and ``finish_reason`` (``stop`` / ``length``).

Backends: Hugging Face transformers (CPU/GPU), vLLM (GPU), OpenAI-compatible HTTP, scripted.
A backend that can be trained exposes ``model`` and ``tokenizer`` and ``sync_weights(state)``.
A chat-message backend that takes tool schemas as a request field (OpenAI ``tools=``) sets
``native_tools = True`` and accepts ``generate(prompts, sampling, tools=[schemas per prompt])``;
the rollout engine then passes each episode's tools that way and the agent leaves them out of
the system message.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

__all__ = ["Completion", "Policy", "Prompt", "SamplingParams", "prompt_token_ids"]

#: Prompt token ids, or chat messages for backends that apply their own template.
Prompt = list[int] | list[dict[str, Any]]


class SamplingParams(BaseModel):
    """How to sample one completion per prompt."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = 256
    """Most new tokens per completion."""
    stop: list[str] = Field(default_factory=list)
    """Stop strings: generation ends after the first one (the stop string is kept)."""
    seeds: list[int] | None = None
    """Optional per-prompt seeds, so a run is reproducible."""


class Completion(BaseModel):
    """One generated reply."""

    text: str
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(default_factory=list)
    """Per-token log-probabilities of ``token_ids`` (empty when the backend cannot give them)."""
    finish_reason: str = "stop"
    """``stop`` (EOS or a stop string) or ``length`` (max_tokens reached)."""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    """Structured tool calls, for backends (OpenAI-compatible) that return them separately."""


@runtime_checkable
class Policy(Protocol):
    """Anything that turns prompts into completions."""

    def generate(self, prompts: list[Prompt], sampling: SamplingParams) -> list[Completion]: ...


def prompt_token_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """The token ids of a prompt: ids as given, chat messages through the tokenizer's chat
    template (with the generation prompt) — for backends that take token ids."""
    if not prompt:
        raise ValueError("a prompt must have at least one token or message")
    if isinstance(prompt[0], dict):
        ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True, return_dict=False)
        return [int(i) for i in ids]
    return [int(i) for i in prompt]
