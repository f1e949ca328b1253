"""Sandbox latency and throughput, side by side in one run (issue 3, "Performance").

Measures p50/p95 over N execs of `print(1)` for: bare /usr/bin/python3, LocalSandbox
(bubblewrap) through its fork server and without it (one bwrap per exec), DockerSandbox warm
exec through its fork server and without it (one `docker exec` per exec), a bare `docker exec`,
a cold `docker run`, and pool checkout + reset; then throughput with 16 concurrent episodes on a
pool of 16 containers (fork servers on). The load average is recorded with the table.
Writes a markdown table to bench/results/sandboxes.md (or --out).

    python bench/sandbox.py [--n 100] [--cold-n 20] [--out bench/results/sandboxes.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from turngym.sandboxes import LocalSandbox, SandboxLimits, SandboxPool
from turngym.sandboxes.docker import DockerSandbox, default_image

CODE = "print(1)"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def timed(fn, n: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def check(result) -> None:
    assert result.status == "ok" and result.stdout == "1\n", result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--cold-n", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sandboxes.md"))
    args = ap.parse_args()
    limits = SandboxLimits()
    rows: dict[str, list[float]] = {}

    rows["bare /usr/bin/python3 -c 'print(1)'"] = timed(
        lambda: subprocess.run(["/usr/bin/python3", "-c", CODE], capture_output=True, check=True), args.n)
    loads = [os.getloadavg()[0]]
    with LocalSandbox(limits) as local, LocalSandbox(limits, fork_server=False) as local_old:
        assert local.fork_server_up, local.fork.last_error
        rows[f"LocalSandbox ({local.isolation}) python, fork server"] = timed(lambda: check(local.python(CODE)), args.n)
        rows[f"LocalSandbox ({local_old.isolation}) python, no server (bwrap per exec)"] = timed(
            lambda: check(local_old.python(CODE)), args.n)
        rows["LocalSandbox reset (synchronous, fork server renewed)"] = timed(local.reset, args.n)
    loads.append(os.getloadavg()[0])
    with DockerSandbox(limits) as sb, DockerSandbox(limits, fork_server=False) as old:
        assert sb.fork_server_up, sb.fork.last_error
        rows["DockerSandbox warm exec python, fork server"] = timed(lambda: check(sb.python(CODE)), args.n)
        rows["DockerSandbox warm exec python, no server (docker exec per exec)"] = timed(
            lambda: check(old.python(CODE)), args.n)
        rows["bare `docker exec` python (CLI)"] = timed(lambda: subprocess.run(
            ["docker", "exec", "-u", "1000", sb.id, "/usr/bin/python3", "-c", CODE],
            capture_output=True, check=True), args.n)
        rows["DockerSandbox warm exec `true`, fork server"] = timed(lambda: sb.exec(["true"]), args.n)
        rows["DockerSandbox reset (synchronous, fork server renewed)"] = timed(sb.reset, args.n)
        rows["DockerSandbox reset (synchronous), no server"] = timed(old.reset, args.n)
        assert sb.fork_stats["fallback_execs"] == 0, sb.fork_stats
    loads.append(os.getloadavg()[0])
    rows["cold `docker run --rm` python (CLI)"] = timed(lambda: subprocess.run(
        ["docker", "run", "--rm", "--network", "none", default_image(), "/usr/bin/python3", "-c", CODE],
        capture_output=True, check=True), args.cold_n)

    with SandboxPool(lambda: DockerSandbox(limits), size=4, max_uses=1000) as pool:
        lat = []
        for _ in range(args.n):  # each episode: checkout, one exec, checkin (reset in background)
            t = time.perf_counter()
            sb = pool.checkout()
            lat.append(time.perf_counter() - t)
            check(sb.python(CODE))
            pool.checkin(sb)
        rows["pool checkout (reset in background, 4 warm)"] = lat

    with SandboxPool(lambda: DockerSandbox(limits), size=args.concurrency, max_uses=1000) as pool:
        episodes = args.concurrency * 8

        def episode(_i: int) -> float:
            t = time.perf_counter()
            with pool.sandbox() as sb:
                for _ in range(3):
                    check(sb.python(CODE))
            return time.perf_counter() - t

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as ex:
            ep_lat = list(ex.map(episode, range(episodes)))
        wall = time.perf_counter() - t0
    rows[f"episode of 3 execs, {args.concurrency} concurrent"] = ep_lat
    loads.append(os.getloadavg()[0])

    p50 = {k: statistics.median(v) * 1000 for k, v in rows.items()}
    lines = ["# Sandbox benchmark (bench/sandbox.py)", "",
             f"One run, {args.n} execs per row (cold docker run: {args.cold_n}); 2-core shared machine,"
             " Docker 20.10 (runc, overlay2, cgroup v1), bubblewrap 0.8. Times in ms."
             f" Load average (1 min) during the run: {min(loads):.1f}-{max(loads):.1f}.", "",
             "| what | n | p50 | p95 |", "|---|---|---|---|"]
    for k, v in rows.items():
        lines.append(f"| {k} | {len(v)} | {p50[k]:.1f} | {pct(v, 0.95) * 1000:.1f} |")
    bare_py = p50["bare /usr/bin/python3 -c 'print(1)'"]
    local_key = next(k for k in rows if k.startswith("LocalSandbox") and k.endswith("fork server"))
    local_old = next(k for k in rows if k.startswith("LocalSandbox") and "no server" in k)
    warm = p50["DockerSandbox warm exec python, fork server"]
    warm_old = p50["DockerSandbox warm exec python, no server (docker exec per exec)"]
    bare_exec = p50["bare `docker exec` python (CLI)"]
    lines += ["", "## Ratios and targets", "",
              f"- LocalSandbox fork server p50 / bare python p50 = {p50[local_key] / bare_py:.2f} (target <= 1.2);"
              f" without the server {p50[local_old] / bare_py:.2f}",
              f"- Docker warm exec p50 = {warm:.1f} ms (target <= 10) ; / bare `docker exec` p50 = "
              f"{warm / bare_exec:.3f} (target <= 0.15); without the server {warm_old:.1f} ms "
              f"({warm_old / bare_exec:.2f}x bare `docker exec`; fork server speed-up {warm_old / warm:.1f}x)",
              f"- pool checkout p50 = {p50['pool checkout (reset in background, 4 warm)']:.2f} ms, synchronous reset p50 = "
              f"{p50['DockerSandbox reset (synchronous, fork server renewed)']:.1f} ms (target checkout+reset <= 50)",
              f"- cold `docker run` p50 / warm exec p50 = {p50['cold `docker run --rm` python (CLI)'] / warm:.1f}",
              f"- throughput: {episodes} episodes x 3 execs with {args.concurrency} concurrent on a pool of "
              f"{args.concurrency}: {episodes * 3 / wall:.1f} execs/s ({episodes / wall:.1f} episodes/s, wall {wall:.1f} s)"]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
