"""HFPolicy across turns: KV reuse, the last-position-only prefill and stopped rows leaving the
decode batch change no sampled token and no logprob beyond float rounding.

The reference is an independent re-implementation of the sampling contract: at every step a
full forward pass over ``prompt + response so far`` (no cache, no padding), then the row's
own generator's next uniform through :func:`sample_tokens`.
"""

from __future__ import annotations

import pytest
import torch

from turngym.agents.hf import HFPolicy, sample_tokens
from turngym.agents.models import load_model
from turngym.agents.policy import Completion, SamplingParams

ATOL = 1e-5


@pytest.fixture(scope="module")
def model_and_tokenizer():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads on a busy machine
    yield load_model("tiny:seed=0")
    torch.set_num_threads(threads)


def chat_ids(tokenizer, text: str, role: str = "user", generation_prompt: bool = True) -> list[int]:
    return tokenizer.apply_chat_template([{"role": role, "content": text}],
                                         add_generation_prompt=generation_prompt, return_dict=False)


def next_prompt(tokenizer, prompt: list[int], completion: Completion, observation: str) -> list[int]:
    """Token-in/token-out: the last prompt, the sampled ids, then the new message's ids."""
    return prompt + completion.token_ids + tokenizer.encode("\n", add_special_tokens=False) + chat_ids(
        tokenizer, observation)


def reference(model, prompt: list[int], seed: int, sampling: SamplingParams, eos: frozenset[int]):
    """Ids and logprobs by the contract, one uncached forward pass per token."""
    generator = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    logps: list[float] = []
    with torch.no_grad():
        for _ in range(sampling.max_tokens):
            logits = model(torch.tensor([prompt + ids])).logits[:, -1, :].float()
            u = torch.rand((), generator=generator)[None]
            token = int(sample_tokens(logits, sampling.temperature, sampling.top_p, u)[0])
            ids.append(token)
            logps.append(float(torch.log_softmax(logits, -1)[0, token]))
            if token in eos:
                break
    return ids, logps


def assert_same(got: list[Completion], want: list[Completion]) -> None:
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
    for a, b in zip(got, want):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=ATOL, rtol=0)


def test_multi_turn_with_kv_reuse_equals_a_fresh_prefill_every_turn(model_and_tokenizer):
    model, tok = model_and_tokenizer
    reuse, fresh = HFPolicy(model, tok), HFPolicy(model, tok, reuse_kv=False)
    prompts = [chat_ids(tok, text) for text in ("push the box", "hi", "a" * 30, "move left twice")]
    last_prompts: list[list[int]] = []
    last: list[Completion] = []
    for turn in range(4):
        sampling = SamplingParams(temperature=1.0, max_tokens=10, seeds=[100 * turn + i for i in range(4)])
        before = dict(reuse.kv_stats)
        got, want = reuse.generate(prompts, sampling), fresh.generate(prompts, sampling)
        assert_same(got, want)
        reused = reuse.kv_stats["reused_tokens"] - before["reused_tokens"]
        prefilled = reuse.kv_stats["prefilled_tokens"] - before["prefilled_tokens"]
        if turn == 0:
            assert reused == 0 and prefilled == sum(map(len, prompts))
        else:  # everything but the last reply token and the new message came from the held caches
            assert reused == sum(len(p) for p in prompts) - prefilled
            assert prefilled == sum(len(p) - len(old) - len(c.token_ids) + 1
                                    for p, old, c in zip(prompts, last_prompts, last))
        for prompt, seed, completion in zip(prompts, sampling.seeds, got):
            ids, logps = reference(model, prompt, seed, sampling, reuse.eos_token_ids)
            assert completion.token_ids == ids
            assert torch.allclose(torch.tensor(completion.logprobs), torch.tensor(logps), atol=ATOL, rtol=0)
        last_prompts, last = prompts, got
        prompts = [next_prompt(tok, p, c, f"observation {turn}: " + "#" * (3 * i))
                   for i, (p, c) in enumerate(zip(prompts, got))]
    assert fresh.kv_stats["reused_tokens"] == 0


def test_prompts_that_do_not_extend_the_last_fall_back_to_their_common_prefix(model_and_tokenizer):
    model, tok = model_and_tokenizer
    reuse, fresh = HFPolicy(model, tok), HFPolicy(model, tok, reuse_kv=False)
    first = [chat_ids(tok, "push the box"), chat_ids(tok, "hello there"), chat_ids(tok, "zz")]
    sampling = SamplingParams(temperature=1.0, max_tokens=8, seeds=[1, 2, 3])
    done = reuse.generate(first, sampling)
    fresh.generate(first, sampling)
    retokenised = first[0] + done[0].token_ids[:-2] + tok.encode(" x", add_special_tokens=False)
    second = [
        retokenised,                     # the reply's tail re-encoded differently: the rest reused
        first[1],                        # the same prompt again: all but its last token reused
        chat_ids(tok, "something new"),  # shares only the template's opening tokens
        first[2] + done[2].token_ids + chat_ids(tok, "go on"),  # extends its episode exactly
    ]
    sampling = SamplingParams(temperature=1.0, max_tokens=8, seeds=[4, 5, 6, 7])
    before = reuse.kv_stats["reused_tokens"]
    assert_same(reuse.generate(second, sampling), fresh.generate(second, sampling))
    reused = reuse.kv_stats["reused_tokens"] - before
    assert reused >= (len(first[0]) + len(done[0].token_ids) - 2) + (len(first[1]) - 1) + (len(first[2]) + len(done[2].token_ids) - 1)


