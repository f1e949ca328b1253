"""Benchmark of the code environment (turngym/Code-v0) with scripted policies.

    python bench/code.py [--backends docker local] [--episodes 64] [--out bench/results/code.md]

Measures, per sandbox backend, in one run:
- grading latency p50/p95 per task: ``grade()`` of the reference solution of every task of the
  test split on one warm sandbox (reset between gradings), side by side with the baseline of a
  bare ``python3 -c pass`` exec on the same sandbox (the floor any grader pays);
- with ``--compare REF``, only the grading latency, paired: the grader at git ``REF`` and the one
  checked out grade each task in turn on the same warm sandbox (the order alternating), so both
  see the same load (``python bench/code.py --compare 3a5b028^ --rounds 2``);
- with ``--fork-server``, only the grading latency, paired: each task graded in turn on a warm
  sandbox with its fork server and on one without (one ``docker exec`` / bubblewrap start per
  exec, the path before #22), the order alternating (``python bench/code.py --fork-server``);
- episode throughput (episodes/s) of the scripted policies "reference" (submit the reference
  solution) and "buggy" (submit the wrong solution; one submission allowed) at 16 concurrent
  episodes (16 environments in threads, each with its own warm episode sandbox, sharing a
  grading pool of 8), side by side with the same policy run with 1 episode at a time; each
  measured with the environment's ``fork_server=False`` ("no server": one ``docker exec`` /
  bubblewrap start per exec, the path before #22) and ``fork_server=True`` in the same run, on
  the same episodes (seeds), the order alternating from one measurement to the next (and from
  one of ``--rounds`` to the next); sandboxes and grading pool are started before the clock.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from turngym.envs.code.build_data import load_code_suite
from turngym.envs.code.env import CodeEnv, grading_pool
from turngym.envs.code.grader import grade
from turngym.sandboxes import close_shared_pools, make_sandbox


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


def grader_at(ref: str):
    """``grade`` of envs/code/grader.py at git ``ref``, shipping the harness of that ref."""
    def source(name: str) -> str:
        return subprocess.run(["git", "show", f"{ref}:envs/code/{name}"], capture_output=True,
                              text=True, check=True).stdout

    harness_text = source("harness.py")
    harness = types.ModuleType("bench_old_harness")
    exec(compile(harness_text, "harness.py", "exec"), harness.__dict__)
    module = types.ModuleType("bench_old_grader")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source("grader.py"), "grader.py", "exec"), module.__dict__)
    module.harness_source = lambda: harness_text
    if hasattr(module, "encode"):  # the job's wire format is that ref's too
        module.encode = harness.encode
    return module.grade


def compare_latency(backend: str, old_grade, rounds: int) -> dict:
    """Paired per-task latency of ``old_grade`` and this checkout's ``grade`` (see the docstring)."""
    takes_context = "context" in inspect.signature(old_grade).parameters
    tasks = load_code_suite().split("test")
    times: dict[str, list[float]] = {"before": [], "after": [], "floor": []}
    loads = []
    with make_sandbox(backend) as sb:
        sb.python("pass")  # warm
        for r in range(rounds):
            for i, task in enumerate(tasks):
                meta = task.metadata
                old_kwargs = {"context": task.prompt} if takes_context else {}
                runs = [("before", lambda: old_grade(sb, task.answer, meta["tests"], meta["entry_point"], **old_kwargs)),
                        ("after", lambda: grade(sb, task.answer, meta["tests"], meta["entry_point"], context=task.prompt)),
                        ("floor", lambda: sb.python("pass"))]
                for label, run in (runs if (i + r) % 2 else [runs[1], runs[0], runs[2]]):
                    t0 = time.perf_counter()
                    out = run()
                    times[label].append(time.perf_counter() - t0)
                    assert label == "floor" or out.all_passed, (label, task.id)
                    sb.reset()
            loads.append(os.getloadavg()[0])
    ratios = [a / b for a, b in zip(times["after"], times["before"])]
    return {**{f"{k}_p50": statistics.median(v) for k, v in times.items()},
            **{f"{k}_p95": _pct(v, 0.95) for k, v in times.items()},
            "paired_ratio": statistics.median(ratios), "load": (min(loads), max(loads))}


