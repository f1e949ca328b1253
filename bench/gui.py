"""GUI environments: reset/step latency and episodes/s with concurrent browser contexts.

    python bench/gui.py                     # default sizes
    python bench/gui.py --episodes 24       # more episodes per concurrency level

Measures, with the scripted policy (``turngym.envs.gui.scripted``) on a real headless Chromium:

1. reset and step latency, p50 and p95, for MiniWoB++ (the core tasks) and the web apps;
2. episodes per second with 1 (the baseline), 4 and 8 environments stepping at once from
   threads, every episode in its own fresh browser context of one shared Chromium; the table
   gives the speed-up over one context.

Results go to ``bench/results/gui.md`` (``--out``) as markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

from turngym.envs.gui.apps.tasks import TASK_KINDS, load_webapps
from turngym.envs.gui.miniwob import CORE_TASKS, MiniWoBEnv, load_miniwob_core
from turngym.envs.gui.scripted import solve_reply
from turngym.envs.gui.webapps import WebAppEnv
from turngym.sandboxes.browser import BrowserPool


def episode(env, task_id: str, resets: list[float], steps: list[float]) -> float:
    t0 = time.perf_counter()
    obs, _ = env.reset(options={"task": task_id})
    resets.append(time.perf_counter() - t0)
    total = 0.0
    for _ in range(10):
        reply = solve_reply(env.task, obs)
        t0 = time.perf_counter()
        obs, reward, terminated, truncated, _ = env.step(reply)
        steps.append(time.perf_counter() - t0)
        total += reward
        if terminated or truncated:
            break
    return total


def cpu_seconds() -> float:
    """CPU time of this process and every live descendant (Playwright driver, Chromium), with
    what their exited children used (cutime/cstime): a load-independent cost measure."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(f) for f in fields[11:15]) / tick
    total, stack = 0.0, [os.getpid()]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


def latency(pool: BrowserPool, seeds: int) -> list[tuple[str, list[float], list[float], float]]:
    rows = []
    suites = [
        ("MiniWoB++ core", MiniWoBEnv(suite=load_miniwob_core(), pool=pool), [f"{t}/{10000 + s}" for s in range(seeds) for t in CORE_TASKS]),
        ("web apps", WebAppEnv(suite=load_webapps(), pool=pool), [f"{k}/{1000 + s}" for s in range(seeds) for k in TASK_KINDS]),
    ]
    for name, env, ids in suites:
        resets: list[float] = []
        steps: list[float] = []
        episode(env, ids[0], [], [])  # warm-up: server start, first page
        solved = [episode(env, tid, resets, steps) for tid in ids]
        env.close()
        rows.append((name, resets, steps, float(np.mean(solved))))
    return rows


def throughput(workers: int, ids: list[str], make_env) -> tuple[float, float, float]:
    """(episodes/s, solved fraction, CPU seconds per episode) with ``workers`` threads."""
    envs = [make_env() for _ in range(workers)]
    ids_by_worker = [ids[w::workers] for w in range(workers)]
    solved: list[float] = []

    def work(w: int) -> None:
        for tid in ids_by_worker[w]:
            solved.append(episode(envs[w], tid, [], []))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    for env in envs:
        env.close()
    return len(solved) / elapsed, float(np.mean(solved)), cpu / len(solved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per task for the latency table")
    parser.add_argument("--episodes", type=int, default=24, help="episodes per suite and concurrency level")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gui.md"))
    args = parser.parse_args()

    pool = BrowserPool()
    try:
        lat = latency(pool, args.seeds)
        apps, core = load_webapps(), load_miniwob_core()
        app_ids = [f"{k}/{1000 + i}" for i in range(args.episodes) for k in TASK_KINDS][: args.episodes]
        wob_ids = [f"{t}/{10000 + i}" for i in range(args.episodes) for t in CORE_TASKS][: args.episodes]
        tput = {
            "web apps": {w: throughput(w, app_ids, lambda: WebAppEnv(suite=apps, pool=pool)) for w in (1, 4, 8)},
            "MiniWoB++ core": {w: throughput(w, wob_ids, lambda: MiniWoBEnv(suite=core, pool=pool)) for w in (1, 4, 8)},
        }
    finally:
        pool.close()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# GUI environments (headless Chromium via Playwright)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the end of the run "
        "(the machine is shared, so absolute numbers are noisy); Chromium "
        f"`{pool.config.executable_path}`, one browser, a fresh context per episode, one spare context kept ready.",
        "Scripted policy (`turngym.envs.gui.scripted`); a step may hold several tool calls (e.g. fill a form and submit).",
        "",
        "## Latency",
        "",
        "| suite | episodes | solved | reset p50 (ms) | reset p95 (ms) | step p50 (ms) | step p95 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, resets, steps, solved in lat:
        lines.append(
            f"| {name} | {len(resets)} | {solved:.0%} | {pct(resets, 50):.0f} | {pct(resets, 95):.0f} | "
            f"{pct(steps, 50):.0f} | {pct(steps, 95):.0f} |"
        )
    lines += [
        "",
        f"## Throughput ({args.episodes} episodes per row, scripted policy, one thread per environment)",
        "",
        "| suite | concurrent contexts | episodes/s | vs 1 context | CPU s / episode | solved |",
        "|---|---|---|---|---|---|",
    ]
    for name, by_workers in tput.items():
        base = by_workers[1][0]
        for workers, (eps, solved, cpu) in by_workers.items():
            lines.append(f"| {name} | {workers} | {eps:.2f} | {eps / base:.2f}x | {cpu:.2f} | {solved:.0%} |")
    lines += [
        "",
        "CPU s / episode counts this process, the Playwright driver and every Chromium process; "
        f"{os.cpu_count()} cores at full use would allow about {os.cpu_count()} / that many episodes per second.",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
