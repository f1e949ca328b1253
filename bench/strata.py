"""What Stratified GRPO changes, on a policy's own sampled groups: per-stratum advantage statistics.

Samples ``--groups`` training tasks x ``group_size`` episodes with a recipe's environment and
rollout settings (``--config``, default ``examples/search_world.yaml``) and a policy
(``--policy``: a model spec or a checkpoint's ``model`` folder), then computes the advantages of
``grpo`` and ``stratified`` on the same turns. A trajectory's stratum is the environment's
``info["stratum"]`` at its last turn (for search worlds: the searches made). Reported per
stratum: trajectories, mean return, and each estimator's mean and standard deviation of the
trajectory advantages; overall: how many groups hold more than one stratum (only there can
stratification differ from GRPO), and the mean |A_stratified - A_grpo| per trajectory.

    python bench/strata.py --policy runs/search_world/checkpoints/step-000200/model
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from turngym.agents.hf import HFPolicy
from turngym.agents.models import load_model
from turngym.agents.rollout import RolloutEngine
from turngym.config import load_config
from turngym.envs import make
from turngym.trainers.config import TrainConfig
from turngym.trainers.estimators import estimate_columns
from turngym.trainers.turns import TurnTable

ROOT = Path(__file__).resolve().parents[1]


def sample(config: TrainConfig, spec: str, groups: int, seed: int) -> TurnTable:
    model, tokenizer = load_model(spec)
    rollout = config.rollout.model_copy(update={"progress": False, "seed": seed})
    kwargs = dict(config.env.kwargs)
    suite = make(config.env.id, **kwargs).unwrapped.suite
    tasks = suite.split(config.env.eval_split)[:groups]
    engine = RolloutEngine(HFPolicy(model, tokenizer), config.env.id, config=rollout, env_kwargs=kwargs)
    return TurnTable.from_trajectories(engine.run(tasks))


def report(table: TurnTable) -> list[str]:
    columns = table.estimator_columns()
    advantages = {name: estimate_columns(name, columns) for name in ("grpo", "stratified")}
    last: dict[str, int] = {}  # each trajectory's last turn: its stratum; outcome advantages are per trajectory
    returns: dict[str, float] = defaultdict(float)
    for i, (traj, reward) in enumerate(zip(table.traj_ids, np.asarray(columns["rewards"], dtype=float).tolist())):
        last[traj] = i
        returns[traj] += reward
    by_stratum: dict[object, list[str]] = defaultdict(list)
    strata_in_group: dict[str, set[object]] = defaultdict(set)
    for traj, i in last.items():
        by_stratum[table.strata[i]].append(traj)
        strata_in_group[table.group_ids[i]].add(table.strata[i])
    lines = ["| stratum | trajectories | mean return | grpo A mean / std | stratified A mean / std |",
             "|---|---:|---:|---|---|"]
    for stratum, trajs in sorted(by_stratum.items(), key=lambda kv: -len(kv[1])):
        stats = [f"{a.mean():+.3f} / {a.std():.3f}" for a in
                 (np.array([advantages[name][last[t]] for t in trajs]) for name in ("grpo", "stratified"))]
        lines.append(f"| {stratum} | {len(trajs)} | {np.mean([returns[t] for t in trajs]):.3f} | {stats[0]} | {stats[1]} |")
    mixed = sum(len(v) > 1 for v in strata_in_group.values())
    diff = np.mean([abs(advantages["stratified"][i] - advantages["grpo"][i]) for i in last.values()])
    lines += ["", f"groups with more than one stratum: {mixed} of {len(strata_in_group)}; "
              f"mean |A_stratified - A_grpo| per trajectory: {diff:.3f}; trajectories: {len(last)}"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "search_world.yaml"))
    parser.add_argument("--policy", default=None, help="model spec or checkpoint model folder (default: the config's)")
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = parser.parse_args()
    config = load_config(TrainConfig, args.config, args.set)
    torch.set_num_threads(config.policy.torch_threads or 1)
    spec = args.policy or config.policy.model
    load = os.getloadavg()[0]
    sets = "".join(f" --set {item}" for item in args.set)
    lines = [f"`python bench/strata.py --config {Path(args.config).name} --policy {spec} --groups {args.groups}{sets}` "
             f"(env {config.env.id}, group size {config.rollout.group_size}, load {load:.1f})", "",
             *report(sample(config, spec, args.groups, args.seed))]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
