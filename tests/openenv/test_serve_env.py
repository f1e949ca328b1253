"""`turngym serve-env`, driven by openenv-core's own client (code no one here wrote): full
episodes of Sokoban, Search and Code, info in the protocol's fields, bounded sessions, and
nothing left behind — by a hung or killed client (no open session, every environment closed),
nor by a stopped or killed server (no sandboxed process, container or browser)."""

# ruff: noqa: E402  (openenv-core is imported after the skip that needs it)

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("openenv.core", reason="needs the [openenv] extra (openenv-core)")

from openenv.core import GenericEnvClient
from websockets.sync.client import connect as ws_connect

import turngym
from turngym.envs.openenv.server import make_app, running

DEADLINE_S = 60.0


def _client(url):
    return GenericEnvClient(base_url=url, message_timeout_s=DEADLINE_S).sync()


def _info(observation):
    """The info keys a served observation carries (None: the env did not say)."""
    keys = ("task_id", "action_valid", "tool_calls", "anchor", "stratum", "success")
    return {k: observation[k] for k in keys if observation[k] is not None} | observation["info"]


def _plain(value):
    return json.loads(json.dumps(value))


def _read_line(proc, deadline_s):
    """The server's first stdout line (its address), read within a deadline."""
    box = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(deadline_s)
    if not box or not box[0]:
        proc.kill()
        raise AssertionError(f"serve-env printed no address in {deadline_s:.0f} s: {proc.stderr.read()}")
    return box[0]


