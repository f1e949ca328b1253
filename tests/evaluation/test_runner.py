"""The resumable evaluation loop, scripted policies and the CLI, on real environments."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import pytest
from turngym.agents.evaluation import (
    EvalConfig,
    EvalConfigError,
    TrajectoryStore,
    WorkItem,
    evaluate,
    load_results,
    plan_work,
    scripted_runner,
)
from turngym.agents.evaluation.results import SCHEMA_VERSION, ResultsError
from turngym.agents.trajectory import read_jsonl
from turngym.envs.core import TurnEnv
from turngym.envs.grid.sokoban import Level, solve
from turngym.envs.tasks import Task, TaskSuite

import turngym
from turngym.cli import main


class Killed(Exception):
    """Stands in for the process being killed mid-evaluation."""


class CountingRunner:
    """Wraps a runner; records the items it is asked for and can die after ``kill_after`` episodes."""

    def __init__(self, inner, kill_after: int | None = None) -> None:
        self.inner, self.kill_after, self.seen = inner, kill_after, []

    def __call__(self, items: Sequence[WorkItem]):
        for item, traj in zip(items, self.inner(items)):
            if self.kill_after is not None and len(self.seen) >= self.kill_after:
                raise Killed
            self.seen.append(item.key)
            yield traj


def _comparable(path: Path) -> dict:
    """Trajectories by key, without the wall-clock timings."""
    out = {}
    for line in path.read_text().splitlines():
        data = json.loads(line)
        for turn in data["turns"]:
            turn.pop("generate_s"), turn.pop("env_s")
        out[(data["env_id"], data["task_id"], data["run"])] = data
    return out


def _results_without_time(path: Path) -> dict:
    data = json.loads((path / "results.json").read_text())
    data.pop("created")
    return data


def test_plan_is_run_major_with_stable_distinct_seeds(coin_id: str, sokoban_id: str) -> None:
    config = EvalConfig(envs=[sokoban_id, coin_id], policy="scripted:random", runs=3, max_tasks=4)
    items, suites = plan_work(config)
    assert suites[sokoban_id] == ("evaltest-sokoban", ["sok-3", "sok-4", "sok-5", "sok-6"])
    assert len(suites[coin_id][1]) == 4
    assert len(items) == 2 * 4 * 3
    assert [i.run for i in items] == [0] * 8 + [1] * 8 + [2] * 8
    assert len({i.seed for i in items}) == len(items)
    again, _ = plan_work(config.model_copy(update={"max_tasks": 2}))
    seeds = {i.key: i.seed for i in items}
    assert all(seeds[i.key] == i.seed for i in again)  # a seed depends only on its item


def test_killed_and_resumed_evaluation_equals_an_uninterrupted_one(tmp_path: Path, coin_id: str, sokoban_id: str) -> None:
    config = EvalConfig(envs=[coin_id, sokoban_id], policy="scripted:random", runs=3, ks=[1, 2, 3], batch_size=5)
    whole = tmp_path / "whole"
    evaluate(config, scripted_runner("random"), whole)
    total = len(_comparable(whole / "trajectories.jsonl"))
    assert total == (6 + 6) * 3

    parted = tmp_path / "parted"
    first = CountingRunner(scripted_runner("random"), kill_after=13)
    with pytest.raises(Killed):
        evaluate(config, first, parted)
    assert len(TrajectoryStore(parted / "trajectories.jsonl")) == 13
    assert not (parted / "results.json").exists()

    second = CountingRunner(scripted_runner("random"))
    evaluate(config, second, parted)
    assert len(second.seen) == total - 13  # nothing that had finished ran again
    assert not set(first.seen) & set(second.seen)
    assert _comparable(parted / "trajectories.jsonl") == _comparable(whole / "trajectories.jsonl")
    assert _results_without_time(parted) == _results_without_time(whole)

    # A third run over a finished folder runs nothing and changes nothing.
    third = CountingRunner(scripted_runner("random"))
    evaluate(config, third, parted)
    assert third.seen == []
    assert _results_without_time(parted) == _results_without_time(whole)


def test_a_line_torn_by_a_kill_is_dropped_and_rerun(tmp_path: Path, coin_id: str) -> None:
    config = EvalConfig(envs=[coin_id], policy="scripted:random", runs=2)
    evaluate(config, scripted_runner("random"), tmp_path / "whole")
    out = tmp_path / "torn"
    with pytest.raises(Killed):
        evaluate(config, CountingRunner(scripted_runner("random"), kill_after=5), out)
    path = out / "trajectories.jsonl"
    with path.open("a") as fh:
        fh.write('{"traj_id": "half a li')  # the kill hit mid-write
    runner = CountingRunner(scripted_runner("random"))
    evaluate(config, runner, out)
    assert len(runner.seen) == 12 - 5
    assert _comparable(path) == _comparable(tmp_path / "whole" / "trajectories.jsonl")
    assert len(list(read_jsonl(path))) == 12  # still plain Trajectory JSONL


def test_solver_solves_real_sokoban_in_the_shortest_number_of_turns(tmp_path: Path) -> None:
    config = EvalConfig(envs=["turngym/Sokoban-v0"], policy="scripted:solver", runs=2, ks=[1, 2], max_tasks=5)
    results = evaluate(config, scripted_runner("solver"), tmp_path)
    env = results.envs[0]
    assert env.suite == "sokoban-6x6-1" and env.split == "test"
    assert env.stats.pass1.mean == 1.0 and env.stats.pass_hat_k[2] == 1.0
    suite = turngym.load_suite("sokoban-6x6-1")
    for task in env.tasks:
        shortest = len(solve(Level.parse(suite.get(task.task_id).metadata["board"])))
        assert task.mean_turns == shortest and task.mean_tool_calls == shortest
        assert task.mean_reward == pytest.approx(1.1)  # box on target (0.1) + solved (1.0)


def test_statistics_in_results_match_the_trajectories(tmp_path: Path, coin_id: str) -> None:
    results = evaluate(EvalConfig(envs=[coin_id], policy="scripted:random", runs=4, ks=[1, 2]), scripted_runner("random"), tmp_path)
    by_task: dict[str, list] = {}
    for traj in read_jsonl(tmp_path / "trajectories.jsonl"):
        by_task.setdefault(traj.task_id, []).append(traj)
    stats = results.envs[0]
    for task in stats.tasks:
        trajs = by_task[task.task_id]
        c = sum(t.success for t in trajs)
        assert (task.runs, task.successes) == (4, c)
        assert task.pass_at_k[2] == pytest.approx(1 - (4 - c) * (3 - c) / 12 if c <= 2 else 1.0)
        assert task.mean_turns == pytest.approx(sum(len(t.turns) for t in trajs) / 4)
        assert task.truncated_rate == sum(t.status == "truncated" for t in trajs) / 4
    assert stats.stats.pass1.mean == pytest.approx(sum(t.pass1 for t in stats.tasks) / len(stats.tasks))
    loaded = load_results(tmp_path)
    assert loaded == results and loaded.schema_version == SCHEMA_VERSION


class BrokenEnv(TurnEnv):
    def __init__(self, split: str = "test", **kw) -> None:
        tasks = [Task(id="fine", split="test"), Task(id="broken", split="test")]
        super().__init__(suite=TaskSuite("evaltest-broken", tasks), split=split, max_turns=2, **kw)

    def _reset_task(self, task: Task):
        return "go", {}

    def _step(self, action: str):
        if self.task.id == "broken":
            raise RuntimeError("backend went away")
        return "done", 1.0, True, {"success": True}


def test_an_env_that_raises_is_an_error_episode_not_a_crash(tmp_path: Path) -> None:
    gym.register("evaltest/Broken-v0", BrokenEnv, disable_env_checker=True)  # not listed by `turngym envs`
    results = evaluate(EvalConfig(envs=["evaltest/Broken-v0"], policy="scripted:random", runs=2), scripted_runner("random"), tmp_path)
    tasks = {t.task_id: t for t in results.envs[0].tasks}
    assert tasks["broken"].error_rate == 1.0 and tasks["broken"].pass1 == 0.0
    assert tasks["fine"].error_rate == 0.0 and tasks["fine"].pass1 == 1.0
    assert results.envs[0].stats.error_rate == 0.5
    errors = [t for t in read_jsonl(tmp_path / "trajectories.jsonl") if t.status == "error"]
    assert len(errors) == 2 and "backend went away" in errors[0].error


def test_resuming_with_another_policy_is_refused(tmp_path: Path, coin_id: str) -> None:
    evaluate(EvalConfig(envs=[coin_id], policy="scripted:random", runs=1), scripted_runner("random"), tmp_path)
    with pytest.raises(EvalConfigError, match="policy='scripted:random'"):
        evaluate(EvalConfig(envs=[coin_id], policy="scripted:solver", runs=1), scripted_runner("solver"), tmp_path)


def test_a_runner_that_returns_too_few_trajectories_is_an_error(tmp_path: Path, coin_id: str) -> None:
    def lossy(items):
        return list(scripted_runner("random")(items))[:-1]

    with pytest.raises(RuntimeError, match="returned 5 trajectories for 6"):
        evaluate(EvalConfig(envs=[coin_id], policy="scripted:random", runs=1), lossy, tmp_path)


def test_solver_without_an_expert_says_so(tmp_path: Path, coin_id: str) -> None:
    with pytest.raises(EvalConfigError, match="no expert for CoinEnv"):
        evaluate(EvalConfig(envs=[coin_id], policy="scripted:solver", runs=1), scripted_runner("solver"), tmp_path)


def test_cli_eval_resume_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--env", "turngym/Sokoban-v0", "--env", "turngym/FrozenLake-v0", "--max-tasks", "6", "--quiet"]
    a, b = tmp_path / "solver", tmp_path / "random"
    assert main(["eval", *common, "--policy", "scripted:solver", "--runs", "2", "--k", "1,2", "--out", str(a)]) == 0
    assert main(["eval", *common, "--policy", "scripted:random", "--runs", "3", "--k", "1,2", "--out", str(b)]) == 0
    out = capsys.readouterr().out
    assert "turngym/Sokoban-v0 [sokoban-6x6-1/test] 6 tasks x 2 runs: pass@1 1.000" in out
    assert (a / "report.html").is_file() and (b / "trajectories.jsonl").is_file()
    results = load_results(b)
    assert [e.env_id for e in results.envs] == ["turngym/Sokoban-v0", "turngym/FrozenLake-v0"]
    assert results.overall is not None and results.overall.num_tasks == 12

    assert main(["compare", str(a), str(b), "--delta", "0.2", "--json", str(tmp_path / "cmp.json")]) == 0
    out = capsys.readouterr().out
    assert "all paired tasks: 12 tasks, pass@1 A 1.000" in out
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    expected = 1.0 - results.overall.pass1.mean
    assert cmp["overall"]["difference"]["mean"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--env", "turngym/Sokoban-v0", "--policy", "scripted:nope"], "no scripted policy named 'nope'"),
        (["eval", "--env", "turngym/Sokobann-v0", "--policy", "scripted:random"], "did you mean"),
        (["eval", "--env", "turngym/Sokoban-v0", "--suite", "dev", "--policy", "scripted:random"], "no split 'dev'"),
        (["compare", "/nonexistent/a", "/nonexistent/b"], "no evaluation results at"),
    ],
)
def test_cli_user_errors_are_one_sentence_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv[0] == "eval":
        argv = [*argv, "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_results_of_another_schema_version_are_refused(tmp_path: Path, coin_id: str) -> None:
    evaluate(EvalConfig(envs=[coin_id], policy="scripted:random", runs=1), scripted_runner("random"), tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(ResultsError, match="schema version"):
        load_results(tmp_path)




class GuessEnv(TurnEnv):
    """Guess the hidden answer; one class whose expert is registered from outside."""

    def __init__(self, split: str = "test", **kw) -> None:
        tasks = [Task(id=f"g{i}", answer=str(i * 7), split="test") for i in range(3)]
        super().__init__(suite=TaskSuite("evaltest-guess", tasks), split=split, max_turns=3, **kw)

    def _reset_task(self, task: Task):
        return "guess the number", {}

    def _step(self, action: str):
        won = action.strip() == self.task.answer
        return ("right" if won else "wrong"), float(won), won, {"success": won}

    def example_actions(self) -> list[str]:
        return ["0"]


def test_a_registered_expert_drives_the_solver(tmp_path: Path) -> None:
    from turngym.agents.evaluation import register_expert

    gym.register("evaltest/Guess-v0", GuessEnv, disable_env_checker=True)
    register_expert(f"{GuessEnv.__module__}:{GuessEnv.__qualname__}", lambda env: env.task.answer)
    results = evaluate(EvalConfig(envs=["evaltest/Guess-v0"], policy="scripted:solver", runs=2), scripted_runner("solver"), tmp_path)
    assert results.envs[0].stats.pass1.mean == 1.0 and results.envs[0].stats.mean_turns == 1.0
    random = evaluate(EvalConfig(envs=["evaltest/Guess-v0"], policy="scripted:random", runs=2), scripted_runner("random"), tmp_path / "r")
    assert [t.successes for t in random.envs[0].tasks] == [2, 0, 0]  # "0" only solves g0


def test_a_corrupt_line_costs_one_episode_not_the_ones_after_it(tmp_path: Path, coin_id: str) -> None:
    config = EvalConfig(envs=[coin_id], policy="scripted:random", runs=2)
    out = tmp_path / "corrupt"
    evaluate(config, scripted_runner("random"), out)
    path = out / "trajectories.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    broken = lines[3]
    lines[3] = "{not json\n"
    path.write_text("".join(lines))

    store = TrajectoryStore(path)
    assert len(store) == 12 - 1  # every other episode, those after the bad line too
    assert (out / "trajectories.jsonl.unreadable").read_text() == "{not json\n"
    assert len(list(read_jsonl(path))) == 11  # the store file is plain Trajectory JSONL again
    runner = CountingRunner(scripted_runner("random"))
    evaluate(config, runner, out)
    redone = json.loads(broken)
    assert runner.seen == [(redone["env_id"], redone["task_id"], redone["run"])]


class HangingEnv(TurnEnv):
    """Task ``hang``: a step blocks until the test releases it (a backend that stopped answering)."""

    release = threading.Event()

    def __init__(self, **kw):
        super().__init__(suite=TaskSuite("hang", [Task(id="hang", split="test"), Task(id="fine", split="test")]), split="test", **kw)

    def _reset_task(self, task):
        return "go", {}

    def _step(self, action: str):
        if self.task.id == "hang":
            HangingEnv.release.wait()
        return "done", 1.0, True, {"success": True}

    def example_actions(self) -> list[str]:
        return ["go"]


def test_scripted_eval_has_the_step_deadline_of_every_evaluation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gym.register("evaltest/Hanging-v0", HangingEnv, disable_env_checker=True)
    try:
        code = main(["eval", "--env", "evaltest/Hanging-v0", "--policy", "scripted:random", "--runs", "2",
                     "--step-timeout", "0.3", "--out", str(tmp_path), "--quiet", "--no-report"])
    finally:
        HangingEnv.release.set()  # the abandoned worker returns and closes its environment
    assert code == 0
    tasks = {t.task_id: t for t in load_results(tmp_path).envs[0].tasks}
    assert tasks["hang"].error_rate == 1.0 and tasks["hang"].pass1 == 0.0
    assert tasks["fine"].pass1 == 1.0  # the next episodes got a fresh environment
    errors = [t.error for t in read_jsonl(tmp_path / "trajectories.jsonl") if t.status == "error"]
    assert errors == ["step exceeded its deadline of 0.3s"] * 2  # the rollout engine's words, as for a model


def test_pass_at_k_past_the_runs_is_explained(tmp_path: Path, coin_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--env", coin_id, "--policy", "scripted:random", "--runs", "2", "--k", "1,5",
                 "--out", str(tmp_path), "--quiet", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "pass@5 -" in out
    assert "pass@5 and pass^5 need at least 5 runs per task (--runs 2)" in out


def test_replies_that_are_not_unicode_text_are_stored_and_reported(tmp_path: Path, coin_id: str) -> None:
    from turngym.agents.evaluation import register_scripted

    register_scripted("surrogate", lambda env, obs, info, rng: "flip\udcff")
    results = evaluate(EvalConfig(envs=[coin_id], policy="scripted:surrogate", runs=1), scripted_runner("surrogate"), tmp_path)
    assert results.envs[0].stats.error_rate == 0.0  # answered as an invalid reply, not an environment error
    replies = [turn.response_text for t in read_jsonl(tmp_path / "trajectories.jsonl") for turn in t.turns]
    assert replies and set(replies) == {"flip\udcff"}
    assert "flip\\udcff" in (tmp_path / "report.html").read_text(encoding="utf-8")
