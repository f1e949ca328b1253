"""Synchronous vs asynchronous rollouts (``run.async_rollouts``): training steps per second.

The same config, the same number of steps, no evaluation; the two modes interleaved over
``--repeats`` so machine noise hits both. With async rollouts step k+1's episodes are generated
(by a copy of the model, in a thread) while step k's update runs; the gain is bounded by the
smaller of the two phases and needs a free core (or a GPU) for the overlap.

    python bench/async_rollout.py --steps 8 --repeats 3 --out bench/results/async.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from turngym.config import load_config
from turngym.trainers.config import TrainConfig
from turngym.trainers.trainer import Trainer


def run_steps(config: str, overrides: list[str], steps: int, async_rollouts: bool) -> tuple[float, float]:
    """(wall seconds for ``steps`` training steps, mean seconds the trainer waited for rollouts)."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(TrainConfig, config, overrides + [
            f"run.steps={steps + 1}", f"run.out_dir={out}", f"run.async_rollouts={str(async_rollouts).lower()}",
            "run.eval_every=0", "run.checkpoint_every=0", "run.tensorboard=false", "sft.enabled=false",
        ])
        trainer = Trainer(cfg)
        trainer.train_step()  # warm-up (imports, first allocations), not timed
        waits = []
        start = time.perf_counter()
        for _ in range(steps):
            waits.append(trainer.train_step()["time/rollout_s"])
        wall = time.perf_counter() - start
        trainer.sampler.close()  # the prefetch thread
        return wall, statistics.mean(waits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="examples/main.yaml")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="config overrides")
    ap.add_argument("--out", default="bench/results/async.md")
    args = ap.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.repeats):
        for mode in (False, True):
            results[mode].append(run_steps(args.config, args.set, args.steps, mode))
            print(("async" if mode else "sync "), f"{results[mode][-1][0]:.1f} s")
    med = {m: statistics.median(w for w, _ in r) for m, r in results.items()}
    wait = {m: statistics.median(x for _, x in r) for m, r in results.items()}
    lines = [
        "## Asynchronous rollouts (#11)",
        "",
        f"`python bench/async_rollout.py --steps {args.steps} --repeats {args.repeats}` on `{args.config}` "
        f"({' '.join(args.set) or 'no overrides'}); {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f} at the end. Median of {args.repeats} interleaved repeats.",
        "",
        "| mode | s per step | s waiting for rollouts per step | steps/s vs sync |",
        "|---|---|---|---|",
    ]
    for mode, name in ((False, "synchronous"), (True, "async, max_staleness 1")):
        lines.append(f"| {name} | {med[mode] / args.steps:.2f} | {wait[mode]:.2f} | {med[False] / med[mode]:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
