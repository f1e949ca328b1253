"""Run by ``torchrun`` from test_distributed.py: one PPO update over rows spread across ranks.

Every rank builds the same rows and model; rank r trains on ``rows[r::world]`` through
accelerate (DDP over gloo on CPU), or the whole list in one plain process when not launched.
The parameters after the update go to ``OUT`` (rank 0). An uneven split and a tiny
micro-batch budget make ranks run different numbers of micro-batches. With ``packed`` the rows
are full-history trajectories (test_packing.py's ``chain_rows``), trained as packed sequences.
"""

import os
import sys

import numpy as np
import torch

from turngym.agents.models import load_model
from turngym.config import load_config
from turngym.trainers.config import TrainConfig
from turngym.trainers.distributed import Distributed
from turngym.trainers.rows import Row
from turngym.trainers.trainer import ppo_update

TINY = "tiny-markov:hidden=32,layers=1,heads=2,seed=0"


def main(out: str, loss_agg: str, kind: str = "turns") -> None:
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, None, [f"loss.loss_agg={loss_agg}", "optim.ppo_epochs=2", "optim.micro_batch_tokens=60",
                                          "optim.grad_clip=0.5"])
    rng = np.random.default_rng(0)
    rows = [Row(list(rng.integers(4, 200, size=int(n))), list(rng.integers(1, 200, size=int(m))), advantage=float(a))
            for n, m, a in zip(rng.integers(3, 30, 11), rng.integers(1, 12, 11), rng.normal(size=11))]
    if kind == "packed":
        from test_packing import chain_rows  # beside this script

        rows = chain_rows(seed=0)
    dist = Distributed.create("no", torch.device("cpu"))
    model, _ = load_model(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train_model, optimizer = dist.prepare(model, optimizer)
    metrics = ppo_update(train_model, optimizer, dist.shard(rows), cfg, 0, torch.device("cpu"),
                         np.random.default_rng(0), dist=dist)
    metrics = dist.mean_metrics(metrics)
    if dist.is_main:
        torch.save({"params": dist.unwrap(train_model).state_dict(), "world_size": dist.world_size, "metrics": metrics}, out)
    dist.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
    # The work is done and saved; skip interpreter teardown, where gloo's threads have been seen
    # to abort a rank under load ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
