"""The agent's prompts: chat template, tools, memory window, token budget, exact ids."""

from __future__ import annotations

import json

import pytest

from turngym.agents import Completion, SamplingParams
from turngym.agents.agent import Agent, AgentConfig, EpisodeMemory, Exchange
from turngym.agents.scripted import ScriptedPolicy
from turngym.tools import parse_tool_calls

INSTRUCTIONS = "Advance the counter to the goal with the advance tool."


def memory(probe, turns: int, tool_output: bool = True) -> EpisodeMemory:
    mem = EpisodeMemory(instructions=INSTRUCTIONS, tools=[probe.tool.schema()], task="Task t0: reach 9.")
    for i in range(turns):
        mem.history.append(Exchange(action=f"reply-{i} {probe.reply}", observation=f"obs-{i}", tool_output=tool_output))
    return mem


def template_ids(tokenizer, messages, tools):
    out = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_prompt_ids_are_exactly_the_chat_template_ids_with_tools(tokenizer, probe):
    mem = memory(probe, 2)
    built = Agent(tokenizer).build(mem)
    assert built.ids == template_ids(tokenizer, built.messages, mem.tools)
    assert tokenizer.decode(built.ids) == built.text
    assert built.text.endswith("<|im_start|>assistant\n")
    assert '"name": "advance"' in built.text and "<tools>" in built.text  # schemas via the template
    assert built.messages[0] == {"role": "system", "content": INSTRUCTIONS}


