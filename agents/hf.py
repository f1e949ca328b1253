"""The Hugging Face transformers backend: batched sampling with exact token ids and logprobs.

``HFPolicy(model, tokenizer).generate(prompts, sampling) -> list[Completion]``

What it guarantees (the rollout engine and trainer rely on each point):

- **Exact ids.** ``Completion.token_ids`` are the sampled ids, in order, with no pad token and
  nothing re-tokenised. They end with the EOS token when the model stopped by itself (it is
  part of what the model did and must be trained on), or with the token that completed a stop
  string. ``text`` is their decoding without special tokens, cut right after the first stop
  string (a token that completes a stop string can carry a few characters past it; those stay
  in the ids, as vLLM does, and leave the text).
- **Logprobs.** ``Completion.logprobs[t]`` is ``log_softmax(logits_t)[token_t]`` of the model's
  raw logits at temperature 1, before temperature, top-p or any other processing: the same
  number a training forward pass over ``prompt + response`` gives for that token (up to float
  noise from padding and the KV cache), i.e. the behaviour policy's log-probability that PPO's
  ratio needs. Sampling itself uses ``softmax(logits / temperature)`` restricted to the top-p
  nucleus.
- **Seeds.** Each prompt samples from its own ``torch.Generator`` seeded with
  ``sampling.seeds[i]``, so a prompt's completion does not depend on which other prompts share
  its batch or on the global RNG. Without seeds, per-prompt seeds are drawn from the global
  torch RNG (``torch.manual_seed`` then makes a run reproducible). ``temperature == 0`` is
  greedy.
- **Batching.** Prompts are left-padded into batches of at most ``max_batch_size``; one KV-cached
  forward pass per new token for the whole batch; a batch ends when every row has stopped.
- **Sharing weights with a trainer.** ``policy.model`` is the live ``torch.nn.Module``: an
  in-process trainer may build the policy around its own model object (then nothing needs
  syncing), or call :meth:`HFPolicy.sync_weights` with a state dict to copy new weights in
  place. Generation runs under ``torch.inference_mode`` in eval mode and restores the model's
  training flag afterwards.

Prompts are token-id lists (what the agent built with the chat template) or chat-message lists,
which are rendered here with ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from turngym.agents.policy import Completion, Prompt, SamplingParams, prompt_token_ids

__all__ = ["HFPolicy", "sample_tokens", "first_stop"]


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    uniforms: torch.Tensor,
) -> torch.Tensor:
    """One token per row of ``logits`` (B, V), by inverse-CDF sampling with given uniforms (B,).

    The distribution is ``softmax(logits / temperature)`` restricted to the smallest set of
    tokens whose mass reaches ``top_p`` (the nucleus, always at least the top token).
    ``temperature <= 0`` returns the argmax.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    cdf = probs.cumsum(dim=-1)
    targets = uniforms.to(cdf.dtype).unsqueeze(-1) * cdf[:, -1:]
    # the first index whose cumulative mass reaches the target; zero-mass tokens are never hit
    index = (cdf < targets).sum(dim=-1)
    return index.clamp(max=logits.shape[-1] - 1)


@functools.cache
def _cache_name(model_class: type) -> str:
    """The KV-cache argument of a model's forward: ``cache`` since transformers 5.x renamed it
    (passing the old name warns on every call), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _cache_kwarg(model: Any, out: Any) -> dict[str, Any]:
    """The keyword argument that hands ``out``'s KV cache to the next forward (a peft model
    passes keywords through to its base model, whose signature decides)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = _cache_name(type(inner))
    return {name: getattr(out, name)}


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """The end offset of the earliest-ending stop string in ``text``, or None."""
    ends = [text.find(s) + len(s) for s in stops if s and s in text]
    return min(ends) if ends else None


