"""turngym/Search-v0: solvable (oracle), discriminating (random), robust to bad replies, deterministic."""

import json

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import turngym
from turngym.agents.rollout import RolloutConfig, RolloutEngine
from turngym.agents.scripted import EpisodePolicy, per_episode
from turngym.envs import load_suite
from turngym.envs.search.env import SearchEnv
from turngym.envs.search.policies import OracleSearchPolicy, RandomSearchPolicy, tool_call

TEST_SAMPLE = load_suite("search-multihop").split("test")[::5]  # 100 frozen test tasks


def play(make_policy, tasks):
    """Episodes of a search scripted policy (a fresh one per episode), run by the rollout engine."""
    engine = RolloutEngine(EpisodePolicy(per_episode(make_policy)), "turngym/Search-v0",
                           config=RolloutConfig(group_size=1, concurrency=0, progress=False),
                           env_kwargs={"split": "test", "max_turns": 12})
    return engine.run([task.id for task in tasks])


@pytest.fixture(scope="module")
def env():
    return turngym.make("turngym/Search-v0", split="test", max_turns=12)


def test_oracle_reaches_high_exact_match():
    results = play(lambda view: OracleSearchPolicy(), TEST_SAMPLE)
    em = np.mean([t.turns[-1].info["em"] for t in results])
    assert em >= 0.9
    assert np.mean([t.total_reward for t in results]) == pytest.approx(em)
    # two supporting passages: 2 searches + 2 opens + 1 answer, ending in stratum 2
    assert {t.turns[-1].stratum for t in results} == {2}
    assert all(len(t.turns) == 5 for t in results if t.success)


def test_expert_reply_solves_without_changing_state(env):
    successes, turns = [], []
    for task in TEST_SAMPLE[:50]:
        obs, info = env.reset(options={"task": task.id})
        done, n = False, 0
        while not done:
            before = (env.unwrapped.search_calls, env.unwrapped.last_result_ids, list(env.unwrapped.queries))
            reply = env.unwrapped.expert_reply()
            assert (env.unwrapped.search_calls, env.unwrapped.last_result_ids, list(env.unwrapped.queries)) == before
            obs, reward, terminated, truncated, info = env.step(reply)
            done, n = terminated or truncated, n + 1
        successes.append(info["success"])
        turns.append(n)
    assert np.mean(successes) >= 0.95 and np.median(turns) == 5


def test_random_policy_does_not():
    results = play(lambda view: RandomSearchPolicy(seed=view.seed), TEST_SAMPLE)
    assert np.mean([t.total_reward for t in results]) <= 0.1
    assert len({t.turns[-1].stratum for t in results}) > 2  # trajectories differ in search count


def test_episode_protocol_stratum_anchor_and_rewards(env):
    task = load_suite("search-multihop").get("5a8c7595554299585d9e36b6")
    obs, info = env.reset(options={"task": task.id})
    assert task.prompt in obs and info["stratum"] == 0 and info["anchor"] == (task.prompt, ())
    assert "Shirley Temple" not in obs  # no evidence leaked into the prompt
    obs, reward, terminated, truncated, info = env.step(tool_call("search", query="Kiss and Tell Corliss Archer", k=3))
    assert reward == 0.0 and not terminated and not truncated and info["action_valid"]
    assert info["stratum"] == 1 and len(info["anchor"][1]) == 3
    assert obs.startswith('<tool_output name="search">') and f"[1] {info['anchor'][1][0]} | " in obs
    gold_id = task.metadata["supporting_ids"][0]
    obs, _, _, _, info = env.step(tool_call("open", doc_id=gold_id))
    assert "Chief of Protocol" in obs and info["stratum"] == 1  # open is not a search
    obs, reward, terminated, _, info = env.step(tool_call("answer", text="the chief of protocol."))
    assert terminated and reward == 1.0 and info["success"] and info["em"] == 1.0 and info["f1"] == 1.0


def test_f1_reward_tool_cost_and_format_penalty():
    env = SearchEnv(split="test", reward_metric="f1", tool_cost=0.1, invalid_penalty=0.5)
    env.reset(options={"task": "5a8c7595554299585d9e36b6"})
    _, reward, *_ = env.step("no tool call")
    assert reward == -0.5
    env.step(tool_call("search", query="Shirley Temple"))
    env.step(tool_call("search", query="Kiss and Tell"))
    _, reward, terminated, _, info = env.step(tool_call("answer", text="Protocol"))
    # F1("Protocol", "Chief of Protocol"): P 1, R 1/3 -> 0.5; two tool calls -> x (1 - 0.2)
    assert terminated and reward == pytest.approx(0.5 * 0.8) and not info["success"]


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("The answer is Paris.", "no tool call found"),
        ("<tool_call>{not json}</tool_call>", "invalid tool call"),
        ('<tool_call>{"name": "browse", "arguments": {}}</tool_call>', "unknown tool 'browse'"),
        ('<tool_call>{"name": "search", "arguments": {"k": 3}}</tool_call>', "invalid arguments for search: query"),
        ('<tool_call>{"name": "search", "arguments": {"query": "x", "k": 0}}</tool_call>', "invalid arguments for search: k"),
        ('<tool_call>{"name": "open", "arguments": {"doc_id": "zzzzzzzz"}}</tool_call>', "no passage with id 'zzzzzzzz'"),
    ],
)
def test_malformed_tool_calls_are_answered_not_raised(env, reply, why):
    env.reset(options={"task": TEST_SAMPLE[0].id})
    obs, reward, terminated, truncated, info = env.step(reply)
    assert why in obs
    assert info["action_valid"] is False and reward == 0.0 and not terminated and not truncated
    assert info["stratum"] == 0


