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

A scripted policy that reads the episodes themselves rather than only the prompts (a solver
reading the true state, a search oracle reading the task's gold answer, a random baseline with
a per-episode generator) sets ``reads_episodes = True`` and accepts
``generate(prompts, sampling, episodes=[EpisodeView per prompt])``. Such a policy may answer a
prompt with ``finish_reason="abort"`` (:data:`ABORT`): it has no reply (an expert with no move
from this state), and the engine ends that episode there, without a step, as ``truncated``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

__all__ = ["ABORT", "Completion", "EpisodeView", "Policy", "Prompt", "SamplingParams", "prompt_token_ids"]

#: Prompt token ids, or chat messages for backends that apply their own template.
Prompt = list[int] | list[dict[str, Any]]

#: The finish reason of a policy that has no reply: the engine ends the episode without a step.
ABORT = "abort"


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
    """``stop`` (EOS or a stop string), ``length`` (max_tokens reached) or :data:`ABORT` (no
    reply: the episode ends here)."""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    """Structured tool calls, for backends (OpenAI-compatible) that return them separately."""


@dataclass
class EpisodeView:
    """One episode as the rollout engine shows it to a policy that reads episodes
    (``reads_episodes = True``), next to the episode's prompt."""

    traj_id: str
    task_id: str
    seed: int
    """The episode's seed (the environment's reset seed)."""
    turn: int
    """Index of the turn the reply is for, from 0."""
    observation: str
    """The latest observation (the task at turn 0)."""
    info: dict[str, Any]
    """The latest info, as the environment gave it (the reset info at turn 0)."""
    env: Any = None
    """The environment itself (unwrapped) when it lives in this process, else None: a solver
    reads its true state. A policy must not step or reset it."""
    state: dict[str, Any] = field(default_factory=dict)
    """The policy's own scratch space for this episode, kept by the engine from turn to turn
    (a per-episode random generator, a plan)."""


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
