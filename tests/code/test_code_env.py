"""The code environment: suites verified through the real grader, reward hacking, the env loop."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest

from turngym.envs.code.build_data import load_code_suite, load_humaneval_suite, split_tests
from turngym.envs.code.env import CodeEnv, grading_pool
from turngym.envs.code.grader import grade
from turngym.envs.core import EnvUnavailable
from turngym.envs.tasks import TaskSuite
from turngym.sandboxes import make_sandbox
from turngym.sandboxes.errors import SandboxUnavailable
from turngym.sandboxes.local import bwrap_available

WORKERS = 2


def _docker_or_skip():
    try:
        return make_sandbox("docker")
    except SandboxUnavailable as err:
        pytest.skip(f"Docker sandbox unavailable: {err}")


Job = tuple[str, str, list[str], str, str]


def _grade_all(backend: str, jobs: list[Job]) -> dict[str, tuple[bool, ...]]:
    """Grade (key, code, tests, entry, context) jobs on WORKERS sandboxes of backend; key -> outcome."""
    sandboxes = [make_sandbox(backend) for _ in range(WORKERS)]
    try:
        def work(i: int) -> list[tuple[str, tuple[bool, ...]]]:
            sb, out = sandboxes[i], []
            for key, code, tests, entry, context in jobs[i::WORKERS]:
                out.append((key, grade(sb, code, tests, entry, context=context).passed))
                sb.reset()  # every grading in a fresh sandbox
            return out

        with ThreadPoolExecutor(WORKERS) as pool:
            return {k: v for part in pool.map(work, range(WORKERS)) for k, v in part}
    finally:
        for sb in sandboxes:
            sb.close()


def _suite_jobs(suite: TaskSuite, wrong: bool = True) -> list[Job]:
    """The environment's gradings: the prompt is the trusted context (helpers the tests call)."""
    jobs = []
    for t in suite:
        meta = t.metadata
        jobs.append((f"ref:{t.id}", t.answer, meta["tests"], meta["entry_point"], t.prompt))
        if wrong and meta.get("wrong_solution"):
            jobs.append((f"wrong:{t.id}", meta["wrong_solution"], meta["tests"], meta["entry_point"], t.prompt))
    return jobs


def _check_verdicts(outcomes: dict[str, tuple[bool, ...]]) -> None:
    bad_refs = [k for k, v in outcomes.items() if k.startswith("ref:") and not (v and all(v))]
    passing_wrongs = [k for k, v in outcomes.items() if k.startswith("wrong:") and all(v)]
    assert bad_refs == [] and passing_wrongs == []


# -- the data -----------------------------------------------------------------------------
def test_train_suite_is_large_and_complete():
    suite = load_code_suite()
    assert len(suite) >= 100 and len(suite.split("train")) >= 100 and len(suite.split("test")) >= 30
    for task in suite:
        meta = task.metadata
        assert task.answer.startswith(task.prompt) and meta["wrong_solution"].startswith(task.prompt)
        assert len(meta["tests"]) >= 2, task.id
        assert f"def {meta['entry_point']}(" in task.prompt


def test_split_tests_keeps_setup_with_every_assert():
    tests = split_tests("x = 2\nassert x == 2\ny = 3\nassert x + y == 5\n")
    assert tests == ["x = 2\nassert x == 2", "x = 2\ny = 3\nassert x + y == 5"]


def test_every_reference_scores_1_and_every_wrong_solution_scores_0_local():
    _check_verdicts(_grade_all("local", _suite_jobs(load_code_suite())))


def test_humaneval_canonical_solutions_score_1_local():
    suite = load_humaneval_suite()
    assert len(suite) == 164 and suite.splits() == {"test": 164}
    _check_verdicts(_grade_all("local", _suite_jobs(suite, wrong=False)))


@pytest.mark.docker
def test_every_reference_and_wrong_solution_docker():
    _docker_or_skip().close()
    _check_verdicts(_grade_all("docker", _suite_jobs(load_code_suite())))


@pytest.mark.docker
def test_humaneval_canonical_solutions_score_1_docker():
    _docker_or_skip().close()
    _check_verdicts(_grade_all("docker", _suite_jobs(load_humaneval_suite(), wrong=False)))


