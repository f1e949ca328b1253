"""A key/value cache that writes each new column in place, for :class:`~turngym.agents.hf.HFPolicy`.

``reserved_cache(config, capacity, prefix=None, prefix_length=0) -> DynamicCache | None``

transformers' ``DynamicCache`` grows by ``torch.cat``: every decode step copies every layer's
whole cache to append one column. At long multi-turn contexts that copy outweighs the step's
weights (SmolLM2-135M, 8 rows of 811 tokens: ~300 MB of keys and values copied per token
against 540 MB of weights read). Here each layer's keys and values are views of a buffer
allocated once with room for the prompt and the reply (``capacity`` columns), so a step writes
one column and copies nothing.

The contract, relied on by ``HFPolicy``:

- A :class:`ReservedLayer` behaves as a ``DynamicLayer`` to the model and to the cache's users:
  ``keys``/``values`` are ``(batch, heads, length, head_dim)`` tensors holding exactly the
  columns written so far (views of the buffer), ``batch_select_indices`` keeps rows, ``crop``
  drops columns. A write past the buffer grows it (one copy, with the same spare room again),
  so a wrong ``capacity`` costs speed, never correctness.
- The numbers are those of ``DynamicCache``: the attention reads the same values in the same
  order; only where they live differs (tested against a ``DynamicCache`` decode, bit for bit).
- ``reserved_cache`` returns ``None`` for a model whose own cache is not made of plain
  ``DynamicLayer``s (sliding-window, recurrent or other layer kinds): those keep the model's
  own cache.

``with grouped_attention(model): ...`` — attention over such a cache for grouped-query models
on CPU. For a masked attention of several query positions (a draft check, a prefill after
reused keys) transformers' SDPA path repeats each key/value head once per query head in its
group before calling torch (CUDA's kernels need it); at 10k cached tokens that copy cost 1.26 s
per SmolLM2 forward against 0.20 s for torch's own grouped attention (``enable_gqa``), whose
CPU kernels take the mask. Inside the block a CPU model configured for ``"sdpa"`` uses the
latter for exactly those calls and transformers' function for every other; the forward
outputs are equal (tested). Only the model's own config changes, and only inside the block:
a trainer's forward and backward elsewhere keep transformers' path.

``with planless_attention(device): ...`` — on CUDA, attention without torch's cuDNN backend,
which builds an execution plan for every new input shape: decoding changes the shape every
forward and training every micro-batch, and on an H200 those plans made decoding ~3.4x and a
first-seen training shape ~19x slower (bench/results/gpu.md). HFPolicy decodes and the
trainer's ``token_logprobs`` runs inside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

__all__ = ["ReservedLayer", "grouped_attention", "planless_attention", "reserved_cache"]

#: The attention implementation ``grouped_attention`` switches a model to.
GROUPED_SDPA = "turngym_grouped_sdpa"


class ReservedLayer(DynamicLayer):
    """One layer's keys and values as views of a preallocated buffer (see module doc)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        """Columns allocated at the first write (and the spare room added when a write overflows)."""
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._length = 0

    def preset(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Take ``keys``/``values`` (batch, heads, columns, head_dim) as the buffer, of which the
        first ``length`` columns are already written."""
        self.lazy_initialization(keys, values)
        self._buffers, self._length = (keys, values), length
        self._expose()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if self._buffers is None or end > self._buffers[0].shape[-2]:
            self._grow(key_states, value_states, end)
        keys, values = self._buffers
        keys[:, :, self._length:end] = key_states
        values[:, :, self._length:end] = value_states
        self._length = end
        self._expose()
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, end: int) -> None:
        columns = max(self.capacity, end + (self.capacity if self._buffers is not None else 0))
        grown = []
        for new, old in zip((key_states, value_states), self._buffers or (None, None)):
            buffer = new.new_empty((*new.shape[:2], columns, new.shape[-1]))
            if old is not None and self._length:
                buffer[:, :, :self._length] = old[:, :, :self._length]
            grown.append(buffer)
        self._buffers = (grown[0], grown[1])

    def _expose(self) -> None:
        assert self._buffers is not None
        self.keys = self._buffers[0][:, :, :self._length]
        self.values = self._buffers[1][:, :, :self._length]

    def get_seq_length(self) -> int:
        return self._length

    def reset(self) -> None:
        self._buffers, self._length = None, 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of columns to remove, got {tokens_to_remove}")
        if tokens_to_remove and self._buffers is not None:
            self._length = max(0, self._length + tokens_to_remove)
            self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._buffers is not None:
            self._buffers = (self._buffers[0].repeat_interleave(repeats, dim=0),
                             self._buffers[1].repeat_interleave(repeats, dim=0))
            self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._buffers is not None:
            self._buffers = (self._buffers[0][indices], self._buffers[1][indices])
            self._expose()


class _ReservedCache(DynamicCache):
    """A ``DynamicCache`` (to the model, which checks for one) made of given layers."""

    def __init__(self, layers: list[ReservedLayer]) -> None:
        Cache.__init__(self, layers=layers)


def _plain_layers(config: Any) -> int | None:
    """The number of layers of ``config``'s own cache when all of them are plain ``DynamicLayer``s."""
    layers = DynamicCache(config=config).layers
    return len(layers) if layers and all(type(layer) is DynamicLayer for layer in layers) else None


def reserved_cache(
    config: Any,
    capacity: int,
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    prefix_length: int = 0,
) -> DynamicCache | None:
    """A cache of :class:`ReservedLayer`s with room for ``capacity`` columns per row, for a model
    with ``config``; ``prefix`` (per layer, keys and values of shape (batch, heads, columns,
    head_dim) with columns >= ``capacity`` or not) are taken as the buffers whose first
    ``prefix_length`` columns are written. ``None`` when the model's own cache is not plain
    per-layer keys and values (module doc)."""
    count = _plain_layers(config)
    if count is None:
        return None
    layers = [ReservedLayer(capacity) for _ in range(count)]
    for layer, (keys, values) in zip(layers, prefix or []):
        layer.preset(keys, values, prefix_length)
    return _ReservedCache(layers)


def _grouped_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                  **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, but a masked attention of several query positions over
    grouped key/value heads runs in torch's grouped kernel (module doc)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    repeated = (attention_mask is not None and getattr(module, "num_key_value_groups", 1) > 1
                and query.shape[2] > 1 and key.shape[-1] == value.shape[-1]
                and kwargs.get("position_bias") is None and kwargs.get("softcap") is None)
    if not repeated:  # transformers' own path does not copy here
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


@contextmanager
def grouped_attention(model: Any) -> Iterator[None]:
    """Inside the block, a CPU ``model`` configured for ``"sdpa"`` attends with
    :func:`_grouped_sdpa` (module doc); any other model is left as it is."""
    config = model.config
    if config._attn_implementation != "sdpa" or model.device.type != "cpu":
        yield
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, _grouped_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(GROUPED_SDPA, sdpa_mask)
    config._attn_implementation = GROUPED_SDPA
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


@contextmanager
def planless_attention(device: torch.device) -> Iterator[None]:
    """Inside the block, scaled-dot-product attention on a CUDA ``device`` runs without torch's
    cuDNN backend (flash, memory-efficient or math instead); elsewhere nothing changes.

    cuDNN's attention builds an execution plan per input shape, and decoding changes the shape
    every forward (one more key column; rows dropped; drafts). On an H200 (torch 2.11) that
    plan-building took ~3.7 ms of CPU per layer call, so a 12-layer model decoded at ~58 ms a
    step instead of ~7 ms (bench/results/gpu.md). The switch is torch's process-wide backend
    flag, so a training step running in another thread meanwhile also skips cuDNN: a different
    kernel for the same attention, never a different result beyond rounding."""
    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        yield
