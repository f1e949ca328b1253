"""Token in, token out: with memory that keeps the history, each turn's prompt is the last
prompt's ids + the ids the model sampled + the newly encoded messages, so the model always
continues exactly what it saw and sampled (agents/agent.py, module doc)."""

from __future__ import annotations

import pytest
import torch

from turngym.agents.agent import Agent, AgentConfig, EpisodeMemory, Exchange
from turngym.agents.hf import HFPolicy
from turngym.agents.models import ModelSpecError, load_model
from turngym.agents.rollout import RolloutConfig, RolloutEngine
from turngym.envs import make


@pytest.fixture(scope="module")
def policy():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tokenizer = load_model("tiny:seed=0")
    yield HFPolicy(model, tokenizer)
    torch.set_num_threads(threads)


def run(policy: HFPolicy, env_id: str, **agent) -> list:
    # stop strings a random tiny model writes now and then, so that some replies end on them
    config = RolloutConfig(group_size=4, max_turns=5, max_tokens=24, stop=["</action>", "a", "e"], progress=False,
                           concurrency=0, **agent)
    tasks = [t.id for t in make(env_id).unwrapped.suite.split("train")[:3]]
    policy.clear_kv()
    return RolloutEngine(policy, env_id, config=config).run(tasks)


def extends(before, after) -> bool:
    done = before.prompt_ids + before.response_ids
    return after.prompt_ids[: len(done)] == done


HISTORY_KEEPING = {
    "full": {"memory": "full"},
    "window-not-yet-full": {"memory": "window", "memory_window": 8},
    "full-within-budget": {"memory": "full", "max_prompt_tokens": 100_000},
}


@pytest.mark.parametrize("name", list(HISTORY_KEEPING))
@pytest.mark.parametrize("env_id", ["turngym/Sokoban-v0", "turngym/FrozenLake-v0"])
def test_every_prompt_extends_the_last_prompt_and_the_sampled_reply(policy, env_id, name):
    trajectories = run(policy, env_id, **HISTORY_KEEPING[name])
    turns = [t for traj in trajectories for t in traj.turns]
    assert len(turns) > len(trajectories) * 3
    # real samples end every way a reply can: the model's own end-of-turn token, a stop string,
    # the token limit (then the prompt adds the end-of-turn marker after the sampled ids)
    eos = policy.tokenizer.eos_token_id
    assert any(t.response_ids[-1] == eos for t in turns)
    assert any(t.info["finish_reason"] == "stop" and t.response_ids[-1] != eos for t in turns)
    assert any(t.info["finish_reason"] == "length" for t in turns)
    for traj in trajectories:
        for before, after in zip(traj.turns, traj.turns[1:]):
            assert extends(before, after), (traj.traj_id, after.step)


def test_generation_reuses_the_whole_prefix_across_turns(policy):
    """HFPolicy's KV reuse then re-encodes only the last sampled token and the new messages."""
    policy.kv_stats = {"reused_tokens": 0, "prefilled_tokens": 0}
    trajectories = run(policy, "turngym/Sokoban-v0", memory="full")
    held = sum(len(t.prompt_ids) + len(t.response_ids) - 1 for traj in trajectories for t in traj.turns[:-1])
    assert policy.kv_stats["reused_tokens"] == held > 0
    total = sum(len(t.prompt_ids) for traj in trajectories for t in traj.turns)
    assert policy.kv_stats["prefilled_tokens"] == total - held


def test_a_window_that_drops_exchanges_encodes_the_prompt_whole(policy):
    trajectories = run(policy, "turngym/Sokoban-v0", memory="window", memory_window=1)
    encode = Agent(policy.tokenizer)._encode
    for traj in trajectories:
        for turn in traj.turns[2:]:  # from the third turn on, the window leaves exchanges out
            assert turn.info["memory_shown"] == 1
            assert turn.prompt_ids == encode(turn.prompt_text)


def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from turngym.agents.models import ensure_tool_chat_template, smollm2_dir

    try:
        tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    except ModelSpecError as err:
        pytest.skip(str(err))
    ensure_tool_chat_template(tokenizer)
    return tokenizer


@pytest.mark.parametrize("ended", ["eos", "stop"])
def test_sampled_ids_are_kept_where_their_text_would_encode_differently(ended):
    """SmolLM2 encodes "up\\n\\n" as `up`,`ĊĊ`; a model that sampled `Ċ`,`Ċ` continues from those."""
    tokenizer = smollm2_tokenizer()
    agent = Agent(tokenizer, AgentConfig(memory="full"))
    memory = EpisodeMemory(instructions="Move.", tools=[], task="Where to?")
    first = agent.build(memory)
    newline = tokenizer.convert_tokens_to_ids("Ċ")
    sampled = [*tokenizer.encode("up", add_special_tokens=False), newline, newline]
    if ended == "eos":
        sampled.append(tokenizer.eos_token_id)
    reply = tokenizer.decode(sampled, skip_special_tokens=True)
    assert reply == "up\n\n" and tokenizer.convert_tokens_to_ids("ĊĊ") in tokenizer.encode(reply + "<|im_end|>")
    memory.history.append(Exchange(action=reply, observation="ok", response_ids=sampled, prompt=first))
    second = agent.build(memory)
    assert second.ids[: len(first.ids) + len(sampled)] == first.ids + sampled
    # the rest is the template's text after the reply, encoded: the end-of-turn marker only where
    # the model did not sample it
    assert tokenizer.decode(second.ids) == second.text
    assert second.ids != agent._encode(second.text)  # re-encoding would have changed the reply
    assert second.ids.count(tokenizer.eos_token_id) == second.text.count("<|im_end|>") == 4  # never doubled
