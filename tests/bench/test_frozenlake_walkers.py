"""bench/frozenlake_walkers.py: the hand-written walkers that RL's end point is read against
play the real environment and behave as their names say; a run's evaluations are compared with
them map by map."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_walkers", ROOT / "bench" / "frozenlake_walkers.py")
walkers = importlib.util.module_from_spec(_spec)
sys.modules["bench_walkers"] = walkers
_spec.loader.exec_module(walkers)

OPTIONS = yaml.safe_load((ROOT / "examples" / "main.yaml").read_text())["env"]["kwargs"]  # the main job's


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
    assert len(blind) == len(aware) == len(solver) == 500 and blind.keys() == solver.keys()
    assert all(solver.values()) and sum(blind.values()) < sum(aware.values()) < len(solver)
    # looking ahead can lead a walker into another hole later, so it is not a superset; it
    # keeps most of the blind walker's wins
    assert sum(aware[m] for m in blind if blind[m]) > 0.8 * sum(blind.values())


def test_a_runs_evaluations_are_compared_with_a_walker_map_by_map(tmp_path):
    for step, won in (("step-000000", {"a"}), ("step-000080", {"a", "b", "c"}), ("before-sft", set())):
        (tmp_path / "eval" / step).mkdir(parents=True)
        lines = [json.dumps({"task_id": m, "success": m in won, "turns": []}) for m in "abcd"]
        (tmp_path / "eval" / step / "trajectories.jsonl").write_text("\n".join(lines) + "\n")
    found = walkers.run_outcomes(tmp_path)
    assert list(found) == ["step-000000", "step-000080"]  # first and last, not the untrained policy
    walker = {"a": True, "b": False, "c": False, "d": True}
    assert walkers.agreement(found["step-000080"], walker) == "1 of its 2 wins, 2 of its 2 losses"
