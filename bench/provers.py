"""Prover throughput: Coq suite proof checks per second at pool sizes 1 and 2, side by side
(ratio = pool 2 / pool 1), and Lean REPL start-up vs reuse where Lean is installed.

    python bench/provers.py [--rounds 1] [--lean-project DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from turngym.envs.prover.suites import load_coq_core, load_lean4_core
from turngym.sandboxes.provers import CoqProver, LeanConfig, LeanProver


def coq_rate(workers: int, rounds: int) -> tuple[float, int]:
    prover = CoqProver()
    items = [(t.metadata["statement"], t.answer, t.metadata["header"]) for t in load_coq_core()] * rounds
    start = time.perf_counter()
    results = prover.check_many(items, workers=workers)
    elapsed = time.perf_counter() - start
    assert all(r.ok for r in results), "a reference proof failed"
    return len(items) / elapsed, len(items)


def lean_startup_vs_reuse(project: str) -> str:
    task = next(iter(load_lean4_core()))
    args = (task.metadata["statement"], task.answer, task.metadata["header"])
    cold = []
    for _ in range(3):
        prover = LeanProver(LeanConfig(project_dir=project, max_uses=1))
        start = time.perf_counter()
        prover.check(*args)
        cold.append(time.perf_counter() - start)
        prover.close()
    prover = LeanProver(LeanConfig(project_dir=project))
    prover.check(*args)
    start = time.perf_counter()
    for _ in range(10):
        prover.check(*args)
    warm = (time.perf_counter() - start) / 10
    prover.close()
    cold_s = sum(cold) / len(cold)
    return f"| Lean check, fresh REPL | {cold_s:.3f} s |\n| Lean check, reused REPL | {warm:.3f} s |\n| ratio fresh / reused | {cold_s / warm:.1f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="passes over the Coq suite per measurement")
    parser.add_argument("--lean-project", default=os.environ.get("TURNGYM_LEAN_PROJECT"))
    args = parser.parse_args()
    print("| measurement | value |\n|---|---|")
    one, n = coq_rate(1, args.rounds)
    two, _ = coq_rate(2, args.rounds)
    print(f"| Coq checks/s, pool 1 ({n} checks) | {one:.2f} |")
    print(f"| Coq checks/s, pool 2 ({n} checks) | {two:.2f} |")
    print(f"| ratio pool 2 / pool 1 | {two / one:.2f}x |")
    if shutil.which("lake") and args.lean_project:
        print(lean_startup_vs_reuse(args.lean_project))
    else:
        print("| Lean start-up vs reuse | skipped: no Lean here (`lake` on PATH and --lean-project needed) |")


if __name__ == "__main__":
    main()
