import json

import pytest

from turngym.envs import SuiteError, Task, TaskSuite, load_suite, register_suite, suite_names
from turngym.envs.tasks import TaskStream, content_hash


def _suite():
    return TaskSuite("demo", [Task(id=f"t{i}", prompt=f"p{i}", split="test" if i % 3 == 0 else "train") for i in range(9)])


def test_splits_are_frozen_and_ids_stable(tmp_path):
    suite = _suite()
    path = tmp_path / "demo.jsonl"
    suite.to_jsonl(path)
    again = TaskSuite.from_jsonl(path)
    assert [t.id for t in again.split("test")] == ["t0", "t3", "t6"]
    assert again.splits() == {"train": 6, "test": 3}
    assert again.get("t4").prompt == "p4"
    assert [t.model_dump() for t in again] == [t.model_dump() for t in suite]


def test_tasks_are_immutable():
    task = Task(id="a")
    with pytest.raises(Exception):
        task.id = "b"


def test_duplicate_ids_rejected():
    with pytest.raises(SuiteError, match="two tasks with id 'x'"):
        TaskSuite("dup", [Task(id="x"), Task(id="x")])


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "ok"}) + "\n" + '{"prompt": "no id"}\n')
    with pytest.raises(SuiteError, match=r"bad.jsonl:2: not a valid task"):
        TaskSuite.from_jsonl(path)


def test_unknown_split_and_task():
    suite = _suite()
    with pytest.raises(SuiteError, match="no split 'dev'"):
        suite.split("dev")
    with pytest.raises(SuiteError, match="no task 'nope'"):
        suite.get("nope")


def test_registry_lazy_loader_and_did_you_mean(tmp_path):
    path = tmp_path / "mine.jsonl"
    _suite().to_jsonl(path)
    register_suite("my-demo-suite", lambda: TaskSuite.from_jsonl(path, name="my-demo-suite"), "demo")
    assert "my-demo-suite" in suite_names()
    assert len(load_suite("my-demo-suite")) == 9
    assert len(load_suite(str(path))) == 9  # a path works too
    with pytest.raises(SuiteError, match="did you mean my-demo-suite"):
        load_suite("my-demo-suit")


def test_builtin_grid_suites_have_disjoint_frozen_splits():
    for name in ["sokoban-6x6-1", "frozenlake-4x4"]:
        suite = load_suite(name)
        assert suite.splits() == {"train": 200, "test": 500}
        train = {json.dumps(t.metadata.get("board") or t.metadata.get("map")) for t in suite.split("train")}
        test = {json.dumps(t.metadata.get("board") or t.metadata.get("map")) for t in suite.split("test")}
        assert not train & test


def test_from_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"id": "a", "prompt": "x", "answer": "1", "extra": 5}]),
        "test": datasets.Dataset.from_list([{"id": "b", "prompt": "y", "answer": "2", "extra": 6}]),
    })
    ds.save_to_disk(tmp_path / "ds")
    for split in ("train", "test"):
        ds[split].to_json(tmp_path / f"{split}.jsonl")
    suite = TaskSuite.from_datasets("json", data_files={"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl")})
    assert suite.get("b").split == "test" and suite.get("b").metadata == {"extra": 6}


@pytest.mark.parametrize("name", ["frozenlake-4x4", "sokoban-6x6-1"])
def test_generated_training_stream_is_a_function_of_seed_and_cursor(name):
    suite = load_suite(name)
    a = TaskStream(suite, seed=3, exclude=suite.split("test"))
    b = TaskStream(suite, seed=3, exclude=suite.split("test"))
    first = a.tasks(0, 30)
    # the same (seed, position) names the same task, whatever was drawn before it
    assert [t.model_dump() for t in first[17:]] == [t.model_dump() for t in b.tasks(17, 13)]
    assert len({content_hash(t) for t in first}) > 25  # fresh tasks, not a small cycle
    other = TaskStream(suite, seed=4, exclude=suite.split("test")).tasks(0, 30)
    assert {content_hash(t) for t in other} != {content_hash(t) for t in first}
    assert all(t.split == "generated" and t.answer for t in first)


def test_generated_training_tasks_never_equal_a_held_out_task():
    suite = load_suite("frozenlake-4x4")
    held_out = suite.split("test")
    test_hashes = {content_hash(t) for t in held_out}
    # the generator itself does produce test maps: the seeds the frozen test split came from
    assert content_hash(suite.generator(held_out[0].metadata["seed"])) in test_hashes
    # a stream whose generator is forced to hit test tasks skips them
    hits = iter([held_out[0].metadata["seed"], held_out[1].metadata["seed"], 7])
    rigged = TaskSuite(suite.name, suite.tasks, generator=lambda _seed: suite.generator(next(hits)))
    task = TaskStream(rigged, seed=0, exclude=held_out).task(0)
    assert content_hash(task) not in test_hashes and task.metadata["seed"] == 7
    stream = TaskStream(suite, seed=0, exclude=held_out)
    assert not {content_hash(t) for t in stream.tasks(0, 2000)} & test_hashes


def test_content_hash_ignores_ids_splits_seeds_and_answers():
    a = Task(id="a", prompt="p", answer=["left"], metadata={"map": ["SFG"], "seed": 1})
    b = Task(id="b", prompt="p", answer=["right"], metadata={"map": ["SFG"], "seed": 2}, split="test")
    c = Task(id="a", prompt="p", answer=["left"], metadata={"map": ["SHG"], "seed": 1})
    assert content_hash(a) == content_hash(b) != content_hash(c)


def test_a_suite_without_a_generator_has_no_stream():
    with pytest.raises(SuiteError, match="no generator"):
        TaskStream(_suite(), seed=0)
