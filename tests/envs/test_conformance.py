"""Every registered environment passes `turngym check` (Gymnasium's check_env + turngym's)."""

import pytest

from turngym.envs import EnvUnavailable, registered_envs
from turngym.envs.checker import CHECKS, check

ENV_IDS = sorted(registered_envs())


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_env_passes_every_check(env_id):
    try:
        results = check(env_id, seed=0, steps=6)
    except EnvUnavailable as err:
        pytest.skip(str(err))
    failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
    assert not failed, failed
    assert [r.name for r in results] == list(CHECKS)  # every check ran, once


def test_checker_catches_a_nondeterministic_env():
    from turngym.envs import Task, TaskSuite, TurnEnv

    class Flaky(TurnEnv):
        calls = 0

        def _reset_task(self, task):
            return "hi", {"anchor": "s"}

        def _step(self, action):
            Flaky.calls += 1
            return f"obs {Flaky.calls}", 0.0, False, {"action_valid": action == "ok", "anchor": ["unhashable"]}

    suite = TaskSuite("one", [Task(id="a")])
    results = {r.name: r for r in check("x", make_env=lambda: Flaky(suite=suite))}
    assert not results["deterministic under a seed"].passed
    assert "must be hashable" in results["info keys well-typed, anchors hashable"].detail
    # exactly the checks it breaks fail; the others still run and pass
    assert {name for name, r in results.items() if not r.passed} == {
        "gymnasium check_env", "deterministic under a seed", "info keys well-typed, anchors hashable"}
    assert set(results) == set(CHECKS)


def test_text_spaces_sample_as_gymnasium_text_and_own_their_rng():
    from gymnasium import spaces

    from turngym.envs.core import _SAMPLE_CHARSET, TextSpace

    ours, gyms = TextSpace(50, seed=3), spaces.Text(50, min_length=0, charset=_SAMPLE_CHARSET, seed=3)
    assert ours == gyms and [ours.sample() for _ in range(5)] == [gyms.sample() for _ in range(5)]
    a, b = TextSpace(seed=1), TextSpace(seed=1)  # the charset tables are shared, the RNG is not
    a.sample()
    assert a.np_random is not b.np_random and b.sample() == TextSpace(seed=1).sample()
    assert ours.contains("any \u00e9 text \udcff") and not ours.contains("x" * 51) and ours.max_length == 50
