"""Learning-rate schedules (pure) and the trainer following one across a resume."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turngym.trainers.schedules import lr_at
from turngym.trainers.trainer import Trainer


def test_constant_cosine_and_linear_shapes():
    assert [lr_at(s, 4, 1.0) for s in range(4)] == [1.0] * 4
    assert [lr_at(s, 4, 1.0, "linear") for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    cosine = [lr_at(s, 4, 1.0, "cosine") for s in range(4)]
    assert cosine[0] == 1.0 and cosine[2] == pytest.approx(0.5) and 0 < cosine[3] < 0.25
    assert [lr_at(s, 6, 1.0, "linear", warmup_steps=2) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])


@given(st.integers(1, 500), st.integers(0, 50), st.sampled_from(["constant", "linear", "cosine"]))
def test_every_rate_is_positive_at_most_the_peak_and_decays_monotonically(total, warmup, schedule):
    rates = [lr_at(s, total, 3e-4, schedule, warmup) for s in range(total)]
    assert all(0 < r <= 3e-4 * (1 + 1e-12) for r in rates)
    after = rates[min(warmup, total):]
    assert all(a >= b for a, b in zip(after, after[1:]))


def test_the_trainer_follows_the_schedule_and_a_resume_continues_it(train_config):
    cfg = train_config("sched", run__steps=3, optim__lr=1e-3, optim__lr_schedule="linear")
    Trainer(cfg).train()
    cfg.run.steps = 4  # the resumed run is told it is 4 steps long: the rate follows the new total
    Trainer(cfg, resume=True).train()
    with open(f"{cfg.run.out_dir}/metrics.jsonl") as lines:
        metrics = [json.loads(line) for line in lines]
    rates = [m["train/lr"] for m in metrics if "train/lr" in m]
    assert rates == pytest.approx([1e-3, 2e-3 / 3, 1e-3 / 3, 2.5e-4])
