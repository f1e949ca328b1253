"""The protocol's pure parts, the pool, the reaper and the CLI errors."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from turngym.sandboxes import (
    ExecResult,
    LocalSandbox,
    PoolExhausted,
    SandboxClosed,
    SandboxLimits,
    SandboxPool,
    SandboxUnavailable,
    UnsafePath,
    make_sandbox,
)
from turngym.sandboxes.base import CappedBuffer, classify_exit, decode_output, workdir_relative


@pytest.mark.parametrize("code,kw,status", [
    (0, {}, "ok"), (3, {}, "error"), (137, {}, "killed"), (139, {}, "killed"),
    (None, {"timed_out": True}, "timeout"), (137, {"oom": True}, "oom"),
    (0, {"killed": True}, "killed"), (137, {"timed_out": True, "oom": True}, "timeout"),
])
def test_classify_exit(code, kw, status):
    flags = {"timed_out": False, "oom": False, "killed": False, **kw}
    assert classify_exit(code, **flags) == status


def test_capped_buffer_and_decoding():
    buf = CappedBuffer(5)
    buf.write(b"abc")
    buf.write(b"defgh")
    assert (buf.getvalue(), buf.total, buf.truncated) == (b"abcde", 8, True)
    assert decode_output(b"a\xffb") == "a\ufffdb"


@pytest.mark.parametrize("path,rel", [("a.py", "a.py"), ("/work/x/y", "x/y"), ("x/../y", "y")])
def test_workdir_relative_accepts(path, rel):
    assert workdir_relative(path) == rel


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "/work", "/workx/a", "a/../../b", "", "a\0b"])
def test_workdir_relative_refuses(path):
    with pytest.raises(UnsafePath):
        workdir_relative(path)


def test_async_and_context_manager_and_closed():
    async def main() -> ExecResult:
        async with LocalSandbox() as sb:
            results = await asyncio.gather(sb.apython("print(6 * 7)"), sb.aexec("echo hi"))
            await sb.aput_file("f.txt", "data")
            assert await sb.aget_file("f.txt") == b"data"
            return results[0]

    assert asyncio.run(main()).stdout == "42\n"
    sb = LocalSandbox()
    sb.close()
    with pytest.raises(SandboxClosed):
        sb.exec("true")


def test_files_argument_and_reset_wipes_workdir():
    with LocalSandbox() as sb:
        r = sb.exec("cat in/data.txt", files={"in/data.txt": "payload"})
        assert (r.status, r.stdout) == ("ok", "payload")
        sb.reset()
        assert sb.exec("ls -A").stdout == ""


def test_make_sandbox_unknown_backend_says_did_you_mean():
    with pytest.raises(SandboxUnavailable, match="did you mean 'local'"):
        make_sandbox("locl")
    with make_sandbox("local", limits={"timeout_s": 3}) as sb:
        assert sb.limits.timeout_s == 3


def test_pool_backpressure_reset_and_recycle():
    made = []

    def factory():
        made.append(LocalSandbox())
        return made[-1]

    with SandboxPool(factory, size=2, max_uses=2, acquire_timeout=0.2) as pool:
        a, b = pool.checkout(), pool.checkout()
        with pytest.raises(PoolExhausted):
            pool.checkout(timeout=0)
        with pytest.raises(PoolExhausted):
            pool.checkout()  # waits acquire_timeout, then gives up
        a.exec("echo x > leftover")
        pool.checkin(a)
        c = pool.checkout(timeout=5)  # comes back once its reset is done
        assert c is a and c.exec("ls -A").stdout == ""
        pool.checkin(c)
        pool.checkin(b)
        d = pool.checkout(timeout=5)
        pool.checkin(d)
        for _ in range(4):  # a reaches max_uses and is replaced by a fresh sandbox
            pool.checkin(pool.checkout(timeout=5))
        assert len(made) > 2 and a.closed
    assert all(sb.closed for sb in made)


SPAWN = textwrap.dedent("""
    import os, sys, time
    from turngym.sandboxes import make_sandbox
    sb = make_sandbox("docker")
    print(sb.id, flush=True)
    time.sleep(60)
""")


def _spawn_owner():
    proc = subprocess.Popen([sys.executable, "-c", SPAWN], stdout=subprocess.PIPE, text=True)
    cid = proc.stdout.readline().strip()
    assert cid, "the child did not start a sandbox"
    return proc, cid


def _exists(client, cid) -> bool:
    return bool(client.containers.list(all=True, filters={"id": cid}))


@pytest.mark.docker
def test_sigterm_removes_the_runs_containers(docker_ready):
    from turngym.sandboxes.docker import docker_client

    proc, cid = _spawn_owner()
    assert _exists(docker_client(), cid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    assert not _exists(docker_client(), cid)


@pytest.mark.docker
def test_reaper_removes_a_crashed_runs_containers(docker_ready):
    from turngym.sandboxes.docker import docker_client
    from turngym.sandboxes.reaper import owner_alive, reap_stale

    client = docker_client()
    proc, cid = _spawn_owner()
    labels = client.containers.get(cid).labels
    assert owner_alive(labels)
    reap_stale(client)
    assert _exists(client, cid)  # a live run's containers are left alone
    proc.kill()  # SIGKILL: no handler runs, the container is left behind
    proc.wait(timeout=30)
    assert _exists(client, cid) and not owner_alive(labels)
    assert reap_stale(client) >= 1
    assert not _exists(client, cid)


@pytest.mark.docker
def test_docker_pool_checkout_reset_recycle(docker_ready):
    from turngym.sandboxes.docker import DockerSandbox

    limits = SandboxLimits(memory_mb=256, pids=64)
    with SandboxPool(lambda: DockerSandbox(limits), size=2, max_uses=2) as pool:
        with pool.sandbox() as sb:
            first = sb.id
            sb.exec("echo x > /work/f; sleep 100 &")
        with pool.sandbox(timeout=30) as sb2:
            assert sb2.exec("ls -A /work").stdout == ""
        ids = set()
        for _ in range(4):
            with pool.sandbox(timeout=30) as sb3:
                ids.add(sb3.id)
        assert len(ids | {first}) > 2  # worn-out containers were replaced


def test_cli_errors_exit_2(tmp_path):
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}
    out = subprocess.run([sys.executable, "-m", "turngym.cli", "sandbox", "prune"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "start it" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "turngym.cli", "sandbox", "build-image", "--profile", "lean"],
                         env={**env, "TURNGYM_LEAN_TOOLCHAIN": str(tmp_path)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "TURNGYM_LEAN_TOOLCHAIN" in out.stderr


def test_image_tag_is_content_addressed(monkeypatch):
    from turngym.sandboxes.image import ImageProfile, image_tag

    a = image_tag(ImageProfile("p", ("python3",)))
    assert a == image_tag(ImageProfile("p", ("python3",)))
    assert a != image_tag(ImageProfile("p", ("python3", "git")))
    assert a.startswith("turngym-sandbox:p-")


@pytest.mark.docker
def test_missing_image_says_how_to_build(docker_ready):
    from turngym.sandboxes.docker import DockerSandbox
    from turngym.sandboxes.errors import ImageMissing

    with pytest.raises(ImageMissing, match="turngym sandbox build-image"):
        DockerSandbox(image="turngym-sandbox:does-not-exist")


def test_elapsed_is_measured():
    with LocalSandbox() as sb:
        t = time.monotonic()
        r = sb.exec("sleep 0.2")
        assert r.status == "ok" and 0.15 < r.duration_s <= time.monotonic() - t + 0.01
