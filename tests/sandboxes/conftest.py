"""Fixtures for the sandbox tests: one fresh sandbox per test, for each backend.

Docker tests skip (with the reason) when the Engine is unreachable or the image is not built;
CI builds it with scripts/ci-docker.sh. After the session no turngym container may be left.
"""

from __future__ import annotations

import os
import time

import pytest

from turngym.sandboxes import LocalSandbox, SandboxLimits
from turngym.sandboxes.local import NOBODY_UID, bwrap_available

# Small limits so the hostile cases stay cheap on a 2-core CI machine.
LIMITS = SandboxLimits(timeout_s=10, memory_mb=256, pids=64, output_bytes=64 * 1024,
                       output_kill_bytes=4 * 1024 * 1024, file_size_mb=8, workdir_mb=32)


def docker_skip_reason() -> str | None:
    from turngym.sandboxes.docker import default_image, docker_client
    from turngym.sandboxes.errors import SandboxUnavailable

    try:
        client = docker_client()
    except SandboxUnavailable as err:
        return f"Docker not reachable: {err}"
    if not client.images.list(name=default_image()):
        return f"sandbox image {default_image()} missing: run `turngym sandbox build-image`"
    return None


def _left_containers() -> list[str]:
    """Containers still labelled as sandboxes, after the process-wide shared pools (otherwise
    closed at exit, e.g. the code environment's grading pools) have been closed."""
    from turngym.sandboxes import close_shared_pools
    from turngym.sandboxes.docker import docker_client

    close_shared_pools()

    return [c.name for c in docker_client().containers.list(all=True, filters={"label": "turngym.sandbox"})]


@pytest.fixture(scope="session")
def docker_ready():
    reason = docker_skip_reason()
    if reason:
        pytest.skip(reason)
    yield
    left = _left_containers()
    assert not left, f"sandbox containers left behind: {left}"


@pytest.fixture(scope="session", autouse=True)
def no_containers_left_after_session():
    yield
    if docker_skip_reason() is None:
        left = _left_containers()
        assert not left, f"sandbox containers left behind: {left}"


def make_backend(name: str, limits: SandboxLimits = LIMITS, **options):
    if name == "docker":
        from turngym.sandboxes.docker import DockerSandbox

        return DockerSandbox(limits, **options)
    if not bwrap_available():
        pytest.skip("bubblewrap is not usable here (apt-get install bubblewrap)")
    return LocalSandbox(limits, isolation="bwrap", **options)


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def backend(request) -> str:
    if request.param == "docker":
        request.getfixturevalue("docker_ready")
    return request.param


@pytest.fixture(scope="module")
def shared_docker_sandbox(docker_ready):
    """One container per module, reset between tests: each test is the "next episode"."""
    sb = make_backend("docker")
    yield sb
    sb.close()


@pytest.fixture
def sandbox(backend, request):
    if backend == "docker":
        sb = request.getfixturevalue("shared_docker_sandbox")
        sb.reset()
        yield sb
        return
    sb = make_backend(backend)
    yield sb
    sb.close()


def sandbox_processes(sb) -> list[str]:
    """Processes of the sandbox user still alive (should be none between execs), but for the
    fork servers (the one process a sandbox keeps between execs, by design)."""
    from turngym.sandboxes.local import LocalSandbox as _Local
    from turngym.sandboxes.local import fork_server_pids

    if isinstance(sb, _Local):
        if os.geteuid() != 0:
            return []  # the sandbox runs as our own uid: nothing to tell apart
        servers = fork_server_pids()
        own_ns = None  # with a fork server, the sandbox's processes are those of its pid namespace
        for pid in sb.fork_server_pids:
            try:
                ns = os.readlink(f"/proc/{pid}/ns/pid")
            except OSError:
                continue
            if ns != os.readlink("/proc/self/ns/pid"):
                own_ns = ns
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                            continue  # dead, waiting for the host's init to reap it
                    with open(f"/proc/{entry}/cgroup") as f:
                        if "docker" in f.read():
                            continue  # a Docker sandbox's keeper also runs as nobody
                    if int(entry) in servers:
                        continue
                    if own_ns is not None and os.readlink(f"/proc/{entry}/ns/pid") != own_ns:
                        continue  # another sandbox's (perhaps another test run's) process
                    if os.stat(f"/proc/{entry}").st_uid == NOBODY_UID:
                        with open(f"/proc/{entry}/cmdline", "rb") as f:
                            found.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    continue
        return found
    server = str(sb.fork_server_pid)
    top = sb.api.top(sb.id, ps_args="-o uid,pid,args")
    return [" ".join(p) for p in top.get("Processes") or [] if p[0] == "1000" and p[1] != server]


@pytest.fixture
def limits() -> SandboxLimits:
    return LIMITS


@pytest.fixture
def new_sandbox(backend):
    """A factory of extra sandboxes of the test's backend, closed at the end of the test."""
    made = []

    def factory(limits: SandboxLimits = LIMITS, **options):
        sb = make_backend(backend, limits, **options)
        made.append(sb)
        return sb

    yield factory
    for sb in made:
        sb.close()


@pytest.fixture
def leftover_processes():
    """``leftover_processes(sb)``: the sandbox user's processes alive but the fork server."""
    return sandbox_processes


@pytest.fixture
def after():
    """What every hostile case ends with: nothing left running, the next command works."""

    def check(sb) -> None:
        # killed processes can take a moment to be reaped: a fork bomb's 60-odd survivors on a
        # loaded 2-core machine took longer than 5 s (the assertion that none is left stays)
        deadline = time.monotonic() + 20
        while (left := sandbox_processes(sb)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == []
        via_server = sb.fork_stats["fork_execs"]
        nxt = sb.exec("echo next")
        assert (nxt.status, nxt.stdout) == ("ok", "next\n")
        # the suite runs through the fork server: the next command went through it too
        assert sb.fork_stats["fork_execs"] == via_server + 1 and sb.fork_server_up
        assert sb.fork_stats["fallback_execs"] == 0

    return check
