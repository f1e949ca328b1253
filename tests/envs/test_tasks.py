import json

import pytest

from turngym.envs import SuiteError, Task, TaskSuite, load_suite, register_suite, suite_names


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
        assert suite.splits() == {"train": 200, "test": 100}
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
