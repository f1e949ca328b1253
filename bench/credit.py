"""Credit assignment on a grid puzzle with recurring states: GRPO vs GiGPO vs Flow-GRPO.

The same tiny model, warm-started once on the solver's demonstrations (so every run starts from
the same weights), is trained with each estimator for the same budget and seeds; held-out
success is measured every ``--eval-every`` steps. Reports steps-to-threshold and final success
(mean and spread over seeds) and plots the curves.

    python bench/credit.py --steps 40 --seeds 0 1 2 --out bench/results/credit

The warm start is saved (``warm-start/state.pt``) and finished runs are kept, so a stopped
bench continues where it was, and several processes can share the work on a multi-core
machine (``--estimators grpo`` in one, ``--estimators gigpo`` in another, then one more call
with all of them to write the summary and the plot).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from turngym.agents.models import load_model
from turngym.config import load_config
from turngym.trainers.config import TrainConfig
from turngym.trainers.trainer import Trainer

ESTIMATORS = ["grpo", "gigpo", "flow_grpo"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="examples/main.yaml")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--eval-tasks", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--estimators", nargs="+", default=ESTIMATORS)
    ap.add_argument("--threshold", type=float, default=None, help="success level for steps-to-threshold (default: warm start + 10 points)")
    ap.add_argument("--out", default="bench/results/credit")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    base = load_config(TrainConfig, args.config, args.set + [
        f"run.steps={args.steps}", f"run.eval_every={args.eval_every}", f"run.eval_tasks={args.eval_tasks}",
        "run.checkpoint_every=0", "run.tensorboard=false",
    ])
    # One warm start shared by every run.
    warm_dir = out / "warm-start"
    warm_file = warm_dir / "state.pt"
    if warm_file.exists():
        saved = torch.load(warm_file)
        state, warm_eval, warm_success = saved["state"], saved["before"], saved["after"]
    else:
        ws_cfg = base.model_copy(deep=True)
        ws_cfg.run.out_dir = str(warm_dir)
        ws_cfg.run.steps = 0
        warm = Trainer(ws_cfg)
        warm_eval = warm.evaluate("before")["eval/success_rate"]
        warm.warm_start()
        warm_success = warm.evaluate("after-sft")["eval/success_rate"]
        state = copy.deepcopy(warm.model.state_dict())
        tmp = warm_file.with_suffix(".tmp")
        torch.save({"state": state, "before": warm_eval, "after": warm_success}, tmp)
        tmp.replace(warm_file)
    print(f"warm start: {warm_eval:.3f} -> {warm_success:.3f}")
    threshold = args.threshold if args.threshold is not None else warm_success + 0.10

    curves: dict[str, dict[int, list[tuple[int, float]]]] = {}
    timings: dict[str, list[float]] = {}
    for name in args.estimators:
        for seed in args.seeds:
            cfg = base.model_copy(deep=True)
            if name != base.estimator.name:  # the config's options belong to its own estimator
                cfg.estimator.options = {}
            cfg.estimator.name = name
            cfg.run.seed = seed
            cfg.rollout.seed = seed
            cfg.sft.enabled = False
            cfg.run.out_dir = str(out / f"{name}-seed{seed}")
            done = Path(cfg.run.out_dir) / "bench.json"
            if done.exists():
                seconds = json.loads(done.read_text())["seconds"]
            else:
                if Path(cfg.run.out_dir).exists():  # an unfinished run: start it again
                    shutil.rmtree(cfg.run.out_dir)
                model, tokenizer = load_model(cfg.policy.model)
                model.load_state_dict(state)
                trainer = Trainer(cfg, model=model, tokenizer=tokenizer)
                t0 = time.perf_counter()
                trainer.train()
                seconds = time.perf_counter() - t0
                done.write_text(json.dumps({"seconds": seconds}))
            timings.setdefault(name, []).append(seconds)
            points = [(0, warm_success)]
            for line in (Path(cfg.run.out_dir) / "metrics.jsonl").read_text().splitlines():
                rec = json.loads(line)
                if "eval/success_rate" in rec and rec["step"] > 0:
                    points.append((rec["step"], rec["eval/success_rate"]))
            curves.setdefault(name, {})[seed] = points
            print(name, seed, points[-1])

    summary = {"warm_start_before": warm_eval, "warm_start_after": warm_success, "threshold": threshold, "estimators": {}}
    for name, by_seed in curves.items():
        finals = [pts[-1][1] for pts in by_seed.values()]
        reach = [next((s for s, v in pts if v >= threshold), None) for pts in by_seed.values()]
        summary["estimators"][name] = {
            "final_mean": float(np.mean(finals)), "final_std": float(np.std(finals, ddof=1)) if len(finals) > 1 else 0.0,
            "finals": finals, "steps_to_threshold": reach, "seconds_per_run": float(np.mean(timings[name])),
        }
    (out / "summary.json").write_text(json.dumps({"summary": summary, "curves": curves}, indent=2))
    plot(curves, warm_success, out / "credit.png", threshold)
    print(json.dumps(summary, indent=2))


def plot(curves, warm_success: float, path: Path, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, by_seed in curves.items():
        steps = [s for s, _ in next(iter(by_seed.values()))]
        values = np.array([[v for _, v in pts] for pts in by_seed.values()])
        mean = values.mean(0)
        ax.plot(steps, mean, marker="o", label=f"{name} (n={len(values)})")
        ax.fill_between(steps, values.min(0), values.max(0), alpha=0.15)
    ax.axhline(threshold, ls="--", c="gray", lw=0.8, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("update step")
    ax.set_ylabel("held-out success (greedy)")
    ax.set_title(f"credit assignment, warm start at {warm_success:.2f}; band = min..max over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
