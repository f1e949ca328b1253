"""Benchmark of the code environment (turngym/Code-v0) with scripted policies.

    python bench/code.py [--backends docker local] [--episodes 64] [--out bench/results/code.md]

Measures, per sandbox backend, in one run:
- grading latency p50/p95 per task: ``grade()`` of the reference solution of every task of the
  test split on one warm sandbox (reset between gradings), side by side with the baseline of a
  bare ``python3 -c pass`` exec on the same sandbox (the floor any grader pays);
- episode throughput (episodes/s) of the scripted policies "reference" (submit the reference
  solution) and "buggy" (submit the wrong solution; one submission allowed) at 16 concurrent
  episodes (16 environments in threads, each with its own warm episode sandbox, sharing a
  grading pool of 8), side by side with the same policy run with 1 episode at a time.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from turngym.envs.code.build_data import load_code_suite
from turngym.envs.code.env import CodeEnv
from turngym.envs.code.grader import grade
from turngym.sandboxes import make_sandbox


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def grading_latency(backend: str) -> dict:
    tasks = load_code_suite().split("test")
    grades, floor = [], []
    with make_sandbox(backend) as sb:
        sb.python("pass")  # warm
        for task in tasks:
            t0 = time.perf_counter()
            result = grade(sb, task.answer, task.metadata["tests"], task.metadata["entry_point"],
                           context=task.prompt)
            grades.append(time.perf_counter() - t0)
            assert result.all_passed, task.id
            sb.reset()
            t0 = time.perf_counter()
            sb.python("pass")
            floor.append(time.perf_counter() - t0)
    return {"tasks": len(tasks), "grade_p50": statistics.median(grades), "grade_p95": _pct(grades, 0.95),
            "floor_p50": statistics.median(floor)}


def _policy_reply(env: CodeEnv, policy: str) -> str:
    if policy == "reference":
        return env.expert_reply()
    code = env.task.metadata["wrong_solution"]
    return f'<tool_call>{{"name": "submit", "arguments": {{"code": {__import__("json").dumps(code)}}}}}</tool_call>'


def throughput(backend: str, policy: str, concurrency: int, episodes: int) -> dict:
    envs = [CodeEnv(backend=backend, max_submissions=1, grading_pool_size=8) for _ in range(concurrency)]
    for i, env in enumerate(envs):  # start every sandbox before the clock starts
        env.reset(seed=i)
    rewards: list[float] = []

    def worker(i: int) -> None:
        env = envs[i]
        for n in range(i, episodes, concurrency):
            env.reset(seed=n)
            done = False
            while not done:
                _, reward, term, trunc, _ = env.step(_policy_reply(env, policy))
                done = term or trunc
            rewards.append(reward)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    elapsed = time.perf_counter() - t0
    for env in envs:
        env.close()
    return {"episodes": episodes, "seconds": elapsed, "eps": episodes / elapsed,
            "mean_reward": sum(rewards) / len(rewards)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["docker", "local"])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", default="bench/results/code.md")
    args = parser.parse_args(argv)
    lines = ["# Code environment (turngym/Code-v0)", "",
             f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores, shared with other work "
             "(timings are noisy). Command: `python bench/code.py`.", ""]
    lines += ["## Grading latency per task (reference solutions of the 34 test tasks)", "",
              "| backend | grade p50 | grade p95 | baseline: bare `python3 -c pass` exec p50 | ratio |",
              "|---|---|---|---|---|"]
    for backend in args.backends:
        g = grading_latency(backend)
        lines.append(f"| {backend} | {g['grade_p50'] * 1000:.0f} ms | {g['grade_p95'] * 1000:.0f} ms | "
                     f"{g['floor_p50'] * 1000:.0f} ms | {g['grade_p50'] / g['floor_p50']:.1f}x |")
        print(lines[-1], flush=True)
    lines += ["", f"## Episode throughput ({args.episodes} episodes, one submission each)", "",
              f"| backend | policy | mean reward | 1 at a time | {args.concurrency} concurrent | speed-up |",
              "|---|---|---|---|---|---|"]
    for backend in args.backends:
        for policy in ("reference", "buggy"):
            seq = throughput(backend, policy, 1, max(args.episodes // 4, 8))
            par = throughput(backend, policy, args.concurrency, args.episodes)
            lines.append(f"| {backend} | {policy} | {par['mean_reward']:.2f} | {seq['eps']:.1f} eps/s | "
                         f"{par['eps']:.1f} eps/s | {par['eps'] / seq['eps']:.1f}x |")
            print(lines[-1], flush=True)
    lines += ["", "Grading is one exec: the hidden tests run in one process, the solution in another "
              "(one forked copy per test) and only plain data crosses (see envs/code/grader.py); an "
              "episode here is reset + one submit (grading in a pooled, reset sandbox)."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
