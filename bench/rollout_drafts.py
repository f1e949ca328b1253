"""The main job's rollouts with its generation settings vs the policy defaults, side by side.

The main job (examples/main.yaml) samples 16 FrozenLake tasks x 8 episodes per RL step with a
0.15M-parameter model whose reply is ``<action>down</action>``: 21 byte-level tokens, one of
them a decision. Both sides run the same episodes (same tasks, same seeds) from the same
warm-started weights, alternating, ``--repeats`` times:

- ``defaults``: ``HFPolicy`` as the policy config's defaults build it (``draft_budget=64``,
  which at 128 rows drafts nothing; KV reuse on);
- ``main job``: ``draft_budget=2048`` (the reply memory's drafts: format tokens checked in one
  forward) and ``reuse_kv=False`` (the Markov template never extends a held prompt).

Reported: seconds per step's rollouts, decode forwards, the ratio, and whether the two sides'
token ids are equal (they must be, up to float rounding of the logits; ``agents/hf.py``).
Each side's policy first runs one step's rollouts unmeasured (its reply memory then holds
what a training run's would). The weights come from ``--model`` (a checkpoint's ``model/``
folder), else from the main job's own warm start, trained here first (~2 minutes):

    python bench/rollout_drafts.py [--model runs/main/checkpoints/step-000080/model] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from turngym.agents.evaluation.runner import split_tasks
from turngym.agents.hf import HFPolicy
from turngym.agents.models import load_model
from turngym.agents.rollout import RolloutConfig, RolloutEngine

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "main.yaml"
SIDES = {"defaults": {"draft_budget": 64, "reuse_kv": True}, "main job": {"draft_budget": 2048, "reuse_kv": False}}


def warm_start(out: Path) -> Path:
    """The main job's warm start alone (``run.steps=0``); returns its model folder."""
    from turngym.trainers.checkpoint import latest_checkpoint

    if latest_checkpoint(out) is None:
        subprocess.run([sys.executable, "-m", "turngym", "train", str(CONFIG), "--set", "run.steps=0",
                        "--out", str(out)], check=True)
    return latest_checkpoint(out) / "model"


def one_side(model, tokenizer, config: dict, tasks, settings: dict, run_index: int) -> tuple[float, int, list]:
    """One step's rollouts: seconds, decode forwards, the token ids of every turn."""
    policy = HFPolicy(model, tokenizer, max_batch_size=config["policy"].get("max_batch_size", 256), **settings)
    engine = RolloutEngine(policy, config["env"]["id"], tokenizer, RolloutConfig(**config["rollout"]),
                           env_kwargs=config["env"]["kwargs"])
    engine.run(tasks, run_index=10_000 + run_index)  # the reply memory a training run's policy has
    forwards = []
    hook = model.register_forward_pre_hook(lambda *_: forwards.append(1))
    start = time.perf_counter()
    trajectories = engine.run(tasks, run_index=run_index)
    seconds = time.perf_counter() - start
    hook.remove()
    return seconds, len(forwards), [[turn.response_ids for turn in t.turns] for t in trajectories]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a checkpoint's model/ folder (default: train the main job's warm start)")
    parser.add_argument("--work", default="runs/bench-rollout-drafts", help="where the warm start is trained")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "rollout_drafts.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load(CONFIG.read_text())
    model_dir = Path(args.model) if args.model else warm_start(Path(args.work))
    model, tokenizer = load_model(str(model_dir))
    model.eval()
    tasks = split_tasks(config["env"]["id"], "test")[1][: config["run"]["tasks_per_step"]]
    load_before = os.getloadavg()[0]
    rows = []
    for repeat in range(args.repeats):
        ids = {}
        for name, settings in SIDES.items():
            seconds, forwards, ids[name] = one_side(model, tokenizer, config, tasks, settings, repeat)
            rows.append((repeat, name, seconds, forwards, sum(len(r) for t in ids[name] for r in t)))
            print(f"repeat {repeat} {name:9s}: {seconds:.2f} s, {forwards} forwards", flush=True)
        rows[-1] += (ids["defaults"] == ids["main job"],)
    total = {name: sum(r[2] for r in rows if r[1] == name) for name in SIDES}
    same = all(r[-1] is True for r in rows if r[1] == "main job")
    lines = [
        "# The main job's rollouts: its generation settings vs the policy defaults",
        "",
        f"`python bench/rollout_drafts.py` — model `{model_dir}`; {len(tasks)} tasks x "
        f"{config['rollout']['group_size']} samples per step, alternating, {args.repeats} repeats; torch "
        f"{torch.__version__}, 1 thread; load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| repeat | side | s | decode forwards | reply tokens |",
        "|---:|---|---:|---:|---:|",
        *[f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]} | {r[4]} |" for r in rows],
        "",
        f"Total: defaults {total['defaults']:.1f} s, main job {total['main job']:.1f} s: "
        f"**{total['defaults'] / total['main job']:.2f}x**; token ids equal on every repeat: {same}.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-1:]), f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
