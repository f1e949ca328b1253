"""The in-place KV cache (agents/kv_cache.py): the same numbers as transformers' DynamicCache,
whatever the reserved room, through row selection and cropping; models whose cache has other
layer kinds are left to their own cache."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig
from transformers.cache_utils import DynamicCache

from turngym.agents.hf import _cache_name
from turngym.agents.kv_cache import ReservedLayer, planless_attention, reserved_cache

#: the forward's KV-cache keyword in the installed transformers (``cache`` since 5.2x, ``past_key_values`` before)
CACHE = _cache_name(LlamaForCausalLM)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def decode(model, cache, prompt: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Greedy decode with ``cache`` (None: the model's own); the logits of every step."""
    seen = []
    with torch.no_grad():
        out = model(input_ids=prompt, **{CACHE: cache}, use_cache=True)
        for _ in range(steps):
            logits = out.logits[:, -1]
            seen.append(logits)
            out = model(input_ids=logits.argmax(-1, keepdim=True), **{CACHE: getattr(out, CACHE)}, use_cache=True)
    return seen


@pytest.mark.parametrize("capacity", [1, 7, 10, 64])
def test_decode_equals_dynamic_cache_bit_for_bit(model, capacity):
    # capacity 1 and 7 overflow (the buffer grows), 10 is exact (prompt 6 + 4 fed tokens), 64 has spare room
    prompt = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(1))
    want = decode(model, None, prompt, 5)
    got = decode(model, reserved_cache(model.config, capacity), prompt, 5)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_layers_expose_only_written_columns(model):
    cache = reserved_cache(model.config, 32)
    prompt = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model(input_ids=prompt, **{CACHE: cache}, use_cache=True)
    reference = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=prompt, **{CACHE: reference}, use_cache=True)
    for ours, theirs in zip(cache.layers, reference.layers):
        assert isinstance(ours, ReservedLayer)
        assert ours.keys.shape == theirs.keys.shape == (2, 2, 5, 8)
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
    assert cache.get_seq_length() == 5


def test_select_rows_and_crop_match_dynamic_cache(model):
    prompt = torch.randint(0, 50, (4, 6), generator=torch.Generator().manual_seed(3))
    caches = [reserved_cache(model.config, 16), DynamicCache(config=model.config)]
    for cache in caches:
        with torch.no_grad():
            model(input_ids=prompt, **{CACHE: cache}, use_cache=True)
        cache.batch_select_indices(torch.tensor([3, 1]))
        cache.crop(-2)
    ours, theirs = caches
    for a, b in zip(ours.layers, theirs.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    # and decoding on from the cropped, selected rows still agrees
    step = torch.tensor([[5], [7]])
    with torch.no_grad():
        got = model(input_ids=step, **{CACHE: ours}, use_cache=True).logits
        want = model(input_ids=step, **{CACHE: theirs}, use_cache=True).logits
    assert torch.equal(got, want)


def test_preset_buffers_are_used_in_place(model):
    keys = torch.zeros(1, 2, 12, 8)
    values = torch.zeros(1, 2, 12, 8)
    keys[:, :, :3] = 1.0
    cache = reserved_cache(model.config, 12, [(keys, values), (keys.clone(), values.clone())], 3)
    layer = cache.layers[0]
    assert layer.get_seq_length() == 3 and torch.equal(layer.keys, keys[:, :, :3])
    layer.update(torch.full((1, 2, 1, 8), 2.0), torch.full((1, 2, 1, 8), 3.0))
    assert keys[0, 0, 3, 0] == 2.0 and values[0, 0, 3, 0] == 3.0  # written into the given buffer
    assert layer.keys.shape[-2] == 4


def test_sliding_window_models_keep_their_own_cache():
    config = MistralConfig(num_hidden_layers=2, sliding_window=16, hidden_size=32, intermediate_size=64,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=50)
    assert reserved_cache(config, 32) is None


def test_grouped_attention_equals_transformers_sdpa_and_is_undone(model, monkeypatch):
    # model: 4 query heads over 2 key/value heads; a masked prefill after cached keys, several queries
    import turngym.agents.kv_cache as kv_cache

    assert model.config._attn_implementation == "sdpa"
    prompt = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(4))
    step = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[0, :2] = 0  # a left-padded row

    def run():
        cache = reserved_cache(model.config, 16)
        with torch.no_grad():
            model(input_ids=prompt, attention_mask=mask[:, :6], **{CACHE: cache}, use_cache=True)
            return model(input_ids=step, attention_mask=mask, **{CACHE: cache}, use_cache=True).logits

    want = run()
    grouped_calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        grouped_calls.append(kwargs.get("enable_gqa", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with kv_cache.grouped_attention(model):
        got = run()
    assert model.config._attn_implementation == "sdpa"  # undone after the block
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert any(grouped_calls)  # the masked several-query calls took torch's grouped kernel


def _sdpa_backends() -> tuple[bool, bool, bool, bool]:
    cuda = torch.backends.cuda
    return cuda.cudnn_sdp_enabled(), cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.math_sdp_enabled()


def test_planless_attention_turns_only_cudnn_off_only_on_cuda_and_restores():
    # torch's backend flags exist (and are settable) in a CPU build too, so the switch is testable here;
    # its speed on a GPU is in bench/results/gpu/cudnn-ab.txt
    before = _sdpa_backends()
    assert before[0], "cuDNN attention is on by default"
    with planless_attention(torch.device("cpu")):
        assert _sdpa_backends() == before
    with planless_attention(torch.device("cuda")):
        assert _sdpa_backends() == (False, True, True, True)
    assert _sdpa_backends() == before
    with pytest.raises(RuntimeError), planless_attention(torch.device("cuda")):
        raise RuntimeError("a failing forward")
    assert _sdpa_backends() == before
