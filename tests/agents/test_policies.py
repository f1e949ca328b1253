"""The HF policy backend (and the vLLM backend where a GPU is present): exact ids, logprobs,
seeds, stop strings, EOS, batching and weight sync."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from turngym.agents.hf import HFPolicy, first_stop, length_batches, sample_tokens
from turngym.agents.models import load_model
from turngym.agents.policy import Policy, SamplingParams
from turngym.agents.vllm_policy import VLLMPolicy, vllm_available


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # A model this small gains nothing from threads, and OpenMP spin-waits are very slow on a
    # busy shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def policy(one_torch_thread) -> HFPolicy:
    model, tokenizer = load_model("tiny:seed=0")
    return HFPolicy(model, tokenizer)


def chat_ids(policy: HFPolicy, text: str) -> list[int]:
    return policy.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=False
    )


@pytest.fixture(scope="module")
def prompts(policy) -> list[list[int]]:
    # different lengths, so the batch is left-padded
    return [chat_ids(policy, text) for text in ("hi", "move the box left twice", "a" * 40, "?")]


def teacher_forced_logprobs(policy: HFPolicy, prompt: list[int], response: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = policy.model(torch.tensor([prompt + response])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : -1]
    return logp.gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


# -- pure sampling math -------------------------------------------------------------------------


def test_sample_tokens_inverse_cdf_worked_example():
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]] * 4))
    uniforms = torch.tensor([0.1, 0.25, 0.49, 0.9])
    # cumulative mass 0.2, 0.5, 1.0: u=0.1 -> 0, 0.25 -> 1, 0.49 -> 1, 0.9 -> 2
    assert sample_tokens(logits, 1.0, 1.0, uniforms).tolist() == [0, 1, 1, 2]
    # top_p=0.5: the nucleus is {2} (its mass 0.5 already reaches 0.5)
    assert sample_tokens(logits, 1.0, 0.5, uniforms).tolist() == [2, 2, 2, 2]
    # top_p=0.6: nucleus {2, 1} renormalised to 0.375/0.625: cdf over ids (0, 1, 2) = 0, .375, 1
    assert sample_tokens(logits, 1.0, 0.6, uniforms).tolist() == [1, 1, 2, 2]
    # temperature 0 is greedy
    assert sample_tokens(logits, 0.0, 1.0, uniforms).tolist() == [2, 2, 2, 2]


def test_sample_tokens_temperature_sharpens_the_distribution():
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    # at temperature 0.5 probabilities are proportional to p**2: 0.04, 0.09, 0.25 -> cdf .105, .342
    u = torch.tensor([0.2])
    assert sample_tokens(logits, 1.0, 1.0, u).tolist() == [1]
    assert sample_tokens(logits, 0.5, 1.0, u).tolist() == [1]
    assert sample_tokens(logits, 0.5, 1.0, torch.tensor([0.1])).tolist() == [0]
    assert sample_tokens(logits, 1.0, 1.0, torch.tensor([0.1])).tolist() == [0]
    assert sample_tokens(logits, 0.5, 1.0, torch.tensor([0.35])).tolist() == [2]


def test_first_stop_picks_the_earliest_ending_stop():
    assert first_stop("abc</tool_call>def", ["</tool_call>", "def"]) == len("abc</tool_call>")
    assert first_stop("xx STOP yy END", ["END", "STOP"]) == len("xx STOP")
    assert first_stop("nothing here", ["END", ""]) is None


# -- the HF backend -------------------------------------------------------------------------------


def test_hf_policy_satisfies_the_protocol(policy):
    assert isinstance(policy, Policy)


def test_logprobs_are_the_models_temperature_one_logprobs_of_the_exact_ids(policy, prompts):
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.9)):
        sampling = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=24, seeds=[1, 2, 3, 4])
        completions = policy.generate(prompts, sampling)
        for prompt, completion in zip(prompts, completions):
            assert 0 < len(completion.token_ids) == len(completion.logprobs) <= 24
            expected = teacher_forced_logprobs(policy, prompt, completion.token_ids)
            assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(policy, prompts):
    sampling = SamplingParams(temperature=1.0, max_tokens=20, seeds=[11, 12, 13, 14])
    batched = policy.generate(prompts, sampling)
    for i, prompt in enumerate(prompts):
        [alone] = policy.generate([prompt], SamplingParams(temperature=1.0, max_tokens=20, seeds=[11 + i]))
        assert alone.token_ids == batched[i].token_ids
        assert alone.text == batched[i].text


def test_same_seeds_same_completions_other_seeds_other_completions(policy, prompts):
    sampling = SamplingParams(temperature=1.0, max_tokens=16, seeds=[5, 6, 7, 8])
    first = policy.generate(prompts, sampling)
    again = policy.generate(prompts, sampling)
    other = policy.generate(prompts, sampling.model_copy(update={"seeds": [105, 106, 107, 108]}))
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert [c.token_ids for c in first] != [c.token_ids for c in other]
    # the same prompt repeated with different seeds (a GRPO group) gives different samples
    group = policy.generate([prompts[0]] * 4, sampling)
    assert len({tuple(c.token_ids) for c in group}) > 1


def test_without_seeds_the_global_torch_seed_makes_runs_reproducible(policy, prompts):
    sampling = SamplingParams(temperature=1.0, max_tokens=12)
    torch.manual_seed(0)
    first = policy.generate(prompts, sampling)
    torch.manual_seed(0)
    again = policy.generate(prompts, sampling)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]


def test_max_tokens_ends_with_length(policy, prompts):
    completions = policy.generate(prompts, SamplingParams(temperature=1.0, max_tokens=7, seeds=[1, 2, 3, 4]))
    for completion in completions:
        if completion.finish_reason == "length":
            assert len(completion.token_ids) == 7
        else:  # the random model may emit its EOS early
            assert completion.token_ids[-1] == policy.tokenizer.eos_token_id
    assert any(c.finish_reason == "length" for c in completions)


def test_chat_message_prompts_are_rendered_with_the_chat_template(policy):
    sampling = SamplingParams(temperature=1.0, max_tokens=10, seeds=[3])
    [from_messages] = policy.generate([[{"role": "user", "content": "hi"}]], sampling)
    [from_ids] = policy.generate([chat_ids(policy, "hi")], sampling)
    assert from_messages.token_ids == from_ids.token_ids


def test_greedy_and_tiny_top_p_agree(policy, prompts):
    greedy = policy.generate(prompts, SamplingParams(temperature=0.0, max_tokens=12))
    nucleus = policy.generate(prompts, SamplingParams(temperature=1.0, top_p=1e-6, max_tokens=12, seeds=[1, 2, 3, 4]))
    assert [c.token_ids for c in greedy] == [c.token_ids for c in nucleus]
    for completion, prompt in zip(greedy, prompts):  # greedy picks the argmax each step
        with torch.no_grad():
            logits = policy.model(torch.tensor([prompt + completion.token_ids])).logits[0, len(prompt) - 1 : -1]
        assert logits.argmax(-1).tolist() == completion.token_ids


def _printable(policy: HFPolicy, token_id: int) -> str | None:
    text = policy.tokenizer.decode([token_id])
    return text if len(text) == 1 and text.isascii() and text.isprintable() and text != " " else None


def test_generation_stops_at_the_first_stop_string_and_keeps_it(policy, prompts):
    # seeded sampling: a rerun with the same seed draws the same tokens until it stops
    seeds = [31, 32, 33, 34]
    free = policy.generate(prompts, SamplingParams(temperature=1.0, max_tokens=60, seeds=seeds))
    checked = 0
    for prompt, seed, run in zip(prompts, seeds, free):
        ids = run.token_ids
        # a two-token stop string made of printable characters the model will produce
        pairs = [i for i in range(2, len(ids) - 1) if _printable(policy, ids[i]) and _printable(policy, ids[i + 1])]
        if not pairs:
            continue
        i = pairs[0]
        stop = _printable(policy, ids[i]) + _printable(policy, ids[i + 1])
        sampling = SamplingParams(temperature=1.0, max_tokens=60, stop=["\x00never", stop], seeds=[seed])
        [stopped] = policy.generate([prompt], sampling)
        assert stopped.finish_reason == "stop"
        assert stopped.text.endswith(stop) and stopped.text.count(stop) == 1
        assert ids[: len(stopped.token_ids)] == stopped.token_ids  # a prefix of the free run
        assert policy.tokenizer.decode(stopped.token_ids).endswith(stop)
        checked += 1
    assert checked, "the sampled runs held no two printable characters in a row"


def test_eos_ends_a_completion_and_stays_in_the_ids_but_not_the_text(policy, prompts):
    [free] = policy.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=30))
    eos = free.token_ids[3]  # pretend a token the model emits is the EOS token
    first_at = free.token_ids.index(eos)
    stopper = HFPolicy(policy.model, policy.tokenizer)
    stopper.eos_token_ids = frozenset({eos})
    [stopped] = stopper.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=30))
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free.token_ids[: first_at + 1]
    # with the real EOS (a special token) the text leaves it out
    im_end = policy.tokenizer.eos_token_id
    completion = policy._completion(free.token_ids[:3] + [im_end], [0.0] * 4, "stop", [])
    assert completion.text == policy.tokenizer.decode(free.token_ids[:3])


def test_small_max_batch_size_gives_the_same_completions(policy, prompts):
    sampling = SamplingParams(temperature=1.0, max_tokens=10, seeds=[21, 22, 23, 24])
    chunked = HFPolicy(policy.model, policy.tokenizer, max_batch_size=3).generate(prompts, sampling)
    assert [c.token_ids for c in chunked] == [c.token_ids for c in policy.generate(prompts, sampling)]


@given(st.lists(st.integers(1, 300), max_size=60), st.integers(1, 16))
def test_length_batches_cover_every_prompt_once_with_padding_under_half(lengths, most):
    batches = length_batches(lengths, most)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= most
        widths = [lengths[i] for i in batch]
        assert len(batch) * max(widths) <= 2 * sum(widths)  # padding at most half the batch


def test_length_batches_keep_a_long_prompt_out_of_a_short_batch():
    assert length_batches([40, 42, 170, 41, 40], 8) == [[0, 4, 3, 1], [2]]
    assert length_batches([40, 42, 41], 2) == [[0, 2], [1]]


def test_sync_weights_copies_in_place_and_training_mode_survives_generation(prompts):
    trainer_model, tokenizer = load_model("tiny:seed=0")
    rollout = HFPolicy(load_model("tiny:seed=9")[0], tokenizer)
    sampling = SamplingParams(temperature=1.0, max_tokens=12, seeds=[1, 2, 3, 4])
    reference = HFPolicy(trainer_model, tokenizer).generate(prompts, sampling)
    assert [c.token_ids for c in rollout.generate(prompts, sampling)] != [c.token_ids for c in reference]
    weight = rollout.model.model.embed_tokens.weight
    rollout.sync_weights(trainer_model.state_dict())
    assert rollout.model.model.embed_tokens.weight is weight  # copied in place
    assert [c.token_ids for c in rollout.generate(prompts, sampling)] == [c.token_ids for c in reference]
    # a policy sharing the trainer's model sees its updates without syncing
    shared = HFPolicy(trainer_model, tokenizer)
    trainer_model.train()
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():  # stands in for an optimiser step
        for param in trainer_model.parameters():
            param.add_(torch.randn(param.shape, generator=noise) * 0.5)
    shared.sync_weights(trainer_model.state_dict())  # its own tensors: nothing to copy
    changed = shared.generate(prompts, sampling)
    assert trainer_model.training  # generation ran in eval mode and restored the flag
    assert [c.token_ids for c in changed] != [c.token_ids for c in reference]


def test_bad_requests_raise(policy, prompts):
    with pytest.raises(ValueError, match="2 seeds for 4 prompts"):
        policy.generate(prompts, SamplingParams(seeds=[1, 2]))
    with pytest.raises(ValueError, match="at least one"):
        policy.generate([[]], SamplingParams())


# -- vLLM (GPU) -----------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not vllm_available(), reason="needs a CUDA GPU and vllm (extra [gpu])")
def test_vllm_matches_hf_and_takes_new_weights_in_place(tmp_path):
    model, tokenizer = load_model("tiny:seed=0,max_positions=512")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    hf = HFPolicy(model, tokenizer)
    prompts = [chat_ids(hf, "hi"), chat_ids(hf, "push the box")]
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    vllm_policy = VLLMPolicy(str(tmp_path), dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True)
    got = vllm_policy.generate(prompts, greedy)
    want = hf.generate(prompts, greedy)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    for g, w in zip(got, want):
        assert all(math.isclose(a, b, abs_tol=1e-3) for a, b in zip(g.logprobs, w.logprobs))
    sampled = SamplingParams(temperature=1.0, max_tokens=16, seeds=[1, 2])
    assert [c.token_ids for c in vllm_policy.generate(prompts, sampled)] == [
        c.token_ids for c in vllm_policy.generate(prompts, sampled)
    ]
    other, _ = load_model("tiny:seed=3,max_positions=512")
    vllm_policy.sync_weights(other.state_dict())
    want_other = HFPolicy(other, tokenizer).generate(prompts, greedy)
    assert [c.token_ids for c in vllm_policy.generate(prompts, greedy)] == [c.token_ids for c in want_other]