class HFPolicy:
    """A transformers causal LM as a :class:`~turngym.agents.policy.Policy` (see module doc)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> None:
        if device is not None:
            model.to(device)
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self._stop_enders_cache: dict[tuple[str, ...], frozenset[int] | None] = {}
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos_ids)
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else min(eos_ids, default=0)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- weights ---------------------------------------------------------------------------

    def sync_weights(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Copy ``state_dict`` into the model in place (a no-op for the model's own tensors)."""
        own = self.model.state_dict()
        if all(k in own and own[k].data_ptr() == v.data_ptr() for k, v in state_dict.items()):
            return
        with torch.no_grad():
            self.model.load_state_dict(dict(state_dict), strict=strict)

    # -- generation --------------------------------------------------------------------------

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The token ids of a prompt: ids as given, chat messages through the chat template."""
        return prompt_token_ids(self.tokenizer, prompt)

    def generate(self, prompts: list[Prompt], sampling: SamplingParams) -> list[Completion]:
        ids = [self.prompt_ids(p) for p in prompts]
        if sampling.seeds is not None and len(sampling.seeds) != len(ids):
            raise ValueError(f"got {len(sampling.seeds)} seeds for {len(ids)} prompts")
        seeds = list(sampling.seeds) if sampling.seeds is not None else [
            int(torch.randint(0, 2**62, (1,)).item()) for _ in ids
        ]
        completions: list[Completion] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(ids), self.max_batch_size):
                stop = start + self.max_batch_size
                completions += self._generate_batch(ids[start:stop], seeds[start:stop], sampling)
        finally:
            self.model.train(was_training)
        return completions

    @torch.inference_mode()
    def _generate_batch(
        self, prompts: list[list[int]], seeds: list[int], sampling: SamplingParams
    ) -> list[Completion]:
        device = self.device
        batch, width = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention[row, width - len(prompt):] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

        stops = [s for s in sampling.stop if s]
        # enough trailing tokens to contain any stop string (every token is at least one byte)
        stop_window = max((len(s.encode()) for s in stops), default=0) + 2
        enders = self._stop_enders(stops)

        responses: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        reasons = ["length"] * batch
        active = list(range(batch))

        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
        next_position = positions[:, -1:] + 1
        for step in range(sampling.max_tokens):
            logits = out.logits[:, -1, :].float()
            uniforms = torch.stack([torch.rand((), generator=g, device=device) for g in generators])
            tokens = sample_tokens(logits, sampling.temperature, sampling.top_p, uniforms)
            token_logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
            tokens_list, logp_list = tokens.tolist(), token_logp.tolist()
            still_active = []
            for row in active:
                responses[row].append(tokens_list[row])
                logprobs[row].append(logp_list[row])
                if tokens_list[row] in self.eos_token_ids:
                    reasons[row] = "stop"
                elif stops and (enders is None or tokens_list[row] in enders) and first_stop(
                    self.tokenizer.decode(responses[row][-stop_window:]), stops
                ) is not None:
                    reasons[row] = "stop"
                else:
                    still_active.append(row)
            active = still_active
            if not active or step == sampling.max_tokens - 1:
                break
            attention = torch.cat([attention, attention.new_ones((batch, 1))], dim=-1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=attention,
                position_ids=next_position,
                use_cache=True,
                **_cache_kwarg(self.model, out),
            )
            next_position = next_position + 1
        return [self._completion(r, lp, why, stops) for r, lp, why in zip(responses, logprobs, reasons)]

    def _stop_enders(self, stops: list[str]) -> frozenset[int] | None:
        """Token ids whose text holds the last character of a stop string: only such a token can
        complete one, so only then is the reply's tail decoded and searched. None (check every
        token) when a stop string ends in a non-ASCII character, which byte-level tokens can split."""
        if not stops:
            return None
        key = tuple(sorted(set(stops)))
        cache = self._stop_enders_cache
        if key not in cache:
            lasts = {s[-1] for s in key}
            if all(c.isascii() for c in lasts):
                pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
                cache[key] = frozenset(i for i, piece in enumerate(pieces) if any(c in piece for c in lasts))
            else:
                cache[key] = None
        return cache[key]

    def _completion(self, ids: list[int], logps: list[float], reason: str, stops: list[str]) -> Completion:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = first_stop(text, stops)
        if cut is not None:
            text = text[:cut]
        return Completion(text=text, token_ids=ids, logprobs=logps, finish_reason=reason)