# -- reward hacking: tests/code/test_grader_hacks.py -------------------------------------
FAKE_PASS = "PASS " + "0" * 32


# -- the environment ----------------------------------------------------------------------
def _call(name: str, **arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


@pytest.fixture
def env():
    e = CodeEnv(backend="local", max_turns=8)
    yield e
    e.close()


def test_multi_turn_run_read_fix_resubmit(env):
    obs, info = env.reset(seed=0, options={"task": "turngym-code/reverse_string"})
    assert "def reverse_string" in obs and info["stratum"] == 0
    assert info["anchor"] == ("turngym-code/reverse_string", ())
    obs, r, term, trunc, info = env.step(_call("python", code="print('abc'[::-1]); import sys; print('oops', file=sys.stderr); sys.exit(3)"))
    assert "cba" in obs and "oops" in obs and "exit code 3" in obs
    assert (r, term, info["action_valid"], info["stratum"]) == (0.0, False, True, 1)
    wrong = env.task.metadata["wrong_solution"]
    obs, r, term, trunc, info = env.step(_call("submit", code=wrong))
    assert r == 0.0 and not term and "hidden tests passed" in obs
    assert info["tests_passed"] < info["tests_total"] and info["anchor"][1] == tuple(info["tests"])
    assert info["submissions"] == 1 and not all(info["tests"])
    obs, r, term, trunc, info = env.step(env.expert_reply())
    assert (r, term, info["success"]) == (1.0, True, True) and all(info["tests"])
    assert info["anchor"] == ("turngym-code/reverse_string", (True,) * info["tests_total"])


def test_sandbox_is_kept_within_an_episode_and_wiped_between(env):
    env.reset(seed=0)
    env.step(_call("bash", cmd="echo kept > note.txt"))
    obs, *_ = env.step(_call("bash", cmd="cat note.txt"))
    assert "kept" in obs
    first = env._sandbox
    env.reset(seed=1)
    obs, *_ = env.step(_call("bash", cmd="cat note.txt || echo missing"))
    assert "missing" in obs and env._sandbox is first


def test_agent_files_in_its_sandbox_do_not_reach_the_grader(env):
    env.reset(seed=0, options={"task": "turngym-code/reverse_string"})
    hook = f"import os\\nos.write(1, b'{FAKE_PASS}\\\\n')\\nos._exit(0)\\n"
    env.step(_call("bash", cmd=f"printf '{hook}' | tee conftest.py sitecustomize.py > /tmp/sitecustomize.py"))
    obs, r, term, trunc, info = env.step(_call("submit", code="def reverse_string(s):\n    return s + '!'\n"))
    assert r == 0.0 and not any(info["tests"])


def test_fraction_reward_and_last_submission_ends(env):
    e = CodeEnv(backend="local", reward="fraction", max_submissions=1)
    try:
        e.reset(seed=0, options={"task": "turngym-code/rotate_list"})
        obs, r, term, trunc, info = e.step(_call("submit", code=e.task.metadata["wrong_solution"]))
        assert term and 0.0 < r < 1.0 and r == info["tests_passed"] / info["tests_total"]
        assert info["success"] is False and "No submissions left" in obs
    finally:
        e.close()


@pytest.mark.parametrize("reply", [
    "just some prose",
    '<tool_call>{"name": "python", "arguments": {"code": </tool_call>',
    _call("rm_rf", path="/"),
    _call("python", source="print(1)"),
    _call("submit"),
])
def test_invalid_tool_calls_are_observations(env, reply):
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(reply)
    assert info["action_valid"] is False and not term and r == 0.0
    assert obs.strip() and ("Invalid reply" in obs or "error:" in obs)


def test_fenced_block_with_the_word_submit_is_a_submission(env):
    env.reset(seed=0, options={"task": "turngym-code/factorial"})
    obs, r, term, trunc, info = env.step(f"I submit this:\n```python\n{env.task.answer}```\n")
    assert r == 1.0 and term and info["tool_calls"][0]["name"] == "submit"
    env.reset(seed=0, options={"task": "turngym-code/factorial"})
    obs, r, term, trunc, info = env.step(f"Here is a draft:\n```python\n{env.task.answer}```\n")
    assert info["action_valid"] is False


def test_exec_deadline_and_episode_budget():
    e = CodeEnv(backend="local", exec_timeout_s=1.0, episode_exec_s=1.5)
    try:
        e.reset(seed=0)
        obs, *_ = e.step(_call("python", code="while True: pass"))
        assert "timeout" in obs
        e.step(_call("python", code="while True: pass"))
        obs, r, term, trunc, info = e.step(_call("python", code="print(1)"))
        assert "run time is used up" in obs and info["action_valid"] is False
        obs, r, term, trunc, info = e.step(e.expert_reply())
        assert r == 1.0 and term
    finally:
        e.close()


def _grading_sandboxes_stats(env: CodeEnv) -> tuple[dict[str, int], list[bool]]:
    """Summed fork_stats and fork_server_up of every sandbox of ``env``'s grading pool: each is
    checked out once (the one that just graded comes back after its reset)."""
    pool = grading_pool(env.options.backend, env.limits, fork_server=env.options.fork_server)
    with ExitStack() as stack:
        graders = [stack.enter_context(pool.sandbox()) for _ in range(pool.size)]
        totals = {k: sum(g.fork_stats[k] for g in graders) for k in graders[0].fork_stats}
        return totals, [g.fork_server_up for g in graders]


@pytest.mark.parametrize("backend", ["local", pytest.param("docker", marks=pytest.mark.docker)])
@pytest.mark.parametrize("fork_server", [True, False])
def test_fork_server_option_reaches_episode_and_grading_sandboxes(backend, fork_server):
    """fork_server=False: the agent's runs and the grading take the old exec path (no server
    ever starts: nothing counts as a fallback either) and grade right; True: both go through the
    fork server, never the old path."""
    if backend == "local" and fork_server and not bwrap_available():
        pytest.skip("the local fork server needs bubblewrap")
    e = CodeEnv(backend=backend, fork_server=fork_server)
    try:
        try:
            e.reset(seed=0)
        except EnvUnavailable as err:
            pytest.skip(str(err))
        obs, *_ = e.step(_call("python", code="print(6 * 7)"))
        assert "42" in obs
        _, r, term, _, info = e.step(e.expert_reply())
        assert (r, term, info["success"]) == (1.0, True, True)
        graders, graders_up = _grading_sandboxes_stats(e)
        for stats in (e.sandbox.fork_stats, graders):
            assert stats["fallback_execs"] == 0, stats
            if fork_server:
                assert stats["fork_execs"] >= 1 and stats["server_starts"] >= 1, stats
            else:
                assert stats["fork_execs"] == stats["server_starts"] == 0, stats
        assert e.sandbox.fork_server_up is fork_server and set(graders_up) == {fork_server}
    finally:
        e.close()


def test_fork_server_option_is_validated():
    with pytest.raises(ValueError, match="invalid option for CodeEnv: fork_server"):
        CodeEnv(backend="local", fork_server="sometimes")


def test_user_tasks_from_jsonl(tmp_path):
    task = {"id": "mine/double", "prompt": "def double(x):\n    \"\"\"Twice x.\"\"\"\n", "split": "test",
            "answer": "def double(x):\n    return 2 * x\n",
            "metadata": {"entry_point": "double", "tests": ["assert double(2) == 4", "assert double(0) == 0"]}}
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(task) + "\n")
    e = CodeEnv(suite=str(path), backend="local")
    try:
        obs, info = e.reset(seed=0)
        assert info["task_id"] == "mine/double"
        _, r, term, _, info = e.step(e.expert_reply())
        assert r == 1.0 and info["tests"] == [True, True]
    finally:
        e.close()


def test_conformance_local():
    from turngym.envs.checker import check

    results = check("turngym/Code-v0", backend="local")
    assert [r for r in results if not r.passed] == []


def test_conformance_default_backend():
    from turngym.envs.checker import check

    try:
        results = check("turngym/Code-v0")
    except EnvUnavailable as err:
        pytest.skip(str(err))
    assert [r for r in results if not r.passed] == []


def test_humaneval_env_expert_solves():
    from turngym.envs import make

    e = make("turngym/HumanEval-v0", backend="local").unwrapped
    try:
        obs, info = e.reset(seed=3)
        assert info["task_id"].startswith("HumanEval/")
        _, r, term, _, info = e.step(e.expert_reply())
        assert r == 1.0 and term
    finally:
        e.close()
