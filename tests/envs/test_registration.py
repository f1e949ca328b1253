import gymnasium as gym
import pytest

import turngym
from turngym.envs import TurnEnv, UnknownEnvError, registered_envs


def test_builtin_grid_envs_are_registered_with_descriptions():
    envs = registered_envs()
    for env_id in ["turngym/Sokoban-v0", "turngym/Sokoban-7x7-2-v0", "turngym/Sokoban-8x8-3-v0", "turngym/FrozenLake-v0"]:
        assert env_id in envs and envs[env_id]


def test_make_returns_a_turn_env_through_gymnasium():
    env = turngym.make("turngym/Sokoban-v0")
    assert isinstance(env, gym.Env) and isinstance(env.unwrapped, TurnEnv)
    assert env.spec.id == "turngym/Sokoban-v0"


def test_kwargs_reach_the_environment():
    env = turngym.make("turngym/Sokoban-v0", max_turns=7, split="test")
    assert env.unwrapped.max_turns == 7 and env.unwrapped.split == "test"


@pytest.mark.parametrize("wrong,suggested", [
    ("turngym/Sokoban-v1", "turngym/Sokoban-v0"),
    ("turngym/sokoban-v0", "turngym/Sokoban-v0"),
    ("turngym/FrozenLak-v0", "turngym/FrozenLake-v0"),
])
def test_unknown_id_suggests_the_nearest(wrong, suggested):
    with pytest.raises(UnknownEnvError, match=f"did you mean '{suggested}'"):
        turngym.make(wrong)


def test_unknown_id_without_a_near_match_points_to_the_listing():
    with pytest.raises(UnknownEnvError, match="`turngym envs` lists"):
        turngym.make("zzzzzzzz/Qqqqqq-v9")


def test_entry_point_is_lazy_and_registration_idempotent():
    turngym.register("testpkg/Lazy-v0", entry_point="no_such_module_xyz:Env", description="lazy")
    turngym.register("testpkg/Lazy-v0", entry_point="no_such_module_xyz:Env", description="lazy")
    assert "testpkg/Lazy-v0" in registered_envs()  # registering imported nothing
    with pytest.raises(ModuleNotFoundError):
        turngym.make("testpkg/Lazy-v0")
    del gym.registry["testpkg/Lazy-v0"]
