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
  forward pass per new token for the whole batch; a batch ends when every row has stopped. The
  prefill projects only each row's last position through the LM head (``logits_to_keep=1``),
  and rows that have stopped leave the decode batch (the cache is compacted whenever a quarter
  of its rows have stopped).
- **KV reuse across turns.** After each call the policy keeps, per completion, the keys and
  values of ``prompt + response`` (all but the last sampled token, which was never fed). At the
  next call each prompt takes the held entry with which it shares the longest token prefix and
  prefills only the rest: a multi-turn episode whose next prompt extends its last prompt and
  reply (token-in/token-out) re-encodes only the new messages; a prompt whose reply was
  re-tokenised differently reuses up to the first differing token; an unrelated prompt is
  prefilled whole. What is kept: only the entries of the latest call, at most
  ``kv_budget_bytes``; all of it is dropped when any weight changed (an optimiser step, a
  :meth:`~HFPolicy.sync_weights` copy, ``model.to``), judged by each parameter's storage and
  in-place version counter. The numbers are those of a fresh prefill up to float rounding.
  ``reuse_kv=False`` turns it off; :meth:`~HFPolicy.clear_kv` frees it; ``kv_stats`` counts
  reused and prefilled prompt tokens. Models whose cache is not a plain per-layer key/value
  cache (sliding-window or recurrent layers) always prefill whole.
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
from dataclasses import dataclass
from typing import Any

import numpy as np
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


def _inner(model: Any) -> Any:
    """The transformers model under a peft wrapper (which passes keywords through to it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _cache_kwarg(model: Any, out: Any) -> dict[str, Any]:
    """The keyword argument that hands ``out``'s KV cache to the next forward (a peft model
    passes keywords through to its base model, whose signature decides)."""
    name = _cache_name(type(_inner(model)))
    return {name: getattr(out, name)}


@functools.cache
def _keeps_logits(model_class: type) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (project only the last positions)."""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


@dataclass
class _HeldKV:
    """One completion's keys and values, kept for the next call (see "KV reuse" above)."""

    ids: np.ndarray
    """The tokens they belong to: the prompt and all sampled tokens but the last."""
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    """Per layer (keys, values), each (heads, len(ids), head_dim)."""


