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
- **Batching.** Prompts are left-padded into batches of at most ``max_batch_size``, grouped by
  length so that padding never takes more than half a batch (:func:`length_batches`); one KV-cached
  forward pass per new token (or several: "Drafts") for the whole batch; a batch ends when every row has stopped. The
  prefill projects only each row's last position through the LM head (``logits_to_keep=1``),
  and rows that have stopped leave the decode batch (the cache is compacted whenever a quarter
  of its rows have stopped). The cache has room for the prompt and the whole reply from the
  start (:mod:`turngym.agents.kv_cache`), so a decode step writes its keys and values in place.
- **Drafts.** Each forward after the prefill feeds, behind a row's last token, tokens guessed
  to come next (``agents/drafts.py``): how most of this policy's earlier replies that began as
  this one does went on (``policy.replies``, a token trie: an agent's format tokens), else what
  followed the latest earlier occurrence of the row's last few tokens in its prompt or reply
  (:func:`lookup_drafts`: prompt-lookup decoding). The forward gives a token at every fed
  position, greedy or sampled, and the row keeps them while each equals the draft fed there,
  plus one more. A sampled row's k-th token uses its generator's k-th draw wherever it is
  taken, so the tokens are those of one token per forward, whatever was drafted (as
  speculative sampling with a draft that is a single guess: the guess is kept exactly when the
  sample equals it); logits, hence logprobs, are equal up to float rounding; rejected drafts'
  cache columns are masked. A reply of format tokens or one that copies a board then takes a
  few forwards instead of one per token. ``draft_budget`` caps the drafts per forward over
  the batch (0: off); a model whose cache is not plain per-layer keys and values never
  drafts (a sliding window would count the masked columns).
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from turngym.agents.drafts import MAX_DRAFTS, MIN_DRAFTS, ReplyMemory, lookup_drafts
from turngym.agents.kv_cache import grouped_attention, planless_attention
from turngym.agents.policy import Completion, Prompt, SamplingParams, prompt_token_ids

__all__ = ["HFPolicy", "first_stop", "length_batches", "lookup_drafts", "sample_tokens"]


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


def length_batches(lengths: Sequence[int], most: int) -> list[list[int]]:
    """The prompts' indices in decode batches of at most ``most``: by length, a batch ending
    where one more prompt would make its left-padded width hold more than twice its tokens.

    One long prompt (an error message among board observations) would otherwise widen every
    row of the batch to its length: each row's prefill and every decode step's attention."""
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        length = lengths[index]
        if current and (len(current) >= most or (len(current) + 1) * length > 2 * (tokens + length)):
            batches.append(current)
            current, tokens = [], 0
        current.append(index)
        tokens += length
    return batches + [current] if current else batches


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
        draft_budget: int = 64,
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
        self.draft_budget = draft_budget
        """Decoding feeds at most this many drafts per forward, over all rows (at most
        ``MAX_DRAFTS`` a row, none below ``MIN_DRAFTS`` a row: a large batch of a large model is
        compute-bound already, where drafts would cost what they save); 0 turns drafting off."""
        self.replies = ReplyMemory()
        """The replies generated so far, a source of drafts (``agents/drafts.py``)."""
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
        weights = self._weights_key() if self.reuse_kv else None
        held = self._held if weights is not None and weights == self._held_for else []
        self.clear_kv()
        kept: list[_HeldKV] = []
        was_training = self.model.training
        self.model.eval()
        try:
            # torch's grouped-query attention on CPU, and no per-shape cuDNN plans on CUDA, for
            # this call only (agents/kv_cache.py)
            with grouped_attention(_inner(self.model)), planless_attention(self.device):
                by_index: dict[int, Completion] = {}
                for batch in length_batches([len(p) for p in ids], self.max_batch_size):
                    done = self._generate_batch([ids[i] for i in batch], [seeds[i] for i in batch], sampling, held,
                                                kept)
                    by_index.update(zip(batch, done))
                completions = [by_index[i] for i in range(len(ids))]
        finally:
            self.model.train(was_training)
        if weights is not None:
            self._held, self._held_for = kept, weights
        if self.draft_budget:  # the memory only feeds drafts
            for completion in completions:
                self.replies.add(completion.token_ids)
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
        arrays = [np.asarray(p, dtype=np.int64) for p in prompts]
        matches: list[tuple[_HeldKV | None, int]] = []
        index = -1
        for array in arrays:
            index, n = self._match(array, held, index + 1)
            matches.append((held[index] if index >= 0 else None, n))
        cached = max(n for _, n in matches)  # cache columns: each row's reused prefix, right-aligned
        input_ids, attention = self._prefill_inputs(prompts, matches, cached)
        width = input_ids.shape[1]
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, cached:]

        inner = _inner(self.model)
        cache_name = _cache_name(type(inner))
        prefill: dict[str, Any] = {}
        # room for the prompt and the whole reply: a decode step then writes its keys and values
        # in place instead of copying the cache (agents/kv_cache.py)
        cache = self._prefill_cache(matches, cached, cached + width + sampling.max_tokens, device)
        if cache is not None:
            prefill[cache_name] = cache
        if _keeps_logits(type(inner)):
            prefill["logits_to_keep"] = 1
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, **prefill)
        stops = [s for s in sampling.stop if s]
        decode = _Decode(
            policy=self, prompts=arrays, sampling=sampling, stops=stops, enders=self._stop_enders(stops),
            generators=[torch.Generator(device=device).manual_seed(int(s)) for s in seeds],
            attention=attention, next_position=positions[:, -1:] + 1,
            # a model with its own cache kind (a sliding window would count rejected drafts'
            # masked columns in its window) decodes one token per forward
            drafting=self.draft_budget > 0 and cache is not None,
        )
        keep: dict[int, _HeldKV] = {}  # prompt index -> its keys and values for the next call
        while True:
            decode.take(out.logits)
            if decode.finished():
                break
            cache = getattr(out, cache_name)
            stopped = decode.stopped_rows()
            if 4 * len(stopped) >= len(decode.rows):  # drop stopped rows from the decode batch
                self._keep_rows(cache, decode.attention, stopped, prompts, decode.responses, keep, kept)
                cache.batch_select_indices(decode.drop_stopped())
            step_ids, step_positions = decode.next_inputs()
            out = self.model(input_ids=step_ids, attention_mask=decode.attention, position_ids=step_positions,
                             use_cache=True, **{cache_name: cache})
        self._keep_rows(getattr(out, cache_name, None), decode.attention, list(enumerate(decode.rows)),
                        prompts, decode.responses, keep, kept)
        kept += [keep[row] for row in sorted(keep)]  # in this batch's prompt order (the search starts near a match)
        return [self._completion(r, lp, why, stops)
                for r, lp, why in zip(decode.responses, decode.logprobs, decode.reasons)]

    def _prefill_inputs(
        self, prompts: list[list[int]], matches: list[tuple[_HeldKV | None, int]], cached: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefill's input ids (what each row does not reuse, right-aligned) and the attention
        mask over the ``cached`` reused columns and those."""
        width = max(len(p) - n for p, (_, n) in zip(prompts, matches))  # new columns, right-aligned
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), cached + width), dtype=torch.long)
        for row, (prompt, (_, n)) in enumerate(zip(prompts, matches)):
            rest = prompt[n:]
            input_ids[row, width - len(rest):] = torch.tensor(rest, dtype=torch.long)
            attention[row, cached - n:cached] = 1
            attention[row, cached + width - len(rest):] = 1
            self.kv_stats["reused_tokens"] += n
            self.kv_stats["prefilled_tokens"] += len(rest)
        return input_ids.to(self.device), attention.to(self.device)

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

    def _prefill_cache(
        self, matches: list[tuple[_HeldKV | None, int]], cached: int, capacity: int, device: torch.device,
    ) -> Any:
        """A batch cache with room for ``capacity`` columns whose first ``cached`` hold each row's
        reused keys/values right-aligned (zeros where a row reuses fewer); ``None`` (the model
        builds its own) when the model's cache is not plain per-layer keys and values, whose
        rows are never held, so that ``cached`` is then 0."""
        from turngym.agents.kv_cache import reserved_cache

        config = _inner(self.model).config
        if not cached:
            return reserved_cache(config, capacity)
        sample = next(entry for entry, _ in matches if entry is not None)
        layers = []
        for layer, (k0, v0) in enumerate(sample.layers):
            keys = k0.new_empty((len(matches), k0.shape[0], capacity, k0.shape[2]), device=device)
            values = v0.new_empty((len(matches), v0.shape[0], capacity, v0.shape[2]), device=device)
            keys[:, :, :cached] = 0  # masked columns must still be finite numbers
            values[:, :, :cached] = 0
            for row, (entry, n) in enumerate(matches):
                if entry is not None and n:
                    keys[row, :, cached - n:cached] = entry.layers[layer][0][:, :n]
                    values[row, :, cached - n:cached] = entry.layers[layer][1][:, :n]
            layers.append((keys, values))
        return reserved_cache(config, capacity, layers, cached)

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

        from turngym.agents.kv_cache import ReservedLayer

        layers = getattr(cache, "layers", None)
        plain = (DynamicLayer, ReservedLayer)
        if not layers or any(type(layer) not in plain or not layer.is_initialized for layer in layers):
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


@dataclass
class _Decode:
    """The decode loop's state for one batch: what each row sampled, which rows are still in the
    batch, their attention columns and next positions (one row per entry of ``rows``).

    With ``drafting``, each forward feeds, after each row's last token, the tokens that the
    policy's reply memory or :func:`lookup_drafts` propose (``agents/drafts.py``); the forward
    yields a token at every fed position (the argmax, or a sample whose uniform is the row's next
    unused draw), and the row keeps tokens while they equal the drafts they were fed with (plus
    the one after). A row's k-th token always uses its generator's k-th draw (draws a rejected
    position took wait in ``pending`` for the row's next tokens), so the kept tokens are exactly
    those one-token steps would choose from the same logits; the rejected drafts' cache columns
    are masked, so the held cache is the row's tokens as always.
    """

    policy: HFPolicy
    prompts: list[np.ndarray]
    sampling: SamplingParams
    stops: list[str]
    enders: frozenset[int] | None
    generators: list[torch.Generator]
    attention: torch.Tensor
    next_position: torch.Tensor
    drafting: bool
    rows: list[int] = field(default_factory=list)
    responses: list[list[int]] = field(default_factory=list)
    logprobs: list[list[float]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)
    drafts: list[list[int]] = field(default_factory=list)
    pending: list[list[torch.Tensor]] = field(default_factory=list)
    """Per prompt index: uniforms drawn from its generator and not yet used by a kept token."""
    fed: int = 0  # columns the last forward appended per row (0: the prefill)

    def __post_init__(self) -> None:
        batch = len(self.prompts)
        self.rows = list(range(batch))
        self.responses, self.logprobs = [[] for _ in range(batch)], [[] for _ in range(batch)]
        self.reasons, self.done = ["length"] * batch, [False] * batch
        self.drafts = [[] for _ in range(batch)]
        self.pending = [[] for _ in range(batch)]
        # enough trailing tokens to contain any stop string (every token is at least one byte)
        self.stop_window = max((len(s.encode()) for s in self.stops), default=0) + 2

    def take(self, logits: torch.Tensor) -> None:
        """Append each row's tokens from a forward's logits (rows, fed positions, vocab)."""
        logits = logits.float()
        rows, width, vocab = logits.shape
        uniforms = self._uniforms(width, logits.device)
        tokens = sample_tokens(logits.reshape(-1, vocab), self.sampling.temperature, self.sampling.top_p,
                               uniforms.reshape(-1)).reshape(rows, width)
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
        tokens_list, logp_list = tokens.tolist(), token_logp.tolist()
        kept_per_row = []
        for pos, row in enumerate(self.rows):
            kept = 0
            while not self.done[row] and kept < len(tokens_list[pos]):
                self._append(row, tokens_list[pos][kept], logp_list[pos][kept])
                kept += 1
                drafts = self.drafts[pos]
                if kept > len(drafts) or tokens_list[pos][kept - 1] != drafts[kept - 1]:
                    break
            del self.pending[row][:kept]
            if self.fed > 1:  # the fed columns past the kept tokens' inputs held rejected drafts
                self.attention[pos, self.attention.shape[1] - self.fed + kept:] = 0
            kept_per_row.append(kept)
        if self.fed:  # after a decode step (the prefill's positions are the prompt's)
            self.next_position += torch.tensor(kept_per_row, device=self.next_position.device)[:, None]

    def _uniforms(self, width: int, device: torch.device) -> torch.Tensor:
        """(rows, width) uniforms: at a row's fed position j (its last token, then its drafts), the
        uniform its (len(reply) + j)-th token uses, one scalar draw at a time so that the k-th draw
        is the same on any device however the draws are grouped; positions past a row's drafts
        (padding) and greedy decoding draw nothing."""
        filler = torch.full((), 0.5, device=device)
        if self.sampling.temperature <= 0:
            return filler.expand(len(self.rows), width)
        out = []
        for pos, row in enumerate(self.rows):
            if self.done[row]:  # takes no token
                out.append(filler.expand(width))
                continue
            pending, need = self.pending[row], 1 + len(self.drafts[pos])
            while len(pending) < need:
                pending.append(torch.rand((), generator=self.generators[pos], device=device))
            out.append(torch.stack(pending[:need] + [filler] * (width - need)))
        return torch.stack(out)

    def _append(self, row: int, token: int, logp: float) -> None:
        response = self.responses[row]
        response.append(token)
        self.logprobs[row].append(logp)
        if token in self.policy.eos_token_ids:
            self.reasons[row], self.done[row] = "stop", True
        elif self.stops and (self.enders is None or token in self.enders) and first_stop(
            self.policy.tokenizer.decode(response[-self.stop_window:]), self.stops
        ) is not None:
            self.reasons[row], self.done[row] = "stop", True
        elif len(response) >= self.sampling.max_tokens:
            self.done[row] = True

    def finished(self) -> bool:
        return all(self.done[row] for row in self.rows)

    def stopped_rows(self) -> list[tuple[int, int]]:
        """(batch position, prompt index) of the rows that have stopped but are still in the batch."""
        return [(pos, row) for pos, row in enumerate(self.rows) if self.done[row]]

    def drop_stopped(self) -> torch.Tensor:
        """Remove the stopped rows; returns the batch positions kept (for the cache)."""
        live = [pos for pos, row in enumerate(self.rows) if not self.done[row]]
        index = torch.tensor(live, device=self.attention.device)
        self.attention, self.next_position = self.attention[index], self.next_position[index]
        self.generators = [self.generators[pos] for pos in live]
        self.rows = [self.rows[pos] for pos in live]
        return index

    def next_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's last token (and drafts), appending their attention columns: a stopped row's
        stay masked, so its held cache is exactly its tokens."""
        live = sum(not self.done[row] for row in self.rows)
        per_row = min(MAX_DRAFTS, self.policy.draft_budget // max(live, 1))
        self.drafts = [self._drafts(row, per_row if per_row >= MIN_DRAFTS else 0) for row in self.rows]
        width = 1 + max(map(len, self.drafts))
        pad = [self.policy.pad_token_id] * width
        ids = torch.tensor([([self.responses[row][-1], *drafts] + pad)[:width]
                            for row, drafts in zip(self.rows, self.drafts)], dtype=torch.long)
        columns = torch.tensor([[0 if self.done[row] or k > len(drafts) else 1 for k in range(width)]
                                for row, drafts in zip(self.rows, self.drafts)], dtype=self.attention.dtype)
        device = self.attention.device
        self.attention = torch.cat([self.attention, columns.to(device)], dim=-1)
        self.fed = width
        positions = self.next_position + torch.arange(width, device=device)[None, :]
        return ids.to(device), positions

    def _drafts(self, row: int, most: int) -> list[int]:
        if not self.drafting or self.done[row] or not most:
            return []
        response = self.responses[row]
        limit = min(most, self.sampling.max_tokens - len(response) - 1)
        drafts = self.policy.replies.draft(response, limit)
        if drafts:
            return drafts
        return lookup_drafts(np.concatenate([self.prompts[row], np.asarray(response, dtype=np.int64)]), limit)
