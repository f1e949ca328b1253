"""Shared fixtures of the trainer tests."""

import pytest

from turngym.config import load_config
from turngym.trainers.config import TrainConfig

TINY = "tiny-markov:hidden=32,layers=1,heads=2,seed=0"


def _config(tmp_path, name, **sections):
    overrides = [
        # a small penalty for unparseable replies: a random model's episodes then differ in reward
        "env.id=turngym/FrozenLake-v0", "env.kwargs={max_turns: 6, invalid_penalty: 0.1}", f"policy.model={TINY}",
        "rollout.group_size=4", "rollout.memory=window", "rollout.memory_window=0", "rollout.max_tokens=24",
        "rollout.stop=['</action>']", "rollout.progress=false", "rollout.concurrency=4",
        "estimator.name=gigpo", "optim.lr=1e-3", "run.tasks_per_step=3", "run.eval_tasks=4", "run.eval_every=0",
        "run.checkpoint_every=1", "run.tensorboard=false", f"run.out_dir={tmp_path / name}", "run.deterministic=true",
    ]
    for key, value in sections.items():
        overrides.append(f"{key.replace('__', '.')}={value}")
    return load_config(TrainConfig, None, overrides)


@pytest.fixture
def train_config(tmp_path):
    """``train_config(name, section__field=value, ...)``: a small FrozenLake run under tmp_path."""
    return lambda name, **sections: _config(tmp_path, name, **sections)
