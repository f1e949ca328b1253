"""RayEnvPool: the EnvPool contract with environments in real Ray actors."""

import random

import pytest

import turngym
from turngym.agents.env_pool import EnvPool, ResetRequest, StepRequest, ThreadEnvPool
from turngym.agents.ray_pool import RayEnvPool, make_env_pool
from turngym.agents.rollout import RolloutConfig, RolloutEngine
from turngym.agents.scripted import ScriptedPolicy

ENV_ID = "turngym/Sokoban-v0"
MOVES = ["<action>up</action>", "<action>down</action>", "<action>left</action>", "<action>right</action>"]


def random_move(_text, seed):
    return MOVES[random.Random(seed).randrange(4)]


def tasks(n):
    env = turngym.make(ENV_ID)
    ids = [t.id for t in env.unwrapped.suite.split("train")][:n]
    env.close()
    return ids


def comparable(trajs):
    """Trajectories without wall-clock timings (and without env_id: a RayEnvPool knows its
    environment's id, the reference's thread pool over a factory does not)."""
    out = []
    for t in trajs:
        d = t.model_dump()
        d.pop("env_id")
        for turn in d["turns"]:
            turn.pop("generate_s"), turn.pop("env_s")
        out.append(d)
    return out


CFG = RolloutConfig(group_size=4, max_turns=8, progress=False, concurrency=0)


@pytest.fixture(scope="module")
def reference():
    """The in-process engine's trajectories for 4 tasks x 4 samples."""
    with ThreadEnvPool(lambda: turngym.make(ENV_ID), concurrency=0) as pool:
        return comparable(RolloutEngine(ScriptedPolicy(random_move), pool, None, CFG).run(tasks(4), 0))


@pytest.fixture
def ray_pool(local_ray):
    pool = RayEnvPool(ENV_ID, num_actors=2, concurrency=0, num_cpus_per_actor=0.5, restart_timeout_s=30)
    yield pool
    pool.close()


def test_ray_pool_gives_the_same_trajectories_as_the_thread_pool(ray_pool, reference):
    assert isinstance(ray_pool, EnvPool)
    trajs = RolloutEngine(ScriptedPolicy(random_move), ray_pool, None, CFG).run(tasks(4), 0)
    assert comparable(trajs) == reference
    assert all(t["status"] in ("ok", "truncated") for t in reference)
    assert sum(len(t["turns"]) for t in reference) > 40


def test_batches_are_spread_over_actors_and_results_keep_request_order(ray_pool):
    results = ray_pool.reset([ResetRequest(slot, tasks(1)[0], seed=slot) for slot in range(6)])
    assert [r.slot for r in results] == list(range(6)) and all(r.error is None for r in results)
    assert sorted(ray_pool.owner(s) for s in range(6)) == [0, 0, 0, 1, 1, 1]
    steps = ray_pool.step([StepRequest(s, MOVES[s % 4]) for s in reversed(range(6))])
    assert [r.slot for r in steps] == list(reversed(range(6)))
    assert all(r.error is None and "action_valid" in r.info for r in steps)
    ray_pool.release([0, 1])
    assert ray_pool.owner(0) is None
    assert ray_pool.step([StepRequest(0, MOVES[0])])[0].error  # released: reset it first


class KillingPolicy(ScriptedPolicy):
    """Random moves; on generate call ``at`` it kills actor 0 of ``pool`` (Ray restarts it)."""

    def __init__(self, pool, at, no_restart=False):
        super().__init__(random_move)
        self.pool, self.at, self.no_restart = pool, at, no_restart
        self.victims: set[int] = set()

    def generate(self, prompts, sampling):
        if self.calls + 1 == self.at:
            import ray

            self.victims = {s for s in range(64) if self.pool.owner(s) == 0}
            ray.kill(self.pool.actors[0], no_restart=self.no_restart)
        return super().generate(prompts, sampling)


@pytest.mark.parametrize("no_restart", [False, True], ids=["ray-restarts", "pool-respawns"])
def test_a_killed_actor_ends_only_its_episodes_and_later_episodes_succeed(ray_pool, reference, no_restart):
    policy = KillingPolicy(ray_pool, at=3, no_restart=no_restart)
    trajs = comparable(RolloutEngine(policy, ray_pool, None, CFG).run(tasks(4), 0))
    assert policy.victims, "actor 0 held running episodes when it was killed"
    for slot, (got, want) in enumerate(zip(trajs, reference)):
        if slot in policy.victims:
            assert got["status"] == "error" and "actor" in got["error"]
            assert got["turns"] == want["turns"][: len(got["turns"])]  # the turns before the kill
        else:
            assert got == want
    assert ray_pool.restarts >= 1
    again = RolloutEngine(ScriptedPolicy(random_move), ray_pool, None, CFG).run(tasks(4), 0)
    assert comparable(again) == reference  # the restarted actor serves later episodes


def test_the_backend_is_chosen_by_name(local_ray):
    thread = make_env_pool("thread", ENV_ID, CFG)
    assert isinstance(thread, ThreadEnvPool)
    thread.close()
    pool = make_env_pool("ray", ENV_ID, CFG, num_actors=1, num_cpus_per_actor=0.5)
    try:
        assert isinstance(pool, RayEnvPool) and len(pool.actors) == 1 and pool.concurrency == 0
    finally:
        pool.close()
    with pytest.raises(ValueError, match="unknown rollout backend"):
        make_env_pool("dask", ENV_ID, CFG)


def test_an_actor_stuck_past_its_deadline_is_replaced(local_ray):
    def make_env():  # a local function: cloudpickle sends it by value to the actors
        import time

        import gymnasium

        class HangOnWait(gymnasium.Wrapper):
            def step(self, action):
                if "wait" in action:
                    time.sleep(3600)  # stepped in the actor's thread (concurrency 0): nothing can interrupt it
                return self.env.step(action)

        return HangOnWait(turngym.make(ENV_ID))

    pool = RayEnvPool(make_env, num_actors=2, concurrency=0, step_timeout_s=0.2, grace_s=1.0,
                      num_cpus_per_actor=0.5)
    try:
        task = tasks(1)[0]
        assert all(r.error is None for r in pool.reset([ResetRequest(s, task, seed=s) for s in range(4)]))
        stuck = next(s for s in range(4) if pool.owner(s) == 0)
        healthy = [s for s in range(4) if pool.owner(s) == 1]
        results = pool.step([StepRequest(s, "wait" if s == stuck else MOVES[0]) for s in range(4)])
        by_slot = {r.slot: r for r in results}
        assert "did not answer" in by_slot[stuck].error
        assert all(by_slot[s].error is None for s in healthy)
        others_on_0 = [s for s in range(4) if s != stuck and s not in healthy]
        assert all(by_slot[s].error for s in others_on_0)  # the stuck actor's whole batch ends
        assert pool.step([StepRequest(s, MOVES[1]) for s in healthy])[0].error is None
        again = pool.reset([ResetRequest(9, task, seed=9), ResetRequest(10, task, seed=10)])
        assert [r.error for r in again] == [None, None]  # the fresh actor takes new episodes
    finally:
        pool.close()


def test_without_ray_the_pool_says_what_to_install(monkeypatch):
    import sys

    from turngym.agents.ray_pool import RayUnavailable, ray_available

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert not ray_available()
    with pytest.raises(RayUnavailable, match=r"pip install 'turngym\[ray\]'"):
        RayEnvPool(ENV_ID)