def test_changed_weights_drop_the_held_cache(model_and_tokenizer):
    _, tok = model_and_tokenizer
    model = load_model("tiny:seed=0")[0]
    reuse = HFPolicy(model, tok)
    prompts = [chat_ids(tok, "push the box"), chat_ids(tok, "hi")]
    sampling = SamplingParams(temperature=1.0, max_tokens=8, seeds=[1, 2])
    done = reuse.generate(prompts, sampling)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():  # stands in for an optimiser step on a shared model
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=noise) * 0.5)
    following = [p + c.token_ids + chat_ids(tok, "next") for p, c in zip(prompts, done)]
    before = reuse.kv_stats["reused_tokens"]
    assert_same(reuse.generate(following, sampling), HFPolicy(model, tok, reuse_kv=False).generate(following, sampling))
    assert reuse.kv_stats["reused_tokens"] == before
    # a weight copy through sync_weights drops it too
    reuse.generate(following, sampling)
    reuse.sync_weights(load_model("tiny:seed=3")[0].state_dict())
    before = reuse.kv_stats["reused_tokens"]
    reuse.generate([p + [tok.eos_token_id] for p in following], sampling)
    assert reuse.kv_stats["reused_tokens"] == before


def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(model_and_tokenizer):
    model, tok = model_and_tokenizer
    policy = HFPolicy(model, tok)
    eos = frozenset(range(0, len(tok), 9))  # one token in nine ends a reply: rows stop at many steps
    policy.eos_token_ids = eos
    prompts = [chat_ids(tok, f"episode {i}: " + "ab" * i) for i in range(8)]
    sampling = SamplingParams(temperature=1.0, max_tokens=24, seeds=list(range(8)))
    rows: list[int] = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: rows.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
    try:
        got = policy.generate(prompts, sampling)
    finally:
        hook.remove()
    assert rows[0] == 8 and rows[-1] < 8 and rows == sorted(rows, reverse=True)
    lengths = {len(c.token_ids) for c in got}
    assert len(lengths) > 3 and sum(c.finish_reason == "stop" for c in got) > 4  # the batch did shrink
    for prompt, seed, completion in zip(prompts, sampling.seeds, got):
        ids, logps = reference(model, prompt, seed, sampling, eos)
        assert completion.token_ids == ids
        assert torch.allclose(torch.tensor(completion.logprobs), torch.tensor(logps), atol=ATOL, rtol=0)
    # and the caches they left behind serve the next turn exactly
    following = [p + c.token_ids + chat_ids(tok, "next") for p, c in zip(prompts, got)]
    again = policy.generate(following, sampling)
    before_fresh = HFPolicy(model, tok, reuse_kv=False)
    before_fresh.eos_token_ids = eos
    assert_same(again, before_fresh.generate(following, sampling))
    assert policy.kv_stats["reused_tokens"] >= sum(len(p) + len(c.token_ids) - 1 for p, c in zip(prompts, got))


def test_the_byte_budget_bounds_what_is_held(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = [chat_ids(tok, "push the box"), chat_ids(tok, "hi")]
    sampling = SamplingParams(temperature=1.0, max_tokens=6, seeds=[1, 2])
    none = HFPolicy(model, tok, kv_budget_bytes=0)
    done = none.generate(prompts, sampling)
    assert none._held == []
    following = [p + c.token_ids + chat_ids(tok, "next") for p, c in zip(prompts, done)]
    assert_same(none.generate(following, sampling), HFPolicy(model, tok, reuse_kv=False).generate(following, sampling))
    assert none.kv_stats["reused_tokens"] == 0
    none.clear_kv()


def test_small_batches_share_one_held_set(model_and_tokenizer):
    model, tok = model_and_tokenizer
    chunked, fresh = HFPolicy(model, tok, max_batch_size=2), HFPolicy(model, tok, reuse_kv=False)
    prompts = [chat_ids(tok, f"task {i}") for i in range(5)]
    sampling = SamplingParams(temperature=1.0, max_tokens=6, seeds=list(range(5)))
    done = chunked.generate(prompts, sampling)
    # the episodes come back in another order and batching: each still finds its own cache
    following = [p + c.token_ids + chat_ids(tok, "next") for p, c in reversed(list(zip(prompts, done)))]
    sampling = SamplingParams(temperature=1.0, max_tokens=6, seeds=list(range(10, 15)))
    assert_same(chunked.generate(following, sampling), fresh.generate(following, sampling))
    assert chunked.kv_stats["reused_tokens"] == sum(len(p) + len(c.token_ids) - 1 for p, c in zip(prompts, done))


def test_a_rollout_gives_the_same_trajectories_with_and_without_kv_reuse(model_and_tokenizer, probe):
    from turngym.agents.rollout import RolloutConfig, RolloutEngine

    model, tok = model_and_tokenizer
    suite = probe.suite({"id": "a", "length": 9}, {"id": "b", "length": 9})
    config = RolloutConfig(group_size=2, max_turns=4, max_tokens=8, seed=3, progress=False, concurrency=0)
    runs = []
    for reuse_kv in (True, False):
        policy = HFPolicy(model, tok, reuse_kv=reuse_kv)
        runs.append(RolloutEngine(policy, lambda: probe.Env(suite=suite), config=config).run(["a", "b"]))
        if reuse_kv:
            assert policy.kv_stats["reused_tokens"] > 0
    for with_reuse, without in zip(*runs):
        assert [t.response_ids for t in with_reuse.turns] == [t.response_ids for t in without.turns]
        for a, b in zip(with_reuse.turns, without.turns):
            assert a.prompt_ids == b.prompt_ids
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=ATOL, rtol=0)