def test_tool_output_is_a_tool_message_never_in_the_system_prompt(tokenizer, probe):
    built = Agent(tokenizer).build(memory(probe, 2))
    roles = [m["role"] for m in built.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert "<tool_response>\nobs-1\n</tool_response>" in built.text
    assert "obs-" not in built.messages[0]["content"]
    # answers to turns without tool calls are plain user messages
    plain = Agent(tokenizer).build(memory(probe, 1, tool_output=False))
    assert plain.messages[-1] == {"role": "user", "content": "obs-0"}


def test_full_memory_shows_every_exchange(tokenizer, probe):
    built = Agent(tokenizer, AgentConfig(memory="full")).build(memory(probe, 6))
    assert built.shown == 6
    assert all(f"reply-{i}" in built.text for i in range(6))


def test_window_memory_shows_the_task_and_the_last_k_exchanges(tokenizer, probe):
    built = Agent(tokenizer, AgentConfig(memory="window", memory_window=2)).build(memory(probe, 6))
    assert built.shown == 2
    assert "Task t0: reach 9." in built.text
    assert [f"reply-{i}" in built.text for i in range(6)] == [False] * 4 + [True] * 2
    assert [m["role"] for m in built.messages] == ["system", "user", "assistant", "tool", "assistant", "tool"]


def test_window_zero_still_shows_the_latest_observation(tokenizer, probe):
    built = Agent(tokenizer, AgentConfig(memory="window", memory_window=0)).build(memory(probe, 3))
    assert "reply-" not in built.text
    assert built.messages[-1] == {"role": "tool", "content": "obs-2"}


def test_token_budget_drops_the_oldest_exchanges_first(tokenizer, probe):
    agent = Agent(tokenizer)
    mem = memory(probe, 8)
    sizes = [len(agent._render(mem, k).ids) for k in range(9)]
    assert sizes == sorted(sizes)
    budget = (sizes[3] + sizes[4]) // 2  # room for 3 exchanges, not 4
    built = Agent(tokenizer, AgentConfig(max_prompt_tokens=budget)).build(mem)
    assert built.shown == 3 and len(built.ids) <= budget < sizes[4]
    assert [f"reply-{i}" in built.text for i in range(8)] == [False] * 5 + [True] * 3
    assert not built.over_budget


def test_budget_too_small_for_anything_keeps_task_and_latest_observation(tokenizer, probe):
    built = Agent(tokenizer, AgentConfig(max_prompt_tokens=10)).build(memory(probe, 4))
    assert built.over_budget and built.shown == 0
    assert "Task t0" in built.text and built.messages[-1]["content"] == "obs-3"


def test_window_and_budget_combine(tokenizer, probe):
    agent = Agent(tokenizer, AgentConfig(memory="window", memory_window=5))
    mem = memory(probe, 8)
    sizes = [len(agent._render(mem, k).ids) for k in range(9)]
    built = Agent(tokenizer, AgentConfig(memory="window", memory_window=5, max_prompt_tokens=sizes[2])).build(mem)
    assert built.shown == 2 and len(built.ids) == sizes[2]


def test_template_that_ignores_tools_gets_the_schemas_in_the_system_message(plain_tokenizer, probe):
    built = Agent(plain_tokenizer).build(memory(probe, 1))
    system = built.messages[0]["content"]
    assert system.startswith(INSTRUCTIONS) and "<tools>" in system and '"advance"' in system
    assert "<tool_call>" in system
    assert "obs-0" not in system


def test_text_mode_gives_chat_messages_with_marked_tool_output(probe):
    built = Agent(None).build(memory(probe, 2))
    assert built.ids is None and built.prompt is built.messages
    assert '"advance"' in built.messages[0]["content"]  # tools described in the system message
    assert built.messages[3] == {"role": "user", "content": "<tool_output>\nobs-0\n</tool_output>"}


def test_text_mode_structured_calls_become_openai_tool_messages(probe):
    mem = memory(probe, 0)
    call = {"id": "x", "type": "function", "function": {"name": "advance", "arguments": '{"by": 2}'}}
    mem.history.append(Exchange(action="", observation="pos=2", tool_output=True, structured_calls=[call]))
    msgs = Agent(None).build(mem).messages
    assert msgs[2]["tool_calls"][0]["function"] == {"name": "advance", "arguments": '{"by": 2}'}
    assert msgs[3] == {"role": "tool", "tool_call_id": msgs[2]["tool_calls"][0]["id"], "content": "pos=2"}


def test_action_text_turns_structured_calls_into_parseable_tags():
    completion = Completion(text="Moving.", tool_calls=[{"function": {"name": "advance", "arguments": '{"by": 1}'}},
                                                         {"name": "advance", "arguments": {"by": 2}}])
    text = Agent.action_text(completion)
    parsed = parse_tool_calls(text)
    assert text.startswith("Moving.") and parsed.ok
    assert [c.arguments["by"] for c in parsed.calls] == [1, 2]
    assert Agent.action_text(Completion(text="plain")) == "plain"


def test_configuration_errors_are_clear(tokenizer, probe):
    with pytest.raises(ValueError, match="unknown memory strategy 'lru'"):
        Agent(tokenizer, AgentConfig(memory="lru"))
    no_template = probe.build_tokenizer()
    no_template.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        Agent(no_template)


# -- the scripted policy --------------------------------------------------------------------------
def test_scripted_policy_returns_token_ids_with_eos_and_logprobs(tokenizer):
    policy = ScriptedPolicy(["hello <tool_call>{}</tool_call>", "bye"], tokenizer=tokenizer)
    out = policy.generate([[1, 2], [3]], SamplingParams())
    assert [c.text for c in out] == ["hello <tool_call>{}</tool_call>", "bye"]
    assert out[1].token_ids == tokenizer.encode("bye", add_special_tokens=False) + [tokenizer.eos_token_id]
    assert tokenizer.decode(out[0].token_ids, skip_special_tokens=True) == out[0].text
    assert len(out[0].logprobs) == len(out[0].token_ids)
    assert policy.calls == 1 and policy.batch_sizes == [2]


def test_scripted_policy_without_tokenizer_has_no_ids_and_sees_messages():
    seen = []
    policy = ScriptedPolicy(lambda text, seed: seen.append((text, seed)) or "ok")
    out = policy.generate([[{"role": "user", "content": "hi"}]], SamplingParams(seeds=[7]))
    assert out[0].token_ids == [] and out[0].logprobs == [] and out[0].text == "ok"
    assert seen == [("user: hi", 7)]


def test_scripted_policy_applies_max_tokens_and_stop_strings(tokenizer):
    policy = ScriptedPolicy(["abcdef</tool_call> trailing"], tokenizer=tokenizer)
    cut = policy.generate([[1]], SamplingParams(max_tokens=3))[0]
    assert cut.finish_reason == "length" and cut.text == "abc" and len(cut.token_ids) == 3
    stopped = policy.generate([[1]], SamplingParams(stop=["</tool_call>"]))[0]
    assert stopped.text == "abcdef</tool_call>" and stopped.finish_reason == "stop"


def test_scripted_policy_decodes_prompt_ids_for_its_function(tokenizer):
    policy = ScriptedPolicy(lambda text, seed: json.dumps(text), tokenizer=tokenizer)
    ids = tokenizer.encode("<|im_start|>user\nhi", add_special_tokens=False)
    assert json.loads(policy.generate([ids], SamplingParams())[0].text) == "<|im_start|>user\nhi"


def test_action_text_is_byte_identical_and_carries_well_formed_calls_as_themselves():
    from turngym.tools import ToolAction, ToolCall

    calls = [{"function": {"name": "advance", "arguments": '{"by": 1, "note": "</tool_call>\\u00e9"}'}},
             {"name": "advance", "arguments": {"by": 2}}]
    action = Agent.action_text(Completion(text="Moving.", tool_calls=calls))
    assert action == ('Moving.\n<tool_call>{"name": "advance", "arguments": {"by": 1, "note": "</tool_call>\\u00e9"}}'
                      '</tool_call>\n<tool_call>{"name": "advance", "arguments": {"by": 2}}</tool_call>')
    assert isinstance(action, ToolAction)
    assert action.calls == (ToolCall(name="advance", arguments={"by": 1, "note": "</tool_call>é"}),
                            ToolCall(name="advance", arguments={"by": 2}))
    bad = Agent.action_text(Completion(text="", tool_calls=[{"name": "advance", "arguments": "{oops"}]))
    assert type(bad) is str and bad == '<tool_call>{"name": "advance", "arguments": "{oops"}</tool_call>'
    assert type(Agent.action_text(Completion(text="plain"))) is str
