"""The fork server inside every warm sandbox: same results as the old exec path, nothing leaks
from one episode to the next, a server a command kills costs one restart, and when no server
can start the old path runs and says so in the metrics."""

from __future__ import annotations

import pytest

from turngym.sandboxes import LocalSandbox, SandboxPool

# Programs whose result must not depend on the path they take (fork of a warm interpreter or
# a fresh `python3` process).
SAME_AS_FRESH = [
    "import sys; print(sys.argv, __name__, sys.path[0] if sys.path else None)",
    "raise ValueError('boom')",
    "import sys; sys.exit('bye')",
    "exit(3)",
    "import atexit; atexit.register(print, 'at exit'); print('main')",
    "import threading, time\nt = threading.Thread(target=lambda: (time.sleep(0.2), print('thread')))\nt.start()",
    "import sys; print(sys.stdin.read()[::-1])",
    "import os; print(sorted(os.environ), os.getcwd())",
    "print('x' * 10, end='')\nimport os; os._exit(0)",
    "def f(:",
]


@pytest.mark.parametrize("code", SAME_AS_FRESH, ids=range(len(SAME_AS_FRESH)))
def test_python_through_the_server_matches_a_fresh_interpreter(new_sandbox, code):
    fast, slow = new_sandbox(), new_sandbox(fork_server=False)
    flags = ["/usr/bin/python3", "-I", "-S", "-B", "-c", code]
    a, b = fast.python(code, stdin="abc"), slow.python(code, stdin="abc")
    a_flags, b_flags = fast.exec(flags, stdin="abc"), slow.exec(flags, stdin="abc")
    assert not slow.fork_server_up and slow.fork_stats["fork_execs"] == 0
    assert fast.fork_stats["fork_execs"] >= 2 and fast.fork_stats["fallback_execs"] == 0
    for x, y in ((a, b), (a_flags, b_flags)):
        assert (x.stdout, x.stderr, x.exit_code, x.status) == (y.stdout, y.stderr, y.exit_code, y.status)


PLANT = r'''
import json, os, subprocess
for d in ("/work", "/tmp", "/dev/shm"):
    open(os.path.join(d, "planted"), "w").write("episode 1")
json.PLANTED = "episode 1"
subprocess.Popen(["sleep", "1000"], start_new_session=True)
print("planted", os.getpid())
'''

LOOK = r'''
import json, os, re
files = [d for d in ("/work", "/tmp", "/dev/shm") if os.listdir(d)]
secret = re.compile(b"tg-sec" + b"ret-[0-9a-f]{16}")
found = 0
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
    for line in maps:
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        try:
            mem.seek(lo)
            found += len(secret.findall(mem.read(hi - lo)))
        except (OSError, OverflowError, ValueError):
            pass
print(files, hasattr(json, "PLANTED"), found)
'''


def test_state_planted_in_one_episode_is_gone_in_the_next(new_sandbox, leftover_processes):
    import secrets

    with SandboxPool(new_sandbox, size=1, reset_in_background=False) as pool:
        with pool.sandbox() as sb:
            starts = sb.fork_stats["server_starts"]
            token = "tg-secret-" + secrets.token_hex(8)
            # a secret on stdin and in the output, as a grader's tests and results travel
            echoed = sb.python("import sys; print(sys.stdin.read())", stdin=token)
            assert echoed.stdout.strip() == token
            planted = sb.python(PLANT)
            assert planted.status == "ok", planted
            # within the episode the files stay (that is the workdir's job)
            assert sb.exec("cat /work/planted /tmp/planted /dev/shm/planted").stdout == "episode 1" * 3
        with pool.sandbox() as again:
            assert again is sb  # the same warm sandbox, reset
            seen = again.python(LOOK)
            assert seen.stdout == "[] False 0\n", seen
            assert leftover_processes(again) == []
            assert again.fork_server_up and again.fork_stats["server_starts"] == starts
            assert again.fork_stats["fallback_execs"] == 0


def test_a_command_that_kills_everything_costs_at_most_a_server_restart(sandbox, after):
    starts = sandbox.fork_stats["server_starts"]
    result = sandbox.exec("kill -9 -1; sleep 1; echo survived", timeout=5)
    assert result.status in {"killed", "ok"}
    if isinstance(sandbox, LocalSandbox):
        # pid 1 of its namespace: nothing inside can signal the server
        assert result.stdout == "survived\n" and sandbox.fork_stats["server_deaths"] == 0
    else:
        # the same user as the command: it can kill the server, which then starts again
        assert result.status == "killed" and "server" in result.message
    after(sandbox)  # the next command ran through a (new) server
    restarts = sandbox.fork_stats["server_starts"] - starts
    assert restarts == (0 if isinstance(sandbox, LocalSandbox) else 1)


def test_without_a_server_the_old_path_runs_and_says_so(backend, new_sandbox):
    sb = new_sandbox()
    assert sb.fork_server_up

    def refuse():
        raise RuntimeError("no server today")

    sb.fork.lost()  # as if it died ...
    if isinstance(sb, LocalSandbox):
        sb._stop_server_proc()
    sb.fork.starter = refuse  # ... and cannot start again
    result = sb.python("print(6 * 7)")
    assert (result.status, result.stdout) == ("ok", "42\n")
    assert not sb.fork_server_up
    assert sb.fork_stats["fallback_execs"] == 1 and sb.fork_stats["server_deaths"] == 1
    assert sb.exec("sleep 5", timeout=0.5).status == "timeout"
    sb.reset()
    assert sb.fork_stats["fallback_execs"] >= 2
