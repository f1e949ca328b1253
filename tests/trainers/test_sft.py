"""The warm start's demonstrations: recovery turns after a misspelt reply."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import turngym
from turngym.agents.agent import AgentConfig
from turngym.agents.models import load_model
from turngym.trainers.sft import collect_demonstrations, misspell

TINY = "tiny-markov:hidden=32,layers=1,heads=2,seed=0"
AGENT = AgentConfig(memory="window", memory_window=0)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(0, 2**32 - 1))
def test_a_misspelling_differs_by_one_edit_and_is_reproducible(reply, seed):
    wrong = misspell(reply, np.random.default_rng(seed))
    assert wrong == misspell(reply, np.random.default_rng(seed))
    if len(wrong) == len(reply):  # one character replaced by another of the reply's characters
        assert sum(a != b for a, b in zip(wrong, reply)) == 1 and set(wrong) <= set(reply)
    else:  # one character deleted
        assert len(wrong) == len(reply) - 1 and any(reply[:i] + reply[i + 1 :] == wrong for i in range(len(reply)))


def _demos(recovery_rate):
    _, tokenizer = load_model(TINY)
    tasks = [t.id for t in turngym.make("turngym/FrozenLake-v0").unwrapped.suite.split("train")[:30]]
    rows = collect_demonstrations("turngym/FrozenLake-v0", tasks, tokenizer, AGENT, {"max_turns": 12}, seed=3,
                                  recovery_rate=recovery_rate)
    prompts = [tokenizer.decode(r.prompt_ids, skip_special_tokens=True) for r in rows]
    replies = [tokenizer.decode(r.response_ids, skip_special_tokens=True) for r in rows]
    return prompts, replies


def test_recovery_demonstrations_answer_the_invalid_reply_observation_with_a_valid_move():
    plain_prompts, plain_replies = _demos(0.0)
    prompts, replies = _demos(0.3)
    assert not any("Invalid action" in p for p in plain_prompts)
    recovering = [r for p, r in zip(prompts, replies) if "Invalid action" in p]
    assert len(recovering) >= 5  # ~30% of turns were preceded by a slip; most slips are invalid
    # only the expert's replies are trained on, never the misspelling that led to the observation
    moves = {f"<action>{m}</action>" for m in ("up", "down", "left", "right")}
    assert set(replies) <= moves and set(recovering) <= moves
    assert _demos(0.3) == (prompts, replies)  # reproducible from the seed
