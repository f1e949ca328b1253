"""Episodes/s of the grid puzzle with environments in 1, 2 and 4 Ray actors vs in process.

The same 256 Sokoban episodes (32 tasks x 8 samples, at most 20 turns) with the same scripted
random policy (a move drawn from each turn's sampling seed, so every side takes the same turns)
run through the same RolloutEngine over:

- ``thread``: the in-process ThreadEnvPool (``concurrency=0``: steps in the engine's thread,
  its fastest setting for a pure-Python grid puzzle);
- ``ray xN``: RayEnvPool with N actors (each steps its share in its own process).

Actors are started and warmed up before timing (a pool lives for a whole training run); the
timed part is ``engine.run``. Text-mode prompts (chat messages) keep the policy's cost small,
so the numbers show the environment side. Usage:
    python bench/ray_rollout.py [--episodes 256] [--max-turns 20] [--repeats 3] [--actors 1 2 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

import turngym
from turngym.agents.env_pool import ThreadEnvPool
from turngym.agents.ray_pool import RayEnvPool
from turngym.agents.rollout import RolloutConfig, RolloutEngine
from turngym.agents.scripted import ScriptedPolicy

ENV_ID = "turngym/Sokoban-v0"
MOVES = ["<action>up</action>", "<action>down</action>", "<action>left</action>", "<action>right</action>"]


def reply(_text: str, seed: int | None) -> str:
    return MOVES[random.Random(seed).randrange(4)]


def timed_runs(pool, tasks, cfg, repeats) -> tuple[list[float], int]:
    engine = RolloutEngine(ScriptedPolicy(reply), pool, None, cfg)
    engine.run(tasks[:2], run_index=0)  # warm-up: imports and first environments in every process
    times, turns = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        trajs = engine.run(tasks, run_index=0)
        times.append(time.perf_counter() - t0)
        assert all(t.status != "error" for t in trajs)
        turns = sum(len(t.turns) for t in trajs)
    return times, turns


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=256)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-turns", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    import ray

    probe = turngym.make(ENV_ID)
    tasks = [t.id for t in probe.unwrapped.suite.split("train")][: args.episodes // args.group]
    probe.close()
    cfg = RolloutConfig(group_size=args.group, max_turns=args.max_turns, progress=False, concurrency=0)
    episodes = len(tasks) * args.group
    rows = []
    with ThreadEnvPool(lambda: turngym.make(ENV_ID), concurrency=0) as pool:
        times, turns = timed_runs(pool, tasks, cfg, args.repeats)
    rows.append(("thread (in process)", times, turns))
    ray.init(num_cpus=max(args.actors), include_dashboard=False, log_to_driver=False)
    try:
        for n in args.actors:
            pool = RayEnvPool(ENV_ID, num_actors=n, concurrency=0, num_cpus_per_actor=1)
            try:
                times, turns_n = timed_runs(pool, tasks, cfg, args.repeats)
            finally:
                pool.close()
            assert turns_n == turns, "every side must take the same turns"
            rows.append((f"ray x{n} actors", times, turns_n))
    finally:
        ray.shutdown()
    base = statistics.median(rows[0][1])
    print(f"# Ray environment actors vs in-process (Sokoban, {episodes} episodes, {turns} turns)\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, ray {ray.__version__}; median of {args.repeats} runs.\n")
    print("| pool | s / run (median) | episodes/s | turns/s | vs thread |")
    print("|---|---:|---:|---:|---:|")
    for name, times, n_turns in rows:
        med = statistics.median(times)
        print(f"| {name} | {med:.3f} | {episodes / med:.0f} | {n_turns / med:.0f} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
