"""vLLM engines in Ray actors: the pure parts here, generation and weight sync where a GPU is."""

import math
import os

import pytest

from turngym.agents.ray_vllm import logprob_gap, split_evenly


def test_logprob_gap_on_worked_numbers():
    gap = logprob_gap([[-1.0, -2.0], [-0.5]], [[-1.0, -1.5], [-1.5]])
    r = [0.0, 0.5, -1.0]  # train - rollout per token
    assert gap["tokens"] == 3
    assert gap["mean_abs"] == pytest.approx(0.5)
    assert gap["max_abs"] == pytest.approx(1.0)
    assert gap["kl"] == pytest.approx(sum(math.exp(x) - 1 - x for x in r) / 3)
    assert gap["ratio_mean"] == pytest.approx(sum(math.exp(x) for x in r) / 3)
    assert logprob_gap([[-0.3]], [[-0.3]])["kl"] == 0.0
    with pytest.raises(ValueError, match="logprobs"):
        logprob_gap([[-1.0]], [[-1.0, -2.0]])


@pytest.mark.parametrize("n,parts", [(10, 3), (2, 4), (0, 2), (8, 8)])
def test_split_evenly_covers_the_batch_in_order(n, parts):
    bounds = split_evenly(n, parts)
    assert len(bounds) == parts and bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [e - s for s, e in bounds]
    assert max(sizes) - min(sizes) <= 1


@pytest.fixture
def gpu_model():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("vllm", reason="needs vllm (turngym[gpu])")
    model = os.environ.get("TURNGYM_VLLM_MODEL")
    if not model:
        pytest.skip("set TURNGYM_VLLM_MODEL to a local Hugging Face model directory")
    return model


@pytest.mark.gpu
def test_engines_in_actors_generate_and_take_pushed_weights(gpu_model, local_ray):
    model = gpu_model
    import torch
    from transformers import AutoModelForCausalLM

    from turngym.agents.policy import SamplingParams
    from turngym.agents.ray_vllm import RayVLLMPolicy

    policy = RayVLLMPolicy(model, num_engines=1, actor_options={"num_gpus": 1}, gpu_memory_utilization=0.3,
                           enforce_eager=True)
    try:
        prompts = [policy.tokenizer.encode("The capital of France is")] * 2
        greedy = SamplingParams(temperature=0.0, max_tokens=8, seeds=[1, 2])
        first = policy.generate(prompts, greedy)
        assert len(first) == 2 and first[0].token_ids == first[1].token_ids and len(first[0].logprobs) > 0
        hf = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.float32)
        scrambled = {k: torch.zeros_like(v) if k.endswith("lm_head.weight") or "embed_tokens" in k else v
                     for k, v in hf.state_dict().items()}
        assert policy.sync_weights(scrambled) == 1
        assert policy.generate(prompts, greedy)[0].token_ids != first[0].token_ids  # the new weights serve
        assert policy.sync_weights(hf.state_dict()) == 2
        assert policy.generate(prompts, greedy)[0].token_ids == first[0].token_ids  # and back again
    finally:
        policy.close()
