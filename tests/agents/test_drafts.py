"""Decoding with drafts (agents/hf.py, agents/drafts.py), greedy and sampled: the same tokens as
one token per forward, the same logprobs within float rounding, the same held caches for the
next turn, and fewer forward passes on a reply that copies or repeats an earlier reply's format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from turngym.agents.drafts import ReplyMemory
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


def assert_same_completions(got, want) -> None:
    """The same ids, finish reasons and texts; logprobs within float rounding."""
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
    assert [c.text for c in got] == [c.text for c in want]
    for a, b in zip(got, want):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=ATOL, rtol=0)


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
            assert_same_completions(got, want)
            prompts = [p + c.token_ids + chat_ids(tok, f"turn {turn}") for p, c in zip(prompts, got)]
    finally:
        hook.remove()
    assert drafting.kv_stats == plain.kv_stats  # both reused the same held prefixes
    assert drafting.kv_stats["reused_tokens"] > 0
    assert calls["drafting"] < calls["plain"]


def test_reply_memory_drafts_the_majority_continuation():
    memory = ReplyMemory()
    for reply in ([1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 5], [1, 2, 6]):
        memory.add(reply)
    # 4 replies through [1, 2]: 3 of them went on with 3 (3 > 4/2), then 2 of those 3 with 5
    assert memory.draft([], 10) == [1, 2, 3, 5]
    assert memory.draft([1, 2, 3], 10) == [5]
    assert memory.draft([1, 2, 3, 5], 10) == []  # where replies ended
    assert memory.draft([7], 10) == []  # no earlier reply began so
    assert memory.draft([], 2) == [1, 2]
    memory.add([1, 2, 3, 4])
    assert memory.draft([], 10) == [1, 2, 3]  # 4 and 5 two of four each: no majority, the draft ends


def test_reply_memory_is_bounded():
    memory = ReplyMemory(depth=3, max_nodes=8)
    memory.add([1, 2, 3, 4, 5])
    assert memory.draft([], 10) == [1, 2, 3]  # only the first `depth` tokens are kept
    memory.add([9, 9, 9])  # 7 nodes
    memory.add([8, 8, 8])  # 10 nodes: at least max_nodes, so the next reply starts a fresh memory
    assert memory.draft([9], 10) == [9, 9]
    memory.add([7, 7, 7])
    assert memory.draft([], 10) == [7, 7, 7]
    assert memory.draft([1], 10) == memory.draft([9], 10) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), max_size=6), max_size=12), st.lists(st.integers(0, 3), max_size=3),
       st.integers(0, 8))
def test_reply_memory_drafts_follow_a_majority_of_the_replies(replies, prefix, limit):
    memory = ReplyMemory()
    for reply in replies:
        memory.add(reply)
    drafts = memory.draft(prefix, limit)
    assert len(drafts) <= limit
    for k in range(len(drafts)):  # each drafted token: more than half of the replies through its node
        head = prefix + drafts[:k]
        through = [r for r in replies if r[:len(head)] == head]
        assert 2 * sum(r[len(head):len(head) + 1] == [drafts[k]] for r in through) > len(through)


def _forward_widths(model):
    widths = []
    hook = model.register_forward_pre_hook(lambda _m, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                           with_kwargs=True)
    return widths, hook


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_sampling_with_drafts_equals_one_token_per_forward(model_and_tokenizer, top_p):
    model, tok = model_and_tokenizer
    drafting, plain = HFPolicy(model, tok), HFPolicy(model, tok, draft_budget=0)
    prompts = prompts_for(tok)
    seeds = [11, 12, 13, 14, 15]
    # the memory holds what these seeds sample (drafts kept) and what other seeds sampled (drafts
    # that a different sample rejects part-way)
    for memory_seeds in ([21, 22, 23, 24, 25], seeds, seeds):
        for c in plain.generate(prompts, SamplingParams(temperature=1.0, top_p=top_p, max_tokens=24, seeds=memory_seeds)):
            drafting.replies.add(c.token_ids)
    plain.clear_kv()  # both start without held caches
    plain.kv_stats = {k: 0 for k in plain.kv_stats}
    widths, hook = _forward_widths(model)
    try:
        for turn in range(3):  # across turns: the held caches of a drafting call are exact too
            sampling = SamplingParams(temperature=1.0, top_p=top_p, max_tokens=24, seeds=[s + turn for s in seeds],
                                      stop=["##"] if turn == 1 else [])
            start = len(widths)
            got = drafting.generate(prompts, sampling)
            drafted = widths[start:]
            want = plain.generate(prompts, sampling)
            assert_same_completions(got, want)
            plain_forwards = len(widths) - start - len(drafted)
            if turn == 0:  # the remembered replies were drafted, and took fewer forwards
                assert max(drafted[1:]) > 1
                assert len(drafted) < plain_forwards
            prompts = [p + c.token_ids + chat_ids(tok, f"turn {turn}") for p, c in zip(prompts, got)]
    finally:
        hook.remove()
    assert drafting.kv_stats == plain.kv_stats


def test_a_sampled_reply_does_not_depend_on_its_batch_or_the_memory(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = prompts_for(tok)
    sampling = SamplingParams(temperature=1.0, max_tokens=24, seeds=[31, 32, 33, 34, 35])
    policy = HFPolicy(model, tok, reuse_kv=False)
    together = [c.token_ids for c in policy.generate(prompts, sampling)]  # the memory now holds them
    alone = [policy.generate([p], SamplingParams(temperature=1.0, max_tokens=24, seeds=[s]))[0].token_ids
             for p, s in zip(prompts, sampling.seeds)]
    assert alone == together
    fresh = HFPolicy(model, tok, reuse_kv=False)
    assert [c.token_ids for c in fresh.generate(prompts, sampling)] == together


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
