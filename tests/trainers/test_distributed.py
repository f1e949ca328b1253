"""Multi-process training through accelerate: real process groups (torchrun, DDP over gloo on
CPU), checked against the single-process path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from turngym.agents.models import load_model

HERE = Path(__file__).parent
TINY = "tiny-markov:hidden=32,layers=1,heads=2,seed=0"


def _torchrun(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize(("loss_agg", "rows"), [("token-mean", "turns"), ("seq-mean-token-mean", "turns"),
                                               ("token-mean", "packed"), ("seq-mean-token-mean", "packed")])
def test_two_ranks_make_the_same_update_as_one_process(tmp_path, loss_agg, rows):
    """``packed``: full-history trajectories, trained as packed sequences on each rank."""
    single, multi = tmp_path / "single.pt", tmp_path / "multi.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(HERE / "ddp_worker.py"), str(single), loss_agg, rows], check=True, env=env,
                   timeout=300)
    _torchrun([str(HERE / "ddp_worker.py"), str(multi), loss_agg, rows], tmp_path)
    one, two = torch.load(single), torch.load(multi)
    assert one["world_size"] == 1 and two["world_size"] == 2
    base, _ = load_model(TINY)
    moved = [k for k, v in base.state_dict().items() if not torch.equal(v, one["params"][k])]
    assert moved, "the update must change the weights"
    for key in one["params"]:
        assert torch.allclose(one["params"][key], two["params"][key], atol=1e-5), key
    assert two["metrics"]["train/grad_norm"] == pytest.approx(one["metrics"]["train/grad_norm"], rel=1e-4)


def _write_config(tmp_path: Path, out: Path, steps: int) -> Path:
    cfg = {
        "env": {"id": "turngym/FrozenLake-v0", "kwargs": {"max_turns": 4, "invalid_penalty": 0.1}},
        "policy": {"model": TINY, "torch_threads": 1},
        "rollout": {"group_size": 2, "memory": "window", "memory_window": 0, "max_tokens": 16,
                    "stop": ["</action>"], "progress": False, "concurrency": 2},
        "estimator": {"name": "gigpo"},
        "optim": {"lr": 1e-3},
        "run": {"steps": steps, "tasks_per_step": 3, "eval_tasks": 2, "eval_every": 0, "checkpoint_every": 1,
                "tensorboard": False, "out_dir": str(out)},
    }
    path = tmp_path / f"train-{steps}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_turngym_train_under_torchrun_logs_once_checkpoints_per_rank_and_resumes(tmp_path):
    run = tmp_path / "run"
    _torchrun(["-m", "turngym", "train", str(_write_config(tmp_path, run, 2))], tmp_path)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "rollout/reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2], "rank 0 logs each step once"
    # 3 tasks over 2 ranks (2 + 1), 2 samples each: the step's episodes are summed back
    assert all(r["rollout/episodes"] == pytest.approx(3.0) for r in steps)  # mean over ranks of (4, 2)
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text()
    assert sorted(p.name for p in ckpt.glob("state*.pt")) == ["state-rank0.pt", "state-rank1.pt"]
    assert json.loads((ckpt / "trainer_state.json").read_text())["world_size"] == 2
    _torchrun(["-m", "turngym", "train", str(_write_config(tmp_path, run, 3)), "--resume"], tmp_path)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "rollout/reward_mean" in r] == [1, 2, 3]
    # a single process cannot take over a two-process run's optimizer shards: one clear sentence
    proc = subprocess.run([sys.executable, "-m", "turngym", "train", str(_write_config(tmp_path, run, 4)), "--resume"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "resume it with 2" in proc.stderr, proc.stderr[-2000:]


def test_bf16_autocast_update_stays_close_to_the_fp32_update():
    """optim.mixed_precision=bf16 goes through accelerate's autocast (on CPU here): the update
    differs from fp32 (autocast is really on) but only by bf16 rounding."""
    import numpy as np

    from turngym.config import load_config
    from turngym.trainers.config import TrainConfig
    from turngym.trainers.distributed import AccelerateGroup, Distributed, SingleProcess
    from turngym.trainers.rows import Row
    from turngym.trainers.trainer import ppo_update

    rng = np.random.default_rng(0)
    rows = [Row(list(rng.integers(4, 200, size=int(n))), list(rng.integers(1, 200, size=int(m))), advantage=float(a))
            for n, m, a in zip(rng.integers(3, 30, 11), rng.integers(1, 12, 11), rng.normal(size=11))]
    updates = {}
    for precision in ("no", "bf16"):  # a bare `no` is YAML's false: the config takes it as "no"
        cfg = load_config(TrainConfig, None, [f"optim.mixed_precision={precision}"])
        dist = Distributed.create(cfg.optim.mixed_precision, torch.device("cpu"))
        assert isinstance(dist, AccelerateGroup if precision == "bf16" else SingleProcess)
        model, _ = load_model(TINY)
        base = {k: v.clone() for k, v in model.state_dict().items()}
        train_model, optimizer = dist.prepare(model, torch.optim.SGD(model.parameters(), lr=0.5))
        ppo_update(train_model, optimizer, [Row(r.prompt_ids, r.response_ids, r.advantage) for r in rows], cfg, 0,
                   torch.device("cpu"), np.random.default_rng(0), dist=dist)
        updates[precision] = {k: v - base[k] for k, v in dist.unwrap(train_model).state_dict().items()}
    diff = sum((updates["no"][k] - updates["bf16"][k]).norm() ** 2 for k in updates["no"]) ** 0.5
    size = sum(u.norm() ** 2 for u in updates["no"].values()) ** 0.5
    assert size > 0 and 0 < diff / size < 0.05
