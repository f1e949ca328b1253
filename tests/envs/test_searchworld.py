"""Generated search worlds (issue #19): deterministic per seed, test worlds disjoint from
training worlds, every generated question answered exactly by the oracle through the tools,
malformed tool calls answered with error observations, the generated stream usable for training."""

import json
import random
import re

import pytest

import turngym
from turngym.envs.search.corpus import Corpus, Document
from turngym.envs.searchworld.env import WorldIndex
from turngym.envs.searchworld.suites import GENERATORS, SUITES, world_task
from turngym.envs.searchworld.world import FIELDS, VOCABULARY, make_question, make_world, read_field
from turngym.envs.tasks import TaskStream, content_hash, load_suite

ENV_FOR = {"searchworld-1hop": "turngym/SearchWorld-1hop-v0", "searchworld-2hop": "turngym/SearchWorld-2hop-v0",
           "searchworld-3hop": "turngym/SearchWorld-3hop-v0", "searchworld-mixed": "turngym/SearchWorld-v0"}


def run_oracle(env, task):
    """One episode of the expert through the env's own tools; returns (final info, steps)."""
    env.reset(seed=0, options={"task": task})
    for step in range(1, env.unwrapped.max_turns + 1):
        _, _, terminated, truncated, info = env.step(env.unwrapped.expert_reply())
        if terminated or truncated:
            return info, step
    raise AssertionError("the episode did not end")


def test_world_generation_is_deterministic_per_seed():
    a, b = make_world(7), make_world.__wrapped__(7)  # the second bypasses the cache
    assert a.passages == b.passages and a.fingerprint == b.fingerprint
    assert make_world(8).fingerprint != a.fingerprint
    assert world_task(7, 1, (1, 2, 3)) == world_task(7, 1, (1, 2, 3))
    assert GENERATORS["searchworld-2hop"](123) == GENERATORS["searchworld-2hop"](123)


def test_world_is_deterministic_across_processes():
    import subprocess
    import sys

    code = "from turngym.envs.searchworld.world import make_world; print(make_world(3).fingerprint)"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": str(h)}).stdout for h in (1, 2)}
    assert outs == {make_world(3).fingerprint + "\n"}  # no dependence on string hashing


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_questions_have_gold_support_of_their_hop_count(hops):
    for seed in range(50):
        world = make_world(seed)
        q = make_question(world, hops, random.Random(seed))
        assert q.hops == hops and len(q.support) == hops == len(set(q.support))
        assert q.support[0] in q.text  # the head is named; later hops are not
        assert all(name not in q.text for name in q.support[1:])


@pytest.mark.parametrize("name", sorted(SUITES))
def test_test_worlds_are_disjoint_from_training_worlds(name):
    suite = load_suite(name)
    test = suite.split("test")
    assert len(test) == 300 and len({t.metadata["world"] for t in test}) == 100
    train_worlds = {t.metadata["world"] for t in suite.split("train")}
    stream = TaskStream(suite, seed=0, exclude=test).tasks(0, 100)
    train_worlds |= {t.metadata["world"] for t in stream}
    assert not train_worlds & {t.metadata["world"] for t in test}
    assert {t.metadata["hops"] for t in test} == set(SUITES[name])
    assert suite.generator is GENERATORS[name]


def test_frozen_files_are_what_the_builder_makes():
    from turngym.envs.searchworld.suites import build_suite

    built = build_suite("searchworld-mixed")
    assert [content_hash(t) for t in built] == [content_hash(t) for t in load_suite("searchworld-mixed")]


@pytest.mark.parametrize("name", sorted(SUITES))
def test_the_oracle_answers_every_question_exactly(name):
    env = turngym.make(ENV_FOR[name])
    tasks = load_suite(name).split("test")[:60] + [GENERATORS[name](seed) for seed in range(1000, 1060)]
    for task in tasks:
        info, steps = run_oracle(env, task)
        assert info["success"] and info["em"] == 1.0, (task.prompt, task.answer, info)
        assert steps == 2 * task.metadata["hops"] + 1  # a search and an open per hop, then the answer
        assert env.unwrapped.opened_ids == task.metadata["supporting_ids"]


