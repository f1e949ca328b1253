"""Registration of the grid puzzles (Sokoban, FrozenLake) and their suites."""

from __future__ import annotations

from turngym.envs.registration import register
from turngym.envs.tasks import register_suite

SUITES = {
    "sokoban-6x6-1": "Sokoban 6x6, 1 box: generated levels (200 frozen train / 500 test; training draws fresh ones)",
    "sokoban-7x7-2": "Sokoban 7x7, 2 boxes: generated levels (200 frozen train / 500 test; training draws fresh ones)",
    "sokoban-8x8-3": "Sokoban 8x8, 3 boxes: generated levels (200 frozen train / 500 test; training draws fresh ones)",
    "frozenlake-4x4": "FrozenLake 4x4: generated maps (200 frozen train / 500 test; training draws fresh ones)",
    "frozenlake-6x6": "FrozenLake 6x6: generated maps (200 frozen train / 500 test; training draws fresh ones)",
}


def register_all() -> None:
    for name, desc in SUITES.items():
        register_suite(name, f"turngym.envs.grid.suites:load_{name.replace('-', '_')}", desc)
    sokoban, lake = "turngym.envs.grid.sokoban:SokobanEnv", "turngym.envs.grid.frozenlake:FrozenLakeEnv"
    register("turngym/Sokoban-v0", sokoban, {"suite": "sokoban-6x6-1"},
             "Sokoban 6x6 with 1 box: push the box onto the target (text board).")
    register("turngym/Sokoban-7x7-2-v0", sokoban, {"suite": "sokoban-7x7-2", "max_turns": 40},
             "Sokoban 7x7 with 2 boxes.")
    register("turngym/Sokoban-8x8-3-v0", sokoban, {"suite": "sokoban-8x8-3", "max_turns": 60},
             "Sokoban 8x8 with 3 boxes.")
    register("turngym/FrozenLake-v0", lake, {"suite": "frozenlake-4x4"},
             "FrozenLake 4x4: walk from S to G without stepping into a hole (text board).")
    register("turngym/FrozenLake-6x6-v0", lake, {"suite": "frozenlake-6x6", "max_turns": 30},
             "FrozenLake 6x6.")
