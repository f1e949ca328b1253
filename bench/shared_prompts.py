"""A group's shared prompts computed once (``optim.share_prompts``) vs each row on its own.

Side by side in one run, on turns sampled by the policy itself through the rollout engine with
a recipe's own environment and rollout settings (``--config``, default ``examples/main.yaml``),
``--groups`` groups per case; every turn gets a nonzero advantage drawn at random (what is timed
is the update, not the estimator). Then, alternating, ``--repeats`` times, one PPO update (the
recipe's loss and optimiser shape, one epoch, fresh AdamW from the same weights) with
``optim.share_prompts`` off and on. Reported: rows, how many of them were joined into
shared-prompt sequences, tokens through the model each way, update seconds (best of the
repeats) and their ratio, and the largest difference of the response-token logprobs between
the two layouts (one no-grad forward each).

Cases: ``recipe`` (the config as it is: for the main job, windowed memory, so every turn is a
row of its own and turns with the same board in one group share their prompt) and ``single``
(the same with ``max_turns=1``: only the first prompt, as in bench/trl_grpo.py).

    python bench/shared_prompts.py                                     # main.yaml, untrained model
    python bench/shared_prompts.py --policy runs/main/checkpoints/final --out /tmp/shared.md
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from turngym.agents.hf import HFPolicy
from turngym.agents.models import load_model
from turngym.agents.rollout import RolloutEngine
from turngym.config import load_config
from turngym.envs import make
from turngym.trainers.config import TrainConfig
from turngym.trainers.rows import Row, pack_rows, rows_from_trajectories, share_prompts
from turngym.trainers.trainer import ppo_update

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packing import sequence_logprobs  # noqa: E402  (bench/packing.py: each sequence run alone)

ROOT = Path(__file__).resolve().parents[1]


def sampled_rows(config: TrainConfig, model, tokenizer, groups: int, max_turns: int | None) -> list[Row]:
    kwargs = dict(config.env.kwargs)
    if max_turns is not None:
        kwargs["max_turns"] = max_turns
    rollout = config.rollout.model_copy(update={"progress": False, "concurrency": 0, "seed": 0})
    suite = make(config.env.id, **kwargs).unwrapped.suite
    tasks = suite.split("test")[:groups]  # any fixed maps: what is measured is the update
    engine = RolloutEngine(HFPolicy(model, tokenizer), config.env.id, config=rollout, env_kwargs=kwargs)
    trajectories = engine.run(tasks)
    turns = sum(len(t.turns) for t in trajectories)
    advantages = np.random.default_rng(0).normal(size=turns) + 0.1
    return rows_from_trajectories(trajectories, advantages)


def time_update(config: TrainConfig, model, rows: list[Row], pad_id: int, share: bool) -> float:
    config = config.model_copy(update={"optim": config.optim.model_copy(
        update={"share_prompts": share, "ppo_epochs": 1, "mini_batches": 1})})
    trained = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-5)
    start = time.perf_counter()
    ppo_update(trained, optimizer, copy.deepcopy(rows), config, pad_id, torch.device("cpu"), np.random.default_rng(0))
    return time.perf_counter() - start


def bench_case(name: str, config: TrainConfig, model, tokenizer, args) -> dict:
    load_start = os.getloadavg()[0]
    rows = sampled_rows(config, model, tokenizer, args.groups, 1 if name == "single" else None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    alone = pack_rows(rows)
    shared = share_prompts(alone, config.optim.micro_batch_tokens)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    time_update(config, model, rows[:8], pad_id, True)  # warm-up
    for _ in range(args.repeats):
        for share in (False, True):
            seconds[share].append(time_update(config, model, rows, pad_id, share))
    off, on = sequence_logprobs(model, alone, pad_id), sequence_logprobs(model, shared, pad_id)
    result = {
        "case": name, "rows": len(rows), "joined": sum(len(p.rows) for p in shared if p.branches),
        "tokens_off": sum(len(p) for p in alone), "tokens_on": sum(len(p) for p in shared),
        "off_s": min(seconds[False]), "on_s": min(seconds[True]),
        "max_dlogp": max(float((on[k] - off[k]).abs().max()) for k in off),
        "load": f"{load_start:.1f}-{os.getloadavg()[0]:.1f}",
    }
    result["ratio"] = result["off_s"] / result["on_s"]
    print(f"{name:7s} rows {result['rows']}, joined {result['joined']}, tokens {result['tokens_off']} -> "
          f"{result['tokens_on']}, update {result['off_s']:.3f}s -> {result['on_s']:.3f}s ({result['ratio']:.2f}x), "
          f"max |dlogp| {result['max_dlogp']:.1e}, load {result['load']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "main.yaml"))
    parser.add_argument("--policy", default=None, help="model spec or checkpoint (default: the config's model)")
    parser.add_argument("--groups", type=int, default=16, help="tasks per case, each sampled group_size times")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=["recipe", "single"], default=["recipe", "single"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "shared_prompts.md"))
    args = parser.parse_args()
    config = load_config(TrainConfig, args.config, [])
    torch.set_num_threads(config.policy.torch_threads or 1)
    model, tokenizer = load_model(args.policy or config.policy.model)
    results = [bench_case(name, config, model, tokenizer, args) for name in args.cases]
    lines = [
        "# Shared prompts computed once vs each row alone (#21)",
        "",
        f"`python bench/shared_prompts.py --config {Path(args.config).name} --policy {args.policy or config.policy.model}`"
        f" — {args.groups} groups of {config.rollout.group_size}, one PPO update per layout, best of {args.repeats}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.machine()}, {os.cpu_count()} CPUs, "
        "CPU float32; load = 1-minute load average at the case's start-end.",
        "",
        "| case | rows | rows joined | tokens through the model off / on | update s off / on | ratio | max abs dlogp "
        "| load |",
        "|---|---:|---:|---|---|---:|---:|---|",
    ]
    lines += [f"| {r['case']} | {r['rows']} | {r['joined']} | {r['tokens_off']} / {r['tokens_on']} | "
              f"{r['off_s']:.3f} / {r['on_s']:.3f} | {r['ratio']:.2f}x | {r['max_dlogp']:.1e} | {r['load']} |"
              for r in results]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