def _common_prefix(a: np.ndarray, b: np.ndarray, limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share, at most ``limit``."""
    n = min(len(a), len(b), limit)
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


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
        reuse_kv: bool = True,
        kv_budget_bytes: int = 2 << 30,
    ) -> None:
        if device is not None:
            model.to(device)
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.reuse_kv = reuse_kv
        """Keep each completion's KV cache for the next call (module doc, "KV reuse")."""
        self.kv_budget_bytes = kv_budget_bytes
        """Most bytes of keys and values held between calls."""
        self.kv_stats = {"reused_tokens": 0, "prefilled_tokens": 0}
        """Prompt tokens taken from held caches vs run through the model, over all calls."""
        self._held: list[_HeldKV] = []
        self._held_for: tuple[tuple[int, int], ...] | None = None
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

    def _weights_key(self) -> tuple[tuple[int, int], ...]:
        """Changes whenever any parameter is replaced or modified in place (optimiser steps,
        ``copy_``, ``model.to``): each parameter's storage and autograd version counter."""
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    def clear_kv(self) -> None:
        """Free the keys and values held for the next call."""
        self._held, self._held_for = [], None

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
        weights = self._weights_key() if self.reuse_kv else None
        held = self._held if weights is not None and weights == self._held_for else []
        self.clear_kv()
        kept: list[_HeldKV] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(ids), self.max_batch_size):
                stop = start + self.max_batch_size
                completions += self._generate_batch(ids[start:stop], seeds[start:stop], sampling, held, kept)
        finally:
            self.model.train(was_training)
        if weights is not None:
            self._held, self._held_for = kept, weights
        return completions

    @torch.inference_mode()
    def _generate_batch(
        self,
        prompts: list[list[int]],
        seeds: list[int],
        sampling: SamplingParams,
        held: list[_HeldKV],
        kept: list[_HeldKV],
    ) -> list[Completion]:
        device = self.device
        batch = len(prompts)
        arrays = [np.asarray(p, dtype=np.int64) for p in prompts]
        matches: list[tuple[_HeldKV | None, int]] = []
        index = -1
        for array in arrays:
            index, n = self._match(array, held, index + 1)
            matches.append((held[index] if index >= 0 else None, n))
        cached = max(n for _, n in matches)  # cache columns: each row's reused prefix, right-aligned
        width = max(len(p) - n for p, (_, n) in zip(prompts, matches))  # new columns, right-aligned
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((batch, cached + width), dtype=torch.long)
        for row, (prompt, (_, n)) in enumerate(zip(prompts, matches)):
            rest = prompt[n:]
            input_ids[row, width - len(rest):] = torch.tensor(rest, dtype=torch.long)
            attention[row, cached - n:cached] = 1
            attention[row, cached + width - len(rest):] = 1
            self.kv_stats["reused_tokens"] += n
            self.kv_stats["prefilled_tokens"] += len(rest)
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, cached:]
        generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

        stops = [s for s in sampling.stop if s]
        # enough trailing tokens to contain any stop string (every token is at least one byte)
        stop_window = max((len(s.encode()) for s in stops), default=0) + 2
        enders = self._stop_enders(stops)

        responses: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        reasons = ["length"] * batch
        keep: dict[int, _HeldKV] = {}  # prompt index -> its keys and values for the next call

        inner = _inner(self.model)
        prefill: dict[str, Any] = {}
        if cached:
            prefill[_cache_name(type(inner))] = self._held_cache(matches, cached, device)
        if _keeps_logits(type(inner)):
            prefill["logits_to_keep"] = 1
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, **prefill)
        next_position = positions[:, -1:] + 1
        rows = list(range(batch))  # the prompt index of each row still in the decode batch
        for step in range(sampling.max_tokens):
            logits = out.logits[:, -1, :].float()
            uniforms = torch.stack([torch.rand((), generator=g, device=device) for g in generators])
            tokens = sample_tokens(logits, sampling.temperature, sampling.top_p, uniforms)
            token_logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
            tokens_list, logp_list = tokens.tolist(), token_logp.tolist()
            live = []
            for pos, row in enumerate(rows):
                if reasons[row] != "length":
                    live.append(False)  # stopped earlier; waits in the batch for the next compaction
                    continue
                responses[row].append(tokens_list[pos])
                logprobs[row].append(logp_list[pos])
                if tokens_list[pos] in self.eos_token_ids:
                    reasons[row] = "stop"
                elif stops and (enders is None or tokens_list[pos] in enders) and first_stop(
                    self.tokenizer.decode(responses[row][-stop_window:]), stops
                ) is not None:
                    reasons[row] = "stop"
                live.append(reasons[row] == "length")
            if not any(live) or step == sampling.max_tokens - 1:
                break
            cache = getattr(out, _cache_name(type(inner)))
            if 4 * sum(live) <= 3 * len(rows):  # drop stopped rows from the decode batch
                self._keep_rows(cache, attention, [(p, r) for p, r in enumerate(rows) if not live[p]],
                                prompts, responses, keep, kept)
                index = torch.tensor([p for p in range(len(rows)) if live[p]], device=device)
                cache.batch_select_indices(index)
                attention, next_position, tokens = attention[index], next_position[index], tokens[index]
                generators = [g for g, alive in zip(generators, live) if alive]
                rows = [r for r, alive in zip(rows, live) if alive]
                live = [True] * len(rows)
            # a stopped row's next column stays masked, so its held cache is exactly its tokens
            column = torch.tensor(live, dtype=attention.dtype, device=device)[:, None]
            attention = torch.cat([attention, column], dim=-1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=attention,
                position_ids=next_position,
                use_cache=True,
                **{_cache_name(type(inner)): cache},
            )
            next_position = next_position + 1
        self._keep_rows(getattr(out, _cache_name(type(inner)), None), attention, list(enumerate(rows)),
                        prompts, responses, keep, kept)
        kept += [keep[row] for row in sorted(keep)]  # in prompt order, which the next call's search expects
        return [self._completion(r, lp, why, stops) for r, lp, why in zip(responses, logprobs, reasons)]

    # -- KV reuse ----------------------------------------------------------------------------

    def _match(self, prompt: np.ndarray, held: list[_HeldKV], first: int) -> tuple[int, int]:
        """The index of the held entry sharing the longest token prefix with ``prompt`` (-1 for
        none) and that length, at most all but the prompt's last token (which must be fed to get
        the next logits). Entries are tried from ``first`` on (the rollout engine sends episodes
        in the same order every call) and the search ends at one the prompt extends."""
        best, length = -1, 0
        for k in range(len(held)):
            index = (first + k) % len(held)
            ids = held[index].ids
            if min(len(ids), len(prompt) - 1) <= length:
                continue
            common = _common_prefix(ids, prompt, len(prompt) - 1)
            if common > length:
                best, length = index, common
                if common == len(ids):
                    break
        return best, length

    def _held_cache(self, matches: list[tuple[_HeldKV | None, int]], cached: int, device: torch.device) -> Any:
        """A batch cache of ``cached`` columns: each row's reused keys/values right-aligned."""
        from transformers.cache_utils import DynamicCache

        sample = next(entry for entry, _ in matches if entry is not None)
        layers = []
        for layer, (k0, v0) in enumerate(sample.layers):
            keys = k0.new_zeros((len(matches), k0.shape[0], cached, k0.shape[2]))
            values = v0.new_zeros((len(matches), v0.shape[0], cached, v0.shape[2]))
            for row, (entry, n) in enumerate(matches):
                if entry is not None and n:
                    keys[row, :, cached - n:] = entry.layers[layer][0][:, :n]
                    values[row, :, cached - n:] = entry.layers[layer][1][:, :n]
            layers.append((keys.to(device), values.to(device)))
        return DynamicCache(ddp_cache_data=layers)

    def _keep_rows(
        self,
        cache: Any,
        attention: torch.Tensor,
        rows: list[tuple[int, int]],
        prompts: list[list[int]],
        responses: list[list[int]],
        keep: dict[int, _HeldKV],
        kept: list[_HeldKV],
    ) -> None:
        """Put the keys and values of ``rows`` ((batch position, prompt index) pairs) in ``keep``
        for the next call, within the byte budget counting ``kept`` (earlier batches); only plain
        per-layer key/value caches qualify."""
        if not self.reuse_kv or cache is None or not rows:
            return
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer or not layer.is_initialized for layer in layers):
            return
        used = sum(k.nbytes + v.nbytes for e in [*kept, *keep.values()] for k, v in e.layers)
        for pos, row in rows:
            ids = prompts[row] + responses[row][:-1]
            columns = attention[pos].bool()
            if int(columns.sum()) != len(ids):
                continue  # not this row's tokens exactly (should not happen): prefill it next time
            entry = _HeldKV(np.asarray(ids, dtype=np.int64),
                            [(layer.keys[pos][:, columns], layer.values[pos][:, columns]) for layer in layers])
            size = sum(k.nbytes + v.nbytes for k, v in entry.layers)
            if used + size > self.kv_budget_bytes:
                return
            keep[row] = entry
            used += size

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
