"""Benchmark of the generated search worlds (issue #19): what a fresh world costs a training step.

    python bench/searchworld.py [--worlds 300]

Measures, over fresh training worlds (never seen by this process, so nothing is cached):
- generating a task (the world, its 16 passages and a 3-hop question);
- building the world's in-memory BM25 index (the first reset over that world);
- a whole oracle episode (reset, search + open per hop, answer) on a world already indexed;
and prints the load average beside them (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _ms(xs: list[float]) -> str:
    a = np.asarray(xs) * 1e3
    return f"p50 {np.percentile(a, 50):.2f} ms, p95 {np.percentile(a, 95):.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=300)
    args = parser.parse_args()
    import turngym
    from turngym.envs.searchworld.env import world_index
    from turngym.envs.searchworld.suites import GENERATORS

    generate = GENERATORS["searchworld-3hop"]
    env = turngym.make("turngym/SearchWorld-3hop-v0")
    world_index(generate(10**9))  # imports (bm25s, the stemmer) outside the timings
    gen, build, episode, steps = [], [], [], 0
    for seed in range(args.worlds):
        t0 = time.perf_counter()
        task = generate(10**6 + seed)
        t1 = time.perf_counter()
        world_index(task)
        t2 = time.perf_counter()
        env.reset(seed=0, options={"task": task})
        done = False
        while not done:
            _, _, term, trunc, info = env.step(env.unwrapped.expert_reply())
            done, steps = term or trunc, steps + 1
        assert info["success"]
        gen.append(t1 - t0), build.append(t2 - t1), episode.append(time.perf_counter() - t2)
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs; {args.worlds} fresh worlds")
    print(f"| generate a task (world + 3-hop question) | {_ms(gen)} |")
    print(f"| build its BM25 index (16 passages, in memory) | {_ms(build)} |")
    print(f"| oracle episode, 7 steps, world indexed | {_ms(episode)} |")
    print(f"| total per fresh world | {sum(gen + build + episode) / args.worlds * 1e3:.2f} ms mean |")


if __name__ == "__main__":
    main()