@pytest.fixture
def cli_server():
    procs = []

    def start(*args):
        cmd = [sys.executable, "-m", "turngym", "serve-env", *args, "--host", "127.0.0.1", "--port", "0"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        procs.append(proc)
        line = _read_line(proc, DEADLINE_S)
        return proc, line.split(" at ")[1].split()[0]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serves_a_full_sokoban_episode_identical_to_in_process(cli_server):
    proc, url = cli_server("turngym/Sokoban-v0", "--max-sessions", "4", "--idle-timeout", "30")
    twin = turngym.make("turngym/Sokoban-v0")
    task = "sokoban-6x6-1-test-0003"
    with _client(url) as env:
        result = env.reset(seed=5, task_id=task)
        obs, info = twin.reset(seed=5, options={"task": task})
        assert (result.observation["text"], _info(result.observation)) == (obs, _plain(info))
        assert result.observation["instructions"] == twin.unwrapped.instructions
        assert env.state()["task_id"] == task
        for turn in range(30):
            reply = twin.unwrapped.expert_reply()
            result = env.step({"message": reply})
            obs, reward, terminated, truncated, info = twin.step(reply)
            served = result.observation
            assert (served["text"], result.reward, served["terminated"], served["truncated"]) == (obs, reward, terminated, truncated)
            assert _info(served) == _plain(info) and result.done == (terminated or truncated)
            if result.done:
                break
        assert served["success"] is True and result.reward > 0 and turn > 0
        with pytest.raises(RuntimeError, match="episode has ended"):
            env.step({"message": reply})
        assert env.state()["step_count"] == turn + 1
    assert httpx.get(f"{url}/turngym/sessions").json() == {"active": 0, "max": 4}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(DEADLINE_S) == -signal.SIGTERM  # uvicorn re-raises the signal after a graceful shutdown
    assert "shut down: closed 0 session(s) still open" in proc.stderr.read()


def test_cli_refuses_an_unknown_env_with_one_sentence(capsys):
    from turngym.cli import main

    assert main(["serve-env", "turngym/Sokoban-v9", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean" in err


def test_search_full_episode_search_then_answer():
    with running(make_app("turngym/Search-v0", max_sessions=2)) as url, _client(url) as env:
        twin = turngym.make("turngym/Search-v0")
        twin.reset(seed=0, options={"task": "2hop__116027_376978"})
        gold = twin.unwrapped.task.answer[0]
        result = env.reset(seed=0, task_id="2hop__116027_376978")
        assert result.observation["stratum"] == 0 and [t["function"]["name"] for t in result.observation["tools"]] == ["search", "open", "answer"]
        query = {"name": "search", "arguments": {"query": "director of Jump for Glory"}}
        result = env.step({"message": f"<tool_call>{json.dumps(query)}</tool_call>"})
        served = result.observation
        assert not result.done and served["stratum"] == 1 and served["tool_calls"][0]["name"] == "search"
        assert served["anchor"][0].startswith("Who is the spouse") and len(served["anchor"][1]) > 0
        result = env.step({"message": f"<answer>{gold}</answer>"})
        assert result.done and result.reward == 1.0 and result.observation["success"] is True
        assert result.observation["terminated"] and result.observation["info"]["em"] == 1.0


SEARCH_TASK = "2hop__116027_376978"
REACT_SEARCH = 'Action: search\nAction Input: {"query": "director of Jump for Glory"}'
JSON_SEARCH = json.dumps({"name": "search", "arguments": {"query": "director of Jump for Glory"}})


def _read_as(env, reply):
    """Step a served Search episode with ``reply``: was it valid, and which tools ran."""
    served = env.step({"message": reply}).observation
    return served["action_valid"], [call["name"] for call in served["tool_calls"] or []]


def test_the_server_reads_calls_in_the_style_its_client_names_at_reset():
    with running(make_app("turngym/Search-v0", max_sessions=2)) as url, _client(url) as env:
        env.reset(seed=0, task_id=SEARCH_TASK)  # no style named: the environment's own, Hermes
        assert _read_as(env, REACT_SEARCH) == (False, [])
        env.reset(seed=0, task_id=SEARCH_TASK, tool_call_style="react")
        assert _read_as(env, REACT_SEARCH) == (True, ["search"])
        env.reset(seed=0, task_id=SEARCH_TASK)  # named once, it holds for the session
        assert _read_as(env, REACT_SEARCH) == (True, ["search"])
        env.reset(seed=0, task_id=SEARCH_TASK, tool_call_style="openai_json")
        assert _read_as(env, JSON_SEARCH) == (True, ["search"])
        with pytest.raises(Exception, match="unknown tool-call style 'yaml'"):
            env.reset(seed=0, task_id=SEARCH_TASK, tool_call_style="yaml")


def test_cli_tool_call_style_is_the_default_until_a_client_names_one(cli_server):
    proc, url = cli_server("turngym/Search-v0", "--tool-call-style", "openai_json")
    with _client(url) as env:
        env.reset(seed=0, task_id=SEARCH_TASK)
        assert _read_as(env, JSON_SEARCH) == (True, ["search"])
        env.reset(seed=0, task_id=SEARCH_TASK, tool_call_style="react")
        assert _read_as(env, JSON_SEARCH) == (False, []) and _read_as(env, REACT_SEARCH) == (True, ["search"])
    with _client(url) as other:  # another session starts from the server's default again
        other.reset(seed=0, task_id=SEARCH_TASK)
        assert _read_as(other, JSON_SEARCH) == (True, ["search"])


def test_cli_refuses_an_unknown_tool_call_style_with_one_sentence(capsys):
    from turngym.cli import main

    assert main(["serve-env", "turngym/Search-v0", "--tool-call-style", "yaml", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tool-call-style must be one of" in err and "react" in err


def test_code_full_episode_with_the_local_sandbox():
    app = make_app("turngym/Code-v0", {"backend": "local"}, max_sessions=2)
    twin = turngym.make("turngym/Code-v0", backend="local")
    try:
        twin.reset(seed=0, options={"task": "turngym-code/reverse_string"})
        submit = {"name": "submit", "arguments": {"code": twin.unwrapped.task.answer}}
    finally:
        twin.close()
    with running(app) as url, _client(url) as env:
        result = env.reset(seed=0, task_id="turngym-code/reverse_string")
        assert "def reverse_string" in result.observation["text"]
        run = {"name": "python", "arguments": {"code": "print('abc'[::-1])"}}
        result = env.step({"message": f"<tool_call>{json.dumps(run)}</tool_call>"})
        assert "cba" in result.observation["text"] and not result.done
        result = env.step({"message": f"<tool_call>{json.dumps(submit)}</tool_call>"})
        assert result.done and result.reward == 1.0 and result.observation["success"] is True


def _poll(predicate, deadline_s=DEADLINE_S):
    """Wait until ``predicate()`` holds (bounded); returns whether it did."""
    stop = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > stop:
            return False
        threading.Event().wait(0.1)
    return True


def _sessions(url):
    return httpx.get(f"{url}/turngym/sessions").json()["active"]


def _ws_url(url):
    return url.replace("http://", "ws://") + "/ws"


def _reset_over(ws):
    ws.send(json.dumps({"type": "reset", "data": {"seed": 1}}))
    assert json.loads(ws.recv(DEADLINE_S))["type"] == "observation"


def test_sessions_are_bounded(counting):
    with running(make_app("test/Counting-v0", max_sessions=2, idle_timeout_s=None)) as url:
        with ws_connect(_ws_url(url), open_timeout=DEADLINE_S) as a, ws_connect(_ws_url(url), open_timeout=DEADLINE_S) as b:
            _reset_over(a)
            _reset_over(b)
            assert _sessions(url) == 2 and counting.live() == 2
            with ws_connect(_ws_url(url), open_timeout=DEADLINE_S) as third:  # refused: the server is full
                assert json.loads(third.recv(DEADLINE_S))["data"]["code"] == "CAPACITY_REACHED"
        assert _poll(lambda: _sessions(url) == 0 and counting.live() == 0)
        with _client(url) as fresh:  # room again
            assert fresh.reset(seed=0).observation["text"] == "task c-train"
    assert counting.live() == 0


def test_a_hung_client_is_reaped_by_the_idle_timeout(counting):
    with running(make_app("test/Counting-v0", max_sessions=2, idle_timeout_s=1.0)) as url:
        with ws_connect(_ws_url(url), open_timeout=DEADLINE_S) as hung:
            _reset_over(hung)  # then it never speaks again, its connection open
            assert counting.live() == 1
            # openenv-core's reaper looks every max(timeout / 4, 5) s
            assert _poll(lambda: _sessions(url) == 0), "the idle session was not reaped"
            assert _poll(lambda: counting.live() == 0), "the reaped session's environment was not closed"


def test_a_killed_client_leaves_nothing_behind(counting):
    script = (  # a bare WebSocket client: quick to start in a fresh process
        "import json, sys\n"
        "from websockets.sync.client import connect\n"
        "ws = connect(sys.argv[1].replace('http://', 'ws://') + '/ws')\n"
        "for msg in ({'type': 'reset', 'data': {}}, {'type': 'step', 'data': {'message': 'hi'}}):\n"
        "    ws.send(json.dumps(msg)); assert json.loads(ws.recv())['type'] == 'observation'\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with running(make_app("test/Counting-v0", max_sessions=4, idle_timeout_s=600.0)) as url:
        client = subprocess.Popen([sys.executable, "-c", script, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert _read_line(client, DEADLINE_S).strip() == "ready"
            assert _sessions(url) == 1 and counting.live() == 1
        finally:
            client.kill()
            client.wait()
        # the idle timeout is 10 minutes: the session ends because its connection did
        assert _poll(lambda: _sessions(url) == 0 and counting.live() == 0), "the killed client's session outlived it"


def test_shutdown_closes_sessions_still_open(counting):
    with contextlib.ExitStack() as outlives_the_server:
        with running(make_app("test/Counting-v0", max_sessions=4, idle_timeout_s=None)) as url:
            _reset_over(outlives_the_server.enter_context(ws_connect(_ws_url(url), open_timeout=DEADLINE_S)))
            assert counting.live() == 1
        assert counting.live() == 0


def _running(pattern):
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def test_a_killed_server_leaves_no_sandbox_process(cli_server):
    """SIGKILL gives the server no chance to clean up; the local sandbox's bubblewrap dies with
    its parent, taking the agent's program with it. (Its host work folder under /tmp is left;
    the local backend has no reaper for those yet.)"""
    marker = f"sleep {os.getpid()}.{int(time.monotonic() * 1000) % 100000}"
    proc, url = cli_server("turngym/Code-v0", "--env-kwargs", '{"backend": "local", "exec_timeout_s": 120}')
    with ws_connect(url.replace("http://", "ws://") + "/ws", open_timeout=DEADLINE_S) as ws:
        ws.send(json.dumps({"type": "reset", "data": {"task_id": "turngym-code/reverse_string"}}))
        assert json.loads(ws.recv(DEADLINE_S))["type"] == "observation"
        call = {"name": "python", "arguments": {"code": f"import os; os.execvp('sleep', {marker.split()!r})"}}
        ws.send(json.dumps({"type": "step", "data": {"message": f"<tool_call>{json.dumps(call)}</tool_call>"}}))
        assert _poll(lambda: _running(marker)), "the agent's program never started"
        proc.kill()
        proc.wait()
        assert _poll(lambda: not _running(marker), 20.0), "the sandboxed program outlived the killed server"


def _containers_of(pid):
    import docker

    client = docker.from_env()
    try:
        return client.containers.list(all=True, filters={"label": f"turngym.pid={pid}"})
    finally:
        client.close()


@pytest.mark.docker
def test_code_in_docker_and_a_stopped_server_leaves_no_container(cli_server):
    from turngym.sandboxes import SandboxUnavailable, make_sandbox

    try:
        make_sandbox("docker").close()
    except SandboxUnavailable as err:
        pytest.skip(f"Docker sandbox unavailable: {err}")
    proc, url = cli_server("turngym/Code-v0", "--env-kwargs", '{"grading_pool_size": 1}')
    with _client(url) as env:
        env.reset(seed=0, task_id="turngym-code/reverse_string")
        run = {"name": "python", "arguments": {"code": "print('abc'[::-1])"}}
        result = env.step({"message": f"<tool_call>{json.dumps(run)}</tool_call>"})
        assert "cba" in result.observation["text"]
        wrong = {"name": "submit", "arguments": {"code": "def reverse_string(s):\n    return s\n"}}
        result = env.step({"message": f"<tool_call>{json.dumps(wrong)}</tool_call>"})
        assert result.reward == 0.0 and not result.done  # graded in a container of the grading pool
        assert len(_containers_of(proc.pid)) >= 2  # the episode's sandbox and a grader
        proc.send_signal(signal.SIGTERM)  # with the session still open
        assert proc.wait(DEADLINE_S) == -signal.SIGTERM
    assert _containers_of(proc.pid) == []


def _process_table():
    """``{pid: (parent pid, executable name, state)}`` for every process we may read."""
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            table[int(entry)] = (int(stat[1]), os.path.basename(os.readlink(f"/proc/{entry}/exe")), stat[0])
        except OSError:
            continue
    return table


def _children(root):
    return {pid for pid, (parent, _, _) in _process_table().items() if parent == root}


def _chromium_under(root, skip=frozenset()):
    """Live (not zombie) Chromium processes descending from process ``root``, leaving out the
    subtrees of the processes in ``skip``."""
    table = _process_table()
    found, stack = set(), [root]
    while stack:
        parent = stack.pop()
        for pid in (p for p, (pp, _, _) in table.items() if pp == parent and p not in skip):
            stack.append(pid)
            if "chrom" in table[pid][1] and table[pid][2] != "Z":
                found.add(pid)
    return found


def test_a_served_browser_env_closes_its_browser_at_shutdown():
    pytest.importorskip("playwright", reason="needs Playwright: pip install 'turngym[gui]'")
    if not os.path.isfile("/usr/bin/chromium"):
        pytest.skip("needs Chromium at /usr/bin/chromium")
    # Browsers that earlier tests' pools still hold are not the server's to close, and they may
    # start processes of their own meanwhile (Chromium keeps a spare renderer ready): only
    # what descends from a process this test started (the server's Playwright driver) counts.
    # The process-wide browser earlier tests started is closed first, so the server starts its own.
    from turngym.sandboxes.browser import close_shared_pool

    close_shared_pool()
    others = _children(os.getpid())
    with running(make_app("turngym/WebApps-v0", max_sessions=2)) as url, _client(url) as env:
        result = env.reset(seed=0)
        assert result.observation["tools"] and result.observation["task_id"]
        result = env.step({"message": result.observation["example_actions"][0]})
        assert result.observation["action_valid"] is True
        assert _chromium_under(os.getpid(), skip=others), "the served environment started no browser"
    assert _poll(lambda: not _chromium_under(os.getpid(), skip=others), 20.0), "Chromium outlived the server"