def test_answer_tag_and_several_calls_per_reply(env):
    env.reset(options={"task": "5a8c7595554299585d9e36b6"})
    reply = tool_call("search", query="Shirley Temple") + "\n" + tool_call("search", query="Kiss and Tell film")
    obs, _, _, _, info = env.step(reply)
    assert obs.count("<tool_output") == 2 and info["stratum"] == 2 and len(info["tool_calls"]) == 2
    _, reward, terminated, _, info = env.step("Final: <answer>Chief of Protocol</answer>")
    assert terminated and reward == 1.0


def test_turn_budget_truncates_without_reward():
    env = turngym.make("turngym/Search-v0", split="test", max_turns=2)
    env.reset(options={"task": TEST_SAMPLE[0].id})
    env.step(tool_call("search", query="a"))
    _, reward, terminated, truncated, info = env.step(tool_call("search", query="b"))
    assert truncated and not terminated and reward == 0.0 and info["success"] is False


def test_observation_budget():
    env = SearchEnv(split="test", observation_chars=500, max_k=20)
    env.reset(options={"task": TEST_SAMPLE[0].id})
    obs, *_ = env.step(tool_call("search", query="American film director", k=20))
    assert len(obs) <= 500 and "characters truncated" in obs


def test_same_seed_same_episode():
    def play(seed):
        env = turngym.make("turngym/Search-v0")
        obs, info = env.reset(seed=seed)  # the task is drawn from the train split with the seed
        policy, out = RandomSearchPolicy(seed=7), [obs]
        policy.start(env.unwrapped.task)
        for _ in range(6):
            obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
            out.append((obs, reward, terminated, truncated, json.dumps(info, sort_keys=True, default=str)))
            if terminated or truncated:
                break
        return info["task_id"], out

    assert play(3) == play(3)
    assert play(3)[0] != play(4)[0] or play(3)[1] != play(4)[1]


def test_own_corpus_and_questions(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(d) for d in [
        {"id": "a1", "title": "Ada Lovelace", "text": "Ada Lovelace wrote the first published algorithm, for Babbage's Analytical Engine."},
        {"id": "b2", "title": "Analytical Engine", "text": "The Analytical Engine was a proposed mechanical computer designed by Charles Babbage."},
        {"id": "c3", "title": "Grace Hopper", "text": "Grace Hopper developed the first compiler, A-0."},
    ]) + "\n")
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"id": "q1", "prompt": "Who designed the machine Ada Lovelace wrote an algorithm for?",
                                     "answer": ["Charles Babbage"], "split": "test"}) + "\n")
    env = turngym.make("turngym/Search-v0", suite=str(questions), split="test", corpus=str(corpus),
                       retriever_options={"cache_dir": str(tmp_path / "cache")})
    obs, info = env.reset()
    assert info["task_id"] == "q1"
    obs, *_ , info = env.step(tool_call("search", query="Analytical Engine designer"))
    assert info["anchor"][1][0] == "b2"
    _, reward, terminated, _, info = env.step(tool_call("answer", text="Charles Babbage"))
    assert terminated and reward == 1.0


def test_bad_options_fail_with_one_sentence():
    with pytest.raises(ValueError, match="invalid option for SearchEnv: reward_metric"):
        SearchEnv(reward_metric="bleu")
    with pytest.raises(ValueError, match="invalid option for SearchEnv: retriver"):
        SearchEnv(retriver="bm25")


@pytest.mark.parametrize("env_id", ["turngym/Search-v0", "turngym/Search-F1-v0"])
def test_conformance_checker_passes(env_id):
    from turngym.envs.checker import check

    failed = [f"{r.name}: {r.detail}" for r in check(env_id) if not r.passed]
    assert failed == []


def test_gymnasium_env_checker_and_example_actions():
    env = turngym.make("turngym/Search-v0")
    check_env(env.unwrapped, skip_render_check=True)
    for action in env.unwrapped.example_actions():
        env.reset(seed=0)
        obs, *_ = env.step(action)
        assert isinstance(obs, str) and obs
