"""The main job over several seeds, with the control a skeptic asks for.

For each seed: ``turngym train examples/main.yaml --set run.seed=S`` in a fresh process (timed
wall clock), then the **control**: the same seed's warm start alone, given the whole time the
main job spent training (its warm start + its RL steps, converted to warm-start steps at the
rate this run's warm start achieved, its validation checks left out), evaluated on the same held-out
maps; the control never stops early (``sft.stop_at_success=null``). Held-out success
is printed with its 95% CI; the table goes to ``OUT/main_job.md`` and ``OUT/main_job.json``.

    python bench/main_job.py --seeds 0 1 2 --out bench/results/main_job

Finished runs are kept (their ``summary.json``), so a stopped bench continues where it was, and
the table keeps the rows of seeds that another call wrote to the same ``OUT`` (so seeds can run
as several processes side by side: ``--seeds 0 2`` and ``--seeds 1`` in parallel).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

CONFIG = "examples/main.yaml"


def run_train(out_dir: Path, overrides: list[str]) -> dict:
    """``turngym train`` in a fresh process; returns its summary plus wall time and load."""
    summary_file = out_dir / "summary.json"
    timing_file = out_dir / "bench.json"
    if summary_file.exists() and timing_file.exists():
        return {**json.loads(summary_file.read_text()), **json.loads(timing_file.read_text())}
    if out_dir.exists():  # an unfinished run: start it again
        shutil.rmtree(out_dir)
    cmd = [sys.executable, "-m", "turngym", "train", CONFIG, "--set", f"run.out_dir={out_dir}", *sum((["--set", o] for o in overrides), [])]
    load_before = os.getloadavg()[0]
    start, cpu_before = time.perf_counter(), _children_cpu_s()
    subprocess.run(cmd, check=True)
    # CPU seconds next to wall seconds: on a shared machine the wall time says more about the
    # neighbours than about turngym, while the CPU time of a one-thread run is close to the wall
    # time it would take on a quiet machine
    timing = {"wall_s": time.perf_counter() - start, "cpu_s": _children_cpu_s() - cpu_before,
              "load_before": load_before, "load_after": os.getloadavg()[0]}
    timing_file.write_text(json.dumps(timing))
    return {**json.loads(summary_file.read_text()), **timing}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def training_seconds(run_dir: Path) -> tuple[float, float]:
    """(seconds spent on the warm start + RL steps, warm-start steps per second) of a run."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sft = next(r for r in records if "sft/seconds" in r)
    rl = sum(r.get("time/step_s", 0.0) for r in records)
    # the rate of the warm start's own steps: its validation checks (sft.stop_at_success) are not steps
    return sft["sft/seconds"] + rl, sft["sft/steps"] / (sft["sft/seconds"] - sft.get("sft/check_seconds", 0.0))


def merge_rows(table: Path, rows: list[dict]) -> list[dict]:
    """``rows`` plus the rows of other seeds already in ``table``, by seed."""
    mine = {row["seed"] for row in rows}
    earlier = json.loads(table.read_text()) if table.exists() else []
    return sorted([r for r in earlier if r["seed"] not in mine] + rows, key=lambda r: r["seed"])


def fmt(mean: float, ci: list[float]) -> str:
    return f"{mean:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="bench/results/main_job")
    ap.add_argument("--no-control", action="store_true", help="skip the warm-start-only control")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        main_run = run_train(out / f"seed-{seed}", [f"run.seed={seed}"])
        row = {"seed": seed, "main": main_run}
        if not args.no_control:
            budget_s, rate = training_seconds(out / f"seed-{seed}")
            steps = max(1, round(budget_s * rate))
            row["control_sft_steps"] = steps
            row["control"] = run_train(out / f"control-seed-{seed}", [f"run.seed={seed}", "run.steps=0",
                                                                      f"sft.steps={steps}", "run.eval_every=0",
                                                                      "sft.stop_at_success=null"])
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    rows = merge_rows(out / "main_job.json", rows)
    (out / "main_job.json").write_text(json.dumps(rows, indent=2))
    lines = ["| seed | before | after warm start | after RL | RL gain (points) | CIs overlap | wall time, CPU time (load) "
             "| control: warm start alone, same training time | control wall time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        m = row["main"]
        gain = 100 * (m["eval_after"] - m["eval_after_sft"])
        overlap = "no" if m["eval_after_ci"][0] > m["eval_after_sft_ci"][1] else "yes"
        control = row.get("control")
        ctl = (f"{fmt(control['eval_after_sft'], control['eval_after_sft_ci'])} ({row['control_sft_steps']} steps)"
               if control else "-")
        ctl_wall = f"{control['wall_s'] / 60:.1f} min" if control else "-"
        lines.append(f"| {row['seed']} | {fmt(m['eval_before'], m['eval_before_ci'])} | "
                     f"{fmt(m['eval_after_sft'], m['eval_after_sft_ci'])} | {fmt(m['eval_after'], m['eval_after_ci'])} | "
                     f"{gain:+.1f} | {overlap} | {m['wall_s'] / 60:.1f} min, CPU {m['cpu_s'] / 60:.1f} min (load {m['load_before']:.1f}) | {ctl} | {ctl_wall} |")
    (out / "main_job.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
