"""Greedy decoding with prompt-lookup drafts (agents/hf.py): the same tokens as one token per
forward, the same logprobs within float rounding, the same held caches for the next turn, and
fewer forward passes on a reply that copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from turngym.agents.hf import HFPolicy, lookup_drafts
from turngym.agents.models import load_model
from turngym.agents.policy import SamplingParams

ATOL = 1e-5


@pytest.fixture(scope="module")
def model_and_tokenizer():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model("tiny:seed=0")
    torch.set_num_threads(threads)


def chat_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         return_dict=False)


def test_lookup_drafts_copy_what_followed_the_latest_match():
    assert lookup_drafts(np.array([5, 6, 7, 8, 9, 5, 6, 7]), 2) == [8, 9]
    assert lookup_drafts(np.array([1, 2, 3, 4]), 5) == []  # no n-gram of 2+ recurs
    assert lookup_drafts(np.array([1, 2, 3, 1, 2]), 0) == []
    # a loop is drafted on past the sequence's end
    assert lookup_drafts(np.array([9, 1, 2, 1, 2]), 5) == [1, 2, 1, 2, 1]
    # the longest recurring suffix wins over a later, shorter one
    assert lookup_drafts(np.array([1, 2, 3, 7, 0, 2, 3, 4, 1, 2, 3]), 1) == [7]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=40), st.integers(0, 10))
def test_lookup_drafts_continue_an_earlier_occurrence(ids, limit):
    ids = np.array(ids)
    drafts = lookup_drafts(ids, limit)
    assert len(drafts) in (0, limit)
    if drafts:
        # some n >= 2: the last n tokens occur earlier, and the drafts are what the sequence,
        # extended by them, would repeat from there
        extended = np.concatenate([ids, drafts])
        n_len = len(ids)
        assert any(
            (ids[start - n:start] == ids[n_len - n:]).all()
            and (extended[start:start + limit] == drafts).all()
            for n in range(2, min(4, n_len - 1) + 1)
            for start in range(n, n_len)
        )


def prompts_for(tok) -> list[list[int]]:
    board = "#####\n#_P_#\n#_X_#\n#####\n"
    return [chat_ids(tok, text) for text in (board * 3, "abcabcabcabc", "hi", "x" * 40, board + "go")]


def test_greedy_with_drafts_equals_one_token_per_forward(model_and_tokenizer):
    model, tok = model_and_tokenizer
    drafting, plain = HFPolicy(model, tok), HFPolicy(model, tok, draft_budget=0)
    calls = {"drafting": 0, "plain": 0}
    current = ["drafting"]
    hook = model.register_forward_hook(lambda *_: calls.__setitem__(current[0], calls[current[0]] + 1))
    try:
        prompts = prompts_for(tok)
        for turn in range(3):  # across turns: the held caches of a drafting call are exact too
            sampling = SamplingParams(temperature=0.0, max_tokens=48, stop=["##"] if turn == 1 else [])
            current[0] = "drafting"
            got = drafting.generate(prompts, sampling)
            current[0] = "plain"
            want = plain.generate(prompts, sampling)
            assert [c.token_ids for c in got] == [c.token_ids for c in want]
            assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
            assert [c.text for c in got] == [c.text for c in want]
            for a, b in zip(got, want):
                assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=ATOL, rtol=0)
            prompts = [p + c.token_ids + chat_ids(tok, f"turn {turn}") for p, c in zip(prompts, got)]
    finally:
        hook.remove()
    assert drafting.kv_stats == plain.kv_stats  # both reused the same held prefixes
    assert drafting.kv_stats["reused_tokens"] > 0
    assert calls["drafting"] < calls["plain"]


def test_sampling_never_drafts(model_and_tokenizer):
    model, tok = model_and_tokenizer
    widths = []
    hook = model.register_forward_pre_hook(lambda _m, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                           with_kwargs=True)
    try:
        HFPolicy(model, tok).generate(prompts_for(tok), SamplingParams(temperature=1.0, max_tokens=16, seeds=[1, 2, 3, 4, 5]))
    finally:
        hook.remove()
    assert widths[1:] and set(widths[1:]) == {1}  # after the prefill, one token per forward


def test_models_with_their_own_cache_kind_do_not_draft(model_and_tokenizer):
    # a sliding window would count rejected drafts' masked columns in its window
    from transformers import MistralConfig, MistralForCausalLM

    _, tok = model_and_tokenizer
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=8, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id)).eval()
    widths = []
    hook = model.register_forward_pre_hook(lambda _m, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                           with_kwargs=True)
    try:
        HFPolicy(model, tok).generate(prompts_for(tok), SamplingParams(temperature=0.0, max_tokens=16))
    finally:
        hook.remove()
    assert widths[1:] and set(widths[1:]) == {1}
