"""The adversarial suite: hostile code against both backends.

Every case asserts the reported status, that the host and the next command are unaffected,
and that no process of the sandbox is left behind. Cases a backend cannot contain are
skipped for that backend with the reason.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid

import pytest

from turngym.sandboxes import UnsafePath
from turngym.sandboxes.grading import passed, with_sentinel

PY = "/usr/bin/python3"


# (id, command or python code, timeout, allowed statuses, expected exit code or None)
SIMPLE_CASES = [
    ("infinite-loop", "py:while True: pass", 1.5, {"timeout"}),
    ("sleep-forever", "sleep infinity", 1.0, {"timeout"}),
    ("sigterm-ignored", "py:import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)", 1.0, {"timeout"}),
    ("sigkill-self", "kill -9 $$", 5, {"killed"}),
    ("segfault", "py:import ctypes; ctypes.string_at(0)", 5, {"killed"}),
    ("abort", "py:import os; os.abort()", 5, {"killed"}),
    ("nonzero-exit", "exit 7", 5, {"error"}),
    ("missing-binary", "/no/such/binary", 5, {"error"}),
    ("memory-bomb", "py:a = []\nwhile True: a.append(b'x' * 10**6)", 10, {"oom"}),
    ("one-huge-allocation", "py:b = b'x' * (1 << 30)", 10, {"oom"}),
    ("fork-bomb", "py:import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", 2, {"timeout"}),
    ("shell-fork-bomb", "f() { f | f & }; f; sleep 5", 2, {"timeout", "ok", "error"}),
    ("thread-bomb", "py:import threading, time\nwhile True: threading.Thread(target=time.sleep, args=(60,), daemon=True).start()", 3, {"error", "timeout", "oom"}),
    ("sigxfsz-huge-file", "head -c 100000000 /dev/zero > big", 10, {"killed", "error"}),
    ("kill-all-from-inside", "kill -9 -1; sleep 1; echo survived", 5, {"killed", "ok"}),
    ("kill-every-pid", "for p in /proc/[0-9]*; do kill -9 ${p#/proc/} 2>/dev/null; done; echo done", 5, {"killed", "ok"}),
]


def _run(sb, spec: str, timeout: float):
    if spec.startswith("py:"):
        return sb.python(spec[3:], timeout=timeout)
    return sb.exec(spec, timeout=timeout)


@pytest.mark.parametrize("case", SIMPLE_CASES, ids=[c[0] for c in SIMPLE_CASES])
def test_hostile_command_is_contained(sandbox, case, after):
    _name, spec, timeout, statuses = case
    result = _run(sandbox, spec, timeout)
    assert result.status in statuses, result
    assert os.getpid() > 0 and threading.main_thread().is_alive()  # the runner survived
    after(sandbox)


def test_timeout_reports_none_exit_and_message(sandbox, after):
    result = sandbox.exec("sleep 30", timeout=0.5)
    assert result.status == "timeout" and result.exit_code is None
    assert "deadline" in result.message
    after(sandbox)


def test_setsid_double_fork_does_not_outlive_exec(sandbox, after):
    result = sandbox.exec("setsid sh -c 'sleep 1000' & (sh -c 'sleep 1000 &' &); echo started")
    assert (result.status, result.stdout) == ("ok", "started\n")
    after(sandbox)


def test_stdin_read_without_stdin_gets_eof(sandbox, after):
    result = sandbox.python("import sys; print(repr(sys.stdin.read()))")
    assert (result.status, result.stdout) == ("ok", "''\n")
    fed = sandbox.exec("wc -c", stdin=b"x" * 300_000)
    assert (fed.status, fed.stdout.strip()) == ("ok", "300000")
    after(sandbox)


def test_ten_thousand_short_children_leave_no_zombies(sandbox, after):
    # dash forks a subshell per iteration (fork without exec: the cheapest real child)
    result = sandbox.exec("i=0; while [ $i -lt 10000 ]; do (exit 0); i=$((i+1)); done; echo $i",
                          timeout=90)
    assert (result.status, result.stdout) == ("ok", "10000\n")
    orphans = sandbox.python("import os\nfor i in range(30):\n    if os.fork() == 0: os._exit(0)\nprint('left')")
    assert orphans.status == "ok"
    after(sandbox)


def test_gigabyte_to_stdout_is_capped_and_killed(sandbox, after, limits):
    result = sandbox.exec("head -c 1000000000 /dev/zero")
    assert result.status == "killed" and result.truncated
    assert len(result.stdout) == limits.output_bytes
    after(sandbox)


def test_output_over_cap_is_truncated_but_runs_to_the_end(sandbox, after, limits):
    result = sandbox.python("import sys\nsys.stdout.write('a' * 200_000)\nsys.stderr.write('done')")
    assert result.status == "ok" and result.truncated
    assert result.stdout == "a" * limits.output_bytes and result.stderr == "done"
    after(sandbox)


def test_binary_and_invalid_utf8_output_is_replaced(sandbox, after):
    result = sandbox.exec(r"printf 'ok\377\376\000end'; head -c 4096 /dev/urandom >&2")
    assert result.status == "ok"
    assert result.stdout == "ok\ufffd\ufffd\x00end"
    assert isinstance(result.stderr, str) and len(result.stderr) > 0
    after(sandbox)


def test_huge_file_is_capped_by_file_size_limit(sandbox, after, limits):
    sandbox.python("f = open('big', 'wb')\nf.write(b'x' * (64 << 20))", timeout=10)
    size = sandbox.exec("stat -c %s big").stdout.strip()
    assert int(size or 0) <= limits.file_size_mb * 1024 * 1024
    after(sandbox)


def test_many_small_files_then_reset_wipes_them(sandbox, after):
    result = sandbox.python("import os\nfor i in range(20000):\n    open(f'f{i}', 'w').close()\nprint(len(os.listdir('.')))",
                            timeout=30)
    assert result.status in {"ok", "error"}
    sandbox.reset()
    assert sandbox.exec("ls -A /work /tmp").stdout.split() in ([], ["/tmp:", "/work:"])
    after(sandbox)


@pytest.mark.parametrize("target", ["/usr/bin/evil-turngym", "/bin/evil-turngym", "/etc/evil-turngym",
                                    "/evil-turngym", "/root/evil-turngym"])
def test_writing_outside_the_workdir_fails(sandbox, target, after):
    result = sandbox.exec(f"echo pwned > {target}")
    assert result.status == "error"
    assert not os.path.exists(target)
    after(sandbox)


def test_tmp_is_private(sandbox, after):
    name = f"turngym-canary-{uuid.uuid4().hex}"
    assert sandbox.exec(f"echo x > /tmp/{name}").status == "ok"
    assert not os.path.exists(f"/tmp/{name}")
    after(sandbox)


@pytest.mark.parametrize("code", [
    "import socket; socket.getaddrinfo('deb.debian.org', 80)",
    "import socket; socket.create_connection(('1.1.1.1', 80), timeout=3)",
    "import socket; socket.create_connection(('8.8.8.8', 53), timeout=3)",
], ids=["dns-name", "raw-ip", "raw-ip-dns-port"])
def test_no_network(sandbox, code, after):
    result = sandbox.python(code, timeout=10)
    assert result.status == "error", result
    after(sandbox)


def test_host_loopback_service_is_unreachable(sandbox, after):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        result = sandbox.python(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)")
        gateway = sandbox.python(f"import socket; socket.create_connection(('172.17.0.1', {port}), timeout=3)")
    finally:
        server.close()
    assert result.status == "error" and gateway.status == "error"
    after(sandbox)


def test_host_environment_is_not_visible(backend, monkeypatch, after, new_sandbox):
    monkeypatch.setenv("TURNGYM_TEST_SECRET", "s3cr3t-value")
    sb = new_sandbox()
    result = sb.exec("env; cat /proc/1/environ 2>/dev/null; cat /proc/self/environ")
    assert "s3cr3t-value" not in result.stdout and "TURNGYM_TEST_SECRET" not in result.stdout
    after(sb)


def test_host_secrets_are_not_readable(sandbox, tmp_path, after):
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    secret.chmod(0o600)
    for command in (f"cat {secret}", "cat /root/.ssh/*", "cat /etc/shadow"):
        result = sandbox.exec(command)
        assert result.status == "error" and "PRIVATE KEY" not in result.stdout, command
    after(sandbox)


def test_other_sandboxes_files_are_invisible(backend, after, new_sandbox):
    a, b = new_sandbox(), new_sandbox()
    a.put_file("secret.txt", "only-for-a")
    where = getattr(a, "host_workdir", "/work")
    seen = b.exec(f"cat /work/secret.txt {where}/secret.txt; grep -rs only-for-a /work /tmp")
    assert "only-for-a" not in seen.stdout
    assert a.get_file("secret.txt") == b"only-for-a"
    after(a)
    after(b)


@pytest.mark.parametrize("command", [
    "mount -t tmpfs none /mnt",
    "unshare -r id",
    "unshare -m id",
    "chroot / id",
])
def test_privileged_operations_fail(sandbox, command, after):
    result = sandbox.exec(command)
    assert result.status == "error", result
    after(sandbox)


def test_ptrace_of_the_runner_fails(sandbox, after):
    code = (f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"print(libc.ptrace(16, {os.getpid()}, 0, 0))")
    result = sandbox.python(code)
    assert result.stdout.strip() == "-1"
    after(sandbox)


def test_symlink_escapes_on_copy_in_and_out(sandbox, after):
    before = open("/etc/hostname").read()
    sandbox.exec("ln -s /etc/hostname link; ln -s /etc dir; mkdir real")
    with pytest.raises(UnsafePath):
        sandbox.get_file("link")
    with pytest.raises(UnsafePath):
        sandbox.get_file("dir/hostname")
    with pytest.raises(UnsafePath):
        sandbox.put_file("link", "pwned")
    with pytest.raises(UnsafePath):
        sandbox.put_file("dir/pwned", "pwned")
    with pytest.raises(UnsafePath):
        sandbox.get_file("../etc/passwd")
    assert open("/etc/hostname").read() == before
    assert not os.path.exists("/etc/pwned")
    sandbox.put_file("real/ok.txt", b"\x00\xff")
    assert sandbox.get_file("/work/real/ok.txt") == b"\x00\xff"
    after(sandbox)


@pytest.mark.parametrize("cheat", ["exit(0)", "import os; os._exit(0)", "import sys; sys.exit()",
                                   "print('OK')\nraise SystemExit(0)"])
def test_exit_zero_before_assertions_is_not_a_pass(sandbox, cheat, after):
    code, nonce = with_sentinel(f"{cheat}\nassert 1 + 1 == 3")
    result = sandbox.python(code)
    assert result.status == "ok"  # the cheat does exit 0 ...
    assert not passed(result, nonce)  # ... but the grader sees no pass
    honest, nonce2 = with_sentinel("def add(a, b): return a + b\nassert add(1, 2) == 3")
    assert passed(sandbox.python(honest), nonce2)
    after(sandbox)
