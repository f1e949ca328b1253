"""Packed trajectories vs one row per turn: training tokens/s of the PPO update (#21).

Side by side in one run, for each model and environment: ``--groups`` groups of ``--group``
episodes of ``--turns`` turns each, full-history memory (token-in/token-out prompts), sampled by
the model itself through the rollout engine; every turn gets a nonzero advantage (drawn at
random: what is timed is the update, not the estimator). Then, alternating, ``--repeats`` times:

- **per-turn rows**: ``ppo_update(..., pack=False)``, one sequence per turn (each turn's whole
  prompt recomputed);
- **packed**: ``ppo_update(..., pack=True)``, one sequence per trajectory where the prompts are
  exact prefixes (the trainer's default path, so a group's shared first prompt is also computed
  once where it is the larger part of its sequences: rarely on these 10-turn cases;
  ``bench/shared_prompts.py`` measures that on its own).

Each update starts from the same weights with a fresh AdamW, defaults otherwise (one epoch,
token-mean, 8192-token micro-batches). Tokens/s = the trajectories' distinct tokens (each
trajectory's last prompt + last response) / seconds of the update, best of the repeats; the
ratio is per-turn seconds / packed seconds. Also reported: how many turns' prompt + response ids
are a prefix of the next prompt (token in, token out), the tokens each path runs through the
model, and the largest difference between the response-token logprobs of the two layouts
(``max |dlogp|``, one forward each). The last line gives the smallest ratio and the largest
``|dlogp|`` over all cases:

    packing: <ratio>x tokens/s, max |dlogp| <value>

    python bench/packing.py                                  # tiny on Sokoban and Search
    python bench/packing.py --models tiny smollm2 --repeats 2 --out /tmp/packing.md
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from turngym.agents.hf import HFPolicy
from turngym.agents.models import load_model
from turngym.agents.rollout import RolloutConfig, RolloutEngine
from turngym.config import load_config
from turngym.envs import make
from turngym.trainers.config import TrainConfig
from turngym.trainers.rows import (
    collate_packed,
    pack_rows,
    per_turn,
    rows_from_trajectories,
    token_logprobs,
)
from turngym.trainers.trainer import ppo_update

ENVS = {"sokoban": "turngym/Sokoban-v0", "search": "turngym/Search-v0"}


def episodes(model, tokenizer, env_id: str, groups: int, group: int, turns: int, max_tokens: int):
    config = RolloutConfig(group_size=group, memory="full", max_turns=turns, max_tokens=max_tokens,
                           temperature=1.0, progress=False, concurrency=0, seed=0)
    tasks = [t.id for t in make(env_id).unwrapped.suite.split("train")[:groups]]
    return RolloutEngine(HFPolicy(model, tokenizer), env_id, config=config).run(tasks)


def prefix_turns(trajectories) -> tuple[int, int]:
    """(turns whose prompt + response ids are a prefix of the next prompt, turns with a next one)."""
    pairs = [(a, b) for t in trajectories for a, b in zip(t.turns, t.turns[1:])]
    ok = sum(b.prompt_ids[: len(a.prompt_ids) + len(a.response_ids)] == a.prompt_ids + a.response_ids for a, b in pairs)
    return ok, len(pairs)


def sequence_logprobs(model, packs, pad_id: int) -> dict[int, torch.Tensor]:
    """Each row's response logprobs (by ``id(row)``), every sequence of ``packs`` run alone and unpadded."""
    out = {}
    with torch.no_grad():
        for p in packs:
            batch = collate_packed([p], pad_id)
            turn = per_turn(token_logprobs(model, batch)[0], batch)
            for j, row in enumerate(p.rows):
                out[id(row)] = turn[j, : len(row.response_ids)]
    return out


def alone_logprobs(model, rows, pad_id: int, pack: bool) -> dict[int, torch.Tensor]:
    """Each row's response logprobs, its sequence (``pack_rows(rows, pack)``) run alone and unpadded."""
    return sequence_logprobs(model, pack_rows(rows, pack), pad_id)


def max_dlogp(packed: dict[int, torch.Tensor], per_turn_rows: dict[int, torch.Tensor]) -> float:
    """Largest |logp packed - logp per turn| over every response token."""
    return max(float((packed[k] - per_turn_rows[k]).abs().max()) for k in packed)


def per_turn_floor(model, rows, pad_id: int, alone: dict[int, torch.Tensor]) -> float:
    """The fp32 noise floor of that comparison: the per-turn rows alone (``alone``) vs in
    right-padded micro-batches of 4 (as the trainer's micro-batches run them), largest |dlogp|.
    Both are the per-turn layout; only the shapes the kernels see differ."""
    packs = pack_rows(rows, False)
    worst = 0.0
    with torch.no_grad():
        for start in range(0, len(packs), 4):
            chunk = packs[start:start + 4]
            batch = collate_packed(chunk, pad_id)
            together = per_turn(token_logprobs(model, batch)[0], batch)
            for j, p in enumerate(chunk):
                row = p.rows[0]
                worst = max(worst, float((alone[id(row)] - together[j, : len(row.response_ids)]).abs().max()))
    return worst