def test_the_reader_finds_every_fact_of_a_world():
    for seed in range(200):
        world = make_world(seed)
        for entity in world.entities.values():
            text = world.passage_of(entity.name).text
            for fld, value in entity.facts.items():
                assert read_field(text, entity.name, fld) == str(value), (fld, text)


def test_search_finds_each_entity_by_name_first():
    for seed in range(100):
        world = make_world(seed)
        index = WorldIndex(Corpus(Document(p.id, p.title, p.text) for p in world.passages))
        for name in world.entities:
            assert name in [h.doc.title for h in index.search(name, 3)], (seed, name)


@pytest.mark.parametrize("reply, why", [
    ('<tool_call>{"name": "search", "arguments": {"query": ""}}</tool_call>', "query"),
    ('<tool_call>{"name": "open", "arguments": {"doc_id": "d99"}}</tool_call>', "no passage"),
    ('<tool_call>{"name": "fly", "arguments": {}}</tool_call>', "fly"),
    ('<tool_call>{"name": "search", "arguments": {"query": "x"</tool_call>', ""),
    ("the answer is Lunford", ""),
])
def test_malformed_tool_calls_give_error_observations(reply, why):
    env = turngym.make("turngym/SearchWorld-2hop-v0")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(reply)
    assert info["action_valid"] is False and reward == 0.0 and not terminated
    assert why in obs and ("error" in obs.lower() or "invalid" in obs.lower())


def test_a_wrong_answer_scores_zero_and_options_that_do_not_apply_are_refused():
    env = turngym.make("turngym/SearchWorld-1hop-v0")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("<answer>nobody</answer>")
    assert terminated and reward == 0.0 and info["success"] is False
    with pytest.raises(ValueError, match="own corpus"):
        turngym.make("turngym/SearchWorld-v0", corpus="x.jsonl")


def test_vocabulary_covers_the_generated_language():
    words = set(VOCABULARY)
    for seed in range(20):
        task = world_task(seed, 0, (3,))
        text = task.prompt + " " + " ".join(p[2] for p in task.metadata["passages"])
        assert set(re.findall(r"[A-Za-z]+", text)) <= words
    assert all(len(ts) >= 2 for _, _, ts in FIELDS.values())  # paraphrases per fact
    assert json.dumps(VOCABULARY)


def test_the_trainer_draws_fresh_worlds_from_the_generator():
    from turngym.trainers.data import TrainingTasks

    suite = load_suite("searchworld-mixed")
    tasks = TrainingTasks(suite, "auto", "train", seed=3)
    assert tasks.generated
    drawn = tasks.take(0, 20) + tasks.demonstrations(20)
    assert len({t.metadata["world"] for t in drawn}) == 40  # every task a new world
    assert drawn[:20] == TrainingTasks(suite, "auto", "train", seed=3).take(0, 20)  # reproducible


def test_the_word_level_tokenizer_makes_each_word_one_token_everywhere():
    from turngym.agents.world_model import world_tokenizer

    tok = world_tokenizer()
    task = world_task(5, 0, (2,))
    text = task.prompt + "\n" + "\n".join(p[2] for p in task.metadata["passages"])
    call = '<tool_call>{"name": "search", "arguments": {"query": "Alric Ostley"}}</tool_call>'
    for s in (text, call, "unseen wörds ✓ round-trip"):
        assert tok.decode(tok(s)["input_ids"]) == s
    ids = tok(call)["input_ids"]
    assert len(ids) == 9 and tok.convert_ids_to_tokens(ids)[5] == "Alric"  # the name as in a question
    assert all(len(tok(f" {w}")["input_ids"]) == 2 for w in VOCABULARY + ["1914", "d07"])
    assert tok.apply_chat_template([{"role": "system", "content": "ignored"}, {"role": "user", "content": "Q"}],
                                   tokenize=False, add_generation_prompt=True) == "<|im_start|>Q<|im_end|><|im_start|>"


def test_the_tiny_world_model_spec_loads_with_its_tokenizer():
    from turngym.agents.models import load_model

    model, tok = load_model("tiny-world:hidden=32,layers=1,heads=2,seed=0")
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.generation_config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