def fork_server_latency(backend: str, rounds: int) -> dict:
    """Paired per-task grading latency with and without the sandbox's fork server."""
    tasks = load_code_suite().split("test")
    times: dict[str, list[float]] = {"before": [], "after": []}
    loads = []
    with make_sandbox(backend, fork_server=False) as old, make_sandbox(backend) as new:
        assert new.fork_server_up
        for sb in (old, new):
            sb.python("pass")  # warm
        for r in range(rounds):
            for i, task in enumerate(tasks):
                meta = task.metadata
                order = [("before", old), ("after", new)] if (i + r) % 2 else [("after", new), ("before", old)]
                for label, sb in order:
                    t0 = time.perf_counter()
                    out = grade(sb, task.answer, meta["tests"], meta["entry_point"], context=task.prompt)
                    times[label].append(time.perf_counter() - t0)
                    assert out.all_passed, (label, task.id)
                    sb.reset()
            loads.append(os.getloadavg()[0])
        assert new.fork_stats["fallback_execs"] == 0, new.fork_stats
    ratios = [a / b for a, b in zip(times["after"], times["before"])]
    return {**{f"{k}_p50": statistics.median(v) for k, v in times.items()},
            **{f"{k}_p95": _pct(v, 0.95) for k, v in times.items()},
            "paired_ratio": statistics.median(ratios), "load": (min(loads), max(loads))}


def _policy_reply(env: CodeEnv, policy: str) -> str:
    if policy == "reference":
        return env.expert_reply()
    code = env.task.metadata["wrong_solution"]
    return f'<tool_call>{{"name": "submit", "arguments": {{"code": {__import__("json").dumps(code)}}}}}</tool_call>'


def _check_exec_path(envs: list[CodeEnv], fork_server: bool) -> None:
    """The episode sandboxes are on the path measured: a server up and never fallen back, or
    none ever started (the policies only submit, so these sandboxes only reset; the grading
    pool takes the same option, tests/code/test_code_env.py checks it)."""
    stats = [(env.sandbox.fork_server_up, env.sandbox.fork_stats) for env in envs]
    if fork_server:
        assert all(up and not s["fallback_execs"] for up, s in stats), stats
    else:
        assert not any(up or s["server_starts"] for up, s in stats), stats


def throughput(backend: str, policy: str, concurrency: int, episodes: int, fork_server: bool = True) -> dict:
    envs = [CodeEnv(backend=backend, max_submissions=1, grading_pool_size=8, fork_server=fork_server)
            for _ in range(concurrency)]
    for i, env in enumerate(envs):  # start every sandbox before the clock starts
        env.reset(seed=i)
    # the grading pool too: otherwise the first submit starts its 8 sandboxes on the clock
    grading_pool(backend, envs[0].limits, 8, fork_server=fork_server)
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
    _check_exec_path(envs, fork_server)
    for env in envs:
        env.close()
    # a fresh grading pool for the next measurement: no sandbox carries uses (max_uses
    # replacements) or idle containers from one measurement into another
    close_shared_pools()
    return {"episodes": episodes, "seconds": elapsed, "eps": episodes / elapsed,
            "mean_reward": sum(rewards) / len(rewards)}