def time_update(model, rows, pad_id: int, pack: bool) -> float:
    cfg = load_config(TrainConfig, None, [])
    trained = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-5)
    rows = copy.deepcopy(rows)
    start = time.perf_counter()
    ppo_update(trained, optimizer, rows, cfg, pad_id, torch.device("cpu"), np.random.default_rng(0), pack=pack)
    return time.perf_counter() - start


def bench(spec: str, model, tokenizer, env: str, args) -> dict:
    load_start = os.getloadavg()[0]
    trajectories = episodes(model, tokenizer, ENVS[env], args.groups, args.group, args.turns, args.max_tokens)
    rng = np.random.default_rng(0)
    turns = sum(len(t.turns) for t in trajectories)
    rows = rows_from_trajectories(trajectories, rng.normal(size=turns) + 0.1)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    distinct = sum(len(t.turns[-1].prompt_ids) + len(t.turns[-1].response_ids) for t in trajectories if t.turns)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    time_update(model, rows[: args.group], pad_id, True)  # warm-up
    for _ in range(args.repeats):
        for pack in (False, True):
            seconds[pack].append(time_update(model, rows, pad_id, pack))
    per_turn_s, packed_s = min(seconds[False]), min(seconds[True])
    ok, pairs = prefix_turns(trajectories)
    alone = alone_logprobs(model, rows, pad_id, False)
    result = {
        "spec": spec, "env": env, "episodes": len(trajectories), "turns": turns, "prefix": f"{ok}/{pairs}",
        "distinct": distinct, "per_turn_tokens": sum(len(r) for r in rows),
        "packed_tokens": sum(len(p) for p in pack_rows(rows)), "sequences": len(pack_rows(rows)),
        "per_turn_tok_s": distinct / per_turn_s, "packed_tok_s": distinct / packed_s,
        "ratio": per_turn_s / packed_s, "max_dlogp": max_dlogp(alone_logprobs(model, rows, pad_id, True), alone),
        "floor": per_turn_floor(model, rows, pad_id, alone),
        "load": f"{load_start:.1f}-{os.getloadavg()[0]:.1f}",
    }
    print(f"{spec:8s} {env:8s} per-turn {result['per_turn_tok_s']:8.0f} tok/s  packed {result['packed_tok_s']:8.0f} "
          f"tok/s  ratio {result['ratio']:.2f}x  max |dlogp| {result['max_dlogp']:.1e} (floor {result['floor']:.1e})  "
          f"prefix {result['prefix']}  "
          f"load {result['load']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny"])
    parser.add_argument("--envs", nargs="+", choices=list(ENVS), default=list(ENVS))
    parser.add_argument("--groups", type=int, default=1, help="groups (tasks) per case")
    parser.add_argument("--group", type=int, default=8, help="episodes per group")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=32, help="most tokens per reply")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "packing.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for spec in args.models:
        model, tokenizer = load_model(spec)
        for env in args.envs:
            results.append(bench(spec, model, tokenizer, env, args))
    lines = [
        "# Packed trajectories vs one row per turn (#21)",
        "",
        f"`python bench/packing.py` — {args.groups} group(s) of {args.group} episodes, {args.turns} turns, "
        f"full-history memory, replies of at most {args.max_tokens} tokens sampled by the model; one PPO update "
        f"(defaults, AdamW) per path, best of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread(s), {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, CPU float32. "
        "Tokens/s counts each trajectory's distinct tokens; load = 1-minute load average at the case's start-end.",
        "",
        "| model | env | episodes | turns | prefix turns | distinct tokens | tokens through the model per-turn / packed "
        "(sequences) | per-turn tok/s | packed tok/s | ratio | max abs dlogp | floor: per-turn alone vs in padded "
        "micro-batches | load |",
        "|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [f"| {r['spec']} | {r['env']} | {r['episodes']} | {r['turns']} | {r['prefix']} | {r['distinct']} | "
              f"{r['per_turn_tokens']} / {r['packed_tokens']} ({r['sequences']}) | {r['per_turn_tok_s']:.0f} | "
              f"{r['packed_tok_s']:.0f} | {r['ratio']:.2f}x | {r['max_dlogp']:.1e} | {r['floor']:.1e} | {r['load']} |"
              for r in results]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    print(f"packing: {min(r['ratio'] for r in results):.2f}x tokens/s, "
          f"max |dlogp| {max(r['max_dlogp'] for r in results):.1e}")


if __name__ == "__main__":
    main()
