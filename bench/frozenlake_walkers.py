"""What simple hand-written policies score on the main job's held-out maps: the yardstick for
what RL learned.

Each walker plays every held-out FrozenLake map (the 500 frozen test maps of
``turngym/FrozenLake-v0``, the main job's environment options) once through the environment's
own ``reset``/``step``, with the main job's turn limit:

- ``goal-ward, hole-blind``: each turn, a move that brings you closer to the goal G (preferring
  the directions in the order given), never looking at holes. It needs to read only where you
  and the goal are.
- ``goal-ward, hole-aware``: the same, but among the goal-ward moves it takes one whose cell is
  not a hole when there is one (it looks one cell ahead).
- ``solver``: the environment's expert (a shortest path around the holes).

    python bench/frozenlake_walkers.py [--runs RUN_DIR ...]

prints one line per walker: held-out success with its 95% CI. With ``--runs`` (training run
folders, e.g. ``runs/main``), it also reads each run's first and last held-out evaluation
(``eval/<step>/trajectories.jsonl``) and says, per walker, how many of the maps the walker wins
and loses the run's policy won: how alike the two are, map by map.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import yaml

import turngym
from turngym.agents.evaluation.stats import bootstrap_mean_ci
from turngym.envs.grid.moves import DIRECTIONS

Walker = Callable[[list[str], tuple[int, int]], "str | None"]


def goalward(order: tuple[str, ...], look_ahead: bool) -> Walker:
    """A walker that moves towards the goal, trying directions in ``order``; with ``look_ahead``
    it prefers a goal-ward move whose cell is not a hole."""

    def walk(rows: list[str], pos: tuple[int, int]) -> str | None:
        goal = next((r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch == "G")
        moves = [m for m in order
                 if (DIRECTIONS[m][0] * (goal[0] - pos[0]) > 0) or (DIRECTIONS[m][1] * (goal[1] - pos[1]) > 0)]
        if look_ahead:
            safe = [m for m in moves if rows[pos[0] + DIRECTIONS[m][0]][pos[1] + DIRECTIONS[m][1]] != "H"]
            moves = safe or moves
        return moves[0] if moves else None

    return walk


def play(env_kwargs: dict, walker: Walker | None) -> dict[str, bool]:
    """Success per held-out map id, one episode each; ``walker`` None plays the environment's expert."""
    env = turngym.make("turngym/FrozenLake-v0", **env_kwargs)
    lake = env.unwrapped
    outcomes: dict[str, bool] = {}
    for task in lake.suite.split("test"):
        env.reset(seed=0, options={"task": task})
        done, info = False, {}
        while not done:
            if walker is None:
                reply = lake.expert_reply()
            else:
                move = walker(lake.rows, lake.pos)
                reply = f"<action>{move}</action>" if move else None
            if reply is None:
                break
            _, _, terminated, truncated, info = env.step(reply)
            done = terminated or truncated
        outcomes[task.id] = bool(info.get("success"))
    env.close()
    return outcomes


def run_outcomes(run_dir: Path) -> dict[str, dict[str, bool]]:
    """A run's first and last held-out evaluations: folder name -> success per map id."""
    evals = sorted(d for d in (run_dir / "eval").iterdir() if (d / "trajectories.jsonl").exists() and d.name != "before-sft")
    found = {}
    for folder in (evals[0], evals[-1]) if evals else ():
        with open(folder / "trajectories.jsonl") as f:
            found[folder.name] = {t["task_id"]: bool(t["success"]) for t in map(json.loads, f)}
    return found


def agreement(policy: dict[str, bool], walker: dict[str, bool]) -> str:
    """How many of the walker's won and lost maps ``policy`` won."""
    wins = [policy[m] for m in policy if walker[m]]
    losses = [policy[m] for m in policy if not walker[m]]
    return f"{sum(wins)} of its {len(wins)} wins, {sum(losses)} of its {len(losses)} losses"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="examples/main.yaml", help="the run config whose env options to use")
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="run folders to compare map by map")
    args = parser.parse_args()
    with open(args.config) as f:
        env_kwargs = yaml.safe_load(f)["env"].get("kwargs", {})
    walkers: dict[str, Walker | None] = {
        "goal-ward, hole-blind (down/right first)": goalward(("down", "right", "up", "left"), look_ahead=False),
        "goal-ward, hole-blind (up/left first)": goalward(("up", "left", "down", "right"), look_ahead=False),
        "goal-ward, hole-aware (down/right first)": goalward(("down", "right", "up", "left"), look_ahead=True),
        "solver (the expert)": None,
    }
    outcomes = {name: play(env_kwargs, walker) for name, walker in walkers.items()}
    for name, per_map in outcomes.items():
        ci = bootstrap_mean_ci([float(o) for o in per_map.values()])  # the CI the runs print, over maps
        print(f"{name}: held-out success {ci.mean:.1%} [{ci.low:.1%}, {ci.high:.1%}] on {len(per_map)} maps")
    for run in args.runs:
        for step, policy in run_outcomes(run).items():
            print(f"{run} {step}: won {sum(policy.values())} of {len(policy)} maps")
            for name, per_map in list(outcomes.items())[:-1]:  # not the solver: it wins them all
                print(f"  vs {name}: {agreement(policy, per_map)}")


if __name__ == "__main__":
    main()
