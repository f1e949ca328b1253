"""A few training steps with the environments in Ray actors, surviving a killed actor.

The config switch ``rollout.backend=ray`` makes the trainer build a RayEnvPool under the same,
unchanged RolloutEngine; the test then wraps the trainer's policy to kill an actor mid-rollout.
"""

import torch

from turngym.agents.ray_pool import RayEnvPool
from turngym.config import load_config
from turngym.trainers.config import TrainConfig
from turngym.trainers.trainer import Trainer

TINY = "tiny-markov:hidden=32,layers=1,heads=2,seed=0"


class KillOnce:
    """The trainer's policy; on its ``at``-th generate call it kills actor 0 of ``pool``."""

    def __init__(self, policy, pool, at):
        self.policy, self.pool, self.at, self.calls, self.killed = policy, pool, at, 0, False

    def generate(self, prompts, sampling):
        self.calls += 1
        if self.calls == self.at and any(self.pool.owner(s) == 0 for s in range(64)):
            import ray

            ray.kill(self.pool.actors[0], no_restart=False)
            self.killed = True
        return self.policy.generate(prompts, sampling)


def test_training_steps_with_environments_in_actors_survive_a_killed_actor(local_ray, tmp_path):
    overrides = [
        "env.id=turngym/FrozenLake-v0", "env.kwargs={max_turns: 6, invalid_penalty: 0.1}", f"policy.model={TINY}",
        "rollout.group_size=4", "rollout.memory=window", "rollout.memory_window=0", "rollout.max_tokens=24",
        "rollout.stop=['</action>']", "rollout.progress=false", "rollout.concurrency=2",
        "estimator.name=gigpo", "optim.lr=1e-3", "run.tasks_per_step=3", "run.eval_every=0",
        "run.checkpoint_every=0", "run.tensorboard=false", f"run.out_dir={tmp_path / 'run'}", "run.steps=3",
        "rollout.backend=ray", "rollout.ray_actors=2", "rollout.ray_cpus_per_actor=0.5",
    ]
    cfg = load_config(TrainConfig, None, overrides)
    trainer = Trainer(cfg)
    pool = trainer.env_pool
    assert isinstance(pool, RayEnvPool) and trainer.engine.env_id == "turngym/FrozenLake-v0"
    try:
        policy = KillOnce(trainer.policy, pool, at=2)  # the second round of the first step
        trainer.engine.policy = policy
        before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        steps = [trainer.train_step() for _ in range(3)]
    finally:
        pool.close()
    assert policy.killed
    assert steps[0]["rollout/episodes"] == 12 and steps[0]["rollout/error_episodes"] >= 1
    assert [s["rollout/error_episodes"] for s in steps[1:]] == [0, 0]  # the restarted actor serves
    assert all(any(k.startswith("train/") for k in s) for s in steps), steps
    assert sum(s["train/rows"] for s in steps) > 0  # rewards differed, so the model was updated
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert trainer.step == 3
