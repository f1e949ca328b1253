"""bench/frozenlake_walkers.py: the hand-written walkers that RL's end point is read against
play the real environment and behave as their names say."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_walkers", ROOT / "bench" / "frozenlake_walkers.py")
walkers = importlib.util.module_from_spec(_spec)
sys.modules["bench_walkers"] = walkers
_spec.loader.exec_module(walkers)

OPTIONS = {"max_turns": 12, "invalid_penalty": 0.1, "off_board_invalid": True}


def test_a_goalward_walker_steps_towards_the_goal_and_looks_ahead_only_when_told():
    rows = ["SFF", "FHF", "FFG"]
    blind = walkers.goalward(("down", "right", "up", "left"), look_ahead=False)
    aware = walkers.goalward(("down", "right", "up", "left"), look_ahead=True)
    assert blind(rows, (0, 1)) == "down"  # onto the hole: it does not look
    assert aware(rows, (0, 1)) == "right"  # the other goal-ward move is safe
    assert aware(rows, (1, 0)) == "down" and blind(["SH", "FG"], (0, 0)) == "down"
    assert aware(["SH", "HG"], (0, 0)) == "down"  # every goal-ward move is a hole: it still moves


def test_on_the_held_out_maps_the_solver_beats_the_hole_aware_walker_which_beats_the_blind_one():
    blind = walkers.play(OPTIONS, walkers.goalward(("down", "right", "up", "left"), look_ahead=False))
    aware = walkers.play(OPTIONS, walkers.goalward(("down", "right", "up", "left"), look_ahead=True))
    solver = walkers.play(OPTIONS, None)
    assert len(blind) == len(aware) == len(solver) == 500
    assert all(solver) and sum(blind) < sum(aware) < len(solver)
    # looking ahead can lead a walker into another hole later, so it is not a superset; it
    # keeps most of the blind walker's wins
    assert sum(a for a, b in zip(aware, blind) if b) > 0.8 * sum(blind)