def paired_throughput(backend: str, policy: str, concurrency: int, episodes: int, rounds: int,
                      first: int) -> dict:
    """Throughput without ("before") and with ("after") the fork server on the same episodes;
    which goes first alternates with ``first`` + the round, so neither always runs warmer."""
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    loads = []
    for r in range(rounds):
        order = [("before", False), ("after", True)]
        for label, fork_server in (order if (first + r) % 2 == 0 else order[::-1]):
            runs[label].append(throughput(backend, policy, concurrency, episodes, fork_server))
        loads.append(os.getloadavg()[0])
    out = {label: sum(x["episodes"] for x in rs) / sum(x["seconds"] for x in rs) for label, rs in runs.items()}
    rewards = {label: statistics.mean(x["mean_reward"] for x in rs) for label, rs in runs.items()}
    assert rewards["before"] == rewards["after"], rewards  # same episodes, same grades
    return {**out, "ratio": out["after"] / out["before"], "mean_reward": rewards["after"],
            "load": (min(loads), max(loads))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["docker", "local"])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", default="bench/results/code.md")
    parser.add_argument("--compare", metavar="REF", help="paired grading latency against the grader at git REF")
    parser.add_argument("--rounds", type=int, default=1,
                        help="passes over the tasks with --compare/--fork-server; runs of each throughput pair")
    parser.add_argument("--fork-server", action="store_true",
                        help="paired grading latency with and without the sandbox fork server")
    args = parser.parse_args(argv)
    if args.fork_server:
        print("| backend | rounds | no server p50 / p95 | fork server p50 / p95 | after / before "
              "(p50; median of paired ratios) | load avg (1 min) |\n|---|---|---|---|---|---|")
        for backend in args.backends:
            c = fork_server_latency(backend, args.rounds)
            print(f"| {backend} | {args.rounds} | {c['before_p50'] * 1000:.0f} / {c['before_p95'] * 1000:.0f} ms | "
                  f"{c['after_p50'] * 1000:.0f} / {c['after_p95'] * 1000:.0f} ms | "
                  f"{c['after_p50'] / c['before_p50']:.2f}x; {c['paired_ratio']:.2f}x | "
                  f"{c['load'][0]:.1f}-{c['load'][1]:.1f} |", flush=True)
        return 0
    if args.compare:
        old_grade = grader_at(args.compare)
        print("| backend | rounds | before p50 / p95 | after p50 / p95 | floor p50 | after / before "
              "(p50; median of paired ratios) | load avg (1 min) |\n|---|---|---|---|---|---|---|")
        for backend in args.backends:
            c = compare_latency(backend, old_grade, args.rounds)
            print(f"| {backend} | {args.rounds} | {c['before_p50'] * 1000:.0f} / {c['before_p95'] * 1000:.0f} ms | "
                  f"{c['after_p50'] * 1000:.0f} / {c['after_p95'] * 1000:.0f} ms | {c['floor_p50'] * 1000:.0f} ms | "
                  f"{c['after_p50'] / c['before_p50']:.2f}x; {c['paired_ratio']:.2f}x | "
                  f"{c['load'][0]:.1f}-{c['load'][1]:.1f} |", flush=True)
        return 0
    lines = ["# Code environment (turngym/Code-v0)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared with other work "
             f"(timings are noisy; load average {os.getloadavg()[0]:.1f} at the start). "
             f"Command: `python bench/code.py {' '.join(argv if argv is not None else sys.argv[1:])}`.", ""]
    lines += ["## Grading latency per task (reference solutions of the 34 test tasks)", "",
              "| backend | grade p50 | grade p95 | baseline: bare `python3 -c pass` exec p50 | ratio |",
              "|---|---|---|---|---|"]
    for backend in args.backends:
        g = grading_latency(backend)
        lines.append(f"| {backend} | {g['grade_p50'] * 1000:.0f} ms | {g['grade_p95'] * 1000:.0f} ms | "
                     f"{g['floor_p50'] * 1000:.0f} ms | {g['grade_p50'] / g['floor_p50']:.1f}x |")
        print(lines[-1], flush=True)
    seq_episodes = max(args.episodes // 4, 8)
    lines += ["", f"## Episode throughput ({args.episodes} episodes concurrent, {seq_episodes} one at a time, "
              f"one submission each; {args.rounds} round(s)): no server / fork server", "",
              f"| backend | policy | mean reward | 1 at a time: no server / fork server | fork / no server | "
              f"{args.concurrency} concurrent: no server / fork server | fork / no server | "
              f"{args.concurrency} vs 1 (fork server) | load avg (1 min) |",
              "|---|---|---|---|---|---|---|---|---|"]
    pair = 0  # one step per policy: 1-at-a-time and concurrent start with opposite variants
    for backend in args.backends:
        for policy in ("reference", "buggy"):
            seq = paired_throughput(backend, policy, 1, seq_episodes, args.rounds, pair)
            par = paired_throughput(backend, policy, args.concurrency, args.episodes, args.rounds, pair + 1)
            pair += 1
            load = (min(seq["load"][0], par["load"][0]), max(seq["load"][1], par["load"][1]))
            lines.append(f"| {backend} | {policy} | {par['mean_reward']:.2f} | "
                         f"{seq['before']:.1f} / {seq['after']:.1f} eps/s | {seq['ratio']:.2f}x | "
                         f"{par['before']:.1f} / {par['after']:.1f} eps/s | {par['ratio']:.2f}x | "
                         f"{par['after'] / seq['after']:.1f}x | {load[0]:.1f}-{load[1]:.1f} |")
            print(lines[-1], flush=True)
    lines += ["", "Grading is one exec: the hidden tests run in one process, the solution in another "
              "(one forked copy per test) and only plain data crosses (see envs/code/grader.py); an "
              "episode here is reset + one submit (grading in a pooled, reset sandbox). Grading latency above "
              "is through the fork server; `--fork-server` measures it paired with and without."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
