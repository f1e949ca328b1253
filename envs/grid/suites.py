"""The grid-puzzle suites: generated levels frozen as JSONL files in ``envs/grid/data``.

The files are the source of truth (a change to a generator never changes a published task);
``python -m turngym.envs.grid.suites`` regenerates them from fixed seeds. Each task carries
its shortest solution in ``answer`` (the demonstrations ``turngym sft`` learns from).
"""

from __future__ import annotations

from pathlib import Path

from turngym.envs.grid.frozenlake import generate_map
from turngym.envs.grid.sokoban import generate_level
from turngym.envs.tasks import Task, TaskSuite

DATA = Path(__file__).parent / "data"
SPLITS = {"train": (200, 0), "test": (100, 1_000_000)}  # count, seed offset (disjoint seeds)

SOKOBAN = {"sokoban-6x6-1": (6, 6, 1), "sokoban-7x7-2": (7, 7, 2), "sokoban-8x8-3": (8, 8, 3)}
FROZENLAKE = {"frozenlake-4x4": 4, "frozenlake-6x6": 6}


def build_sokoban(name: str) -> TaskSuite:
    h, w, boxes = SOKOBAN[name]
    tasks, seen = [], set()
    for split, (count, offset) in SPLITS.items():
        seed = offset
        while sum(t.split == split for t in tasks) < count:
            level, solution = generate_level(seed, h, w, boxes)
            board = level.render()
            if board not in seen:  # no level appears twice, nor in both splits
                seen.add(board)
                i = sum(t.split == split for t in tasks)
                tasks.append(Task(id=f"{name}-{split}-{i:04d}", split=split, answer=solution,
                                  metadata={"board": board, "seed": seed, "optimal_moves": len(solution)}))
            seed += 1
    return TaskSuite(name, tasks)


def build_frozenlake(name: str) -> TaskSuite:
    size = FROZENLAKE[name]
    tasks, seen = [], set()
    for split, (count, offset) in SPLITS.items():
        seed = offset
        while sum(t.split == split for t in tasks) < count:
            rows, path = generate_map(seed, size)
            if tuple(rows) not in seen:
                seen.add(tuple(rows))
                i = sum(t.split == split for t in tasks)
                tasks.append(Task(id=f"{name}-{split}-{i:04d}", split=split, answer=path,
                                  metadata={"map": rows, "seed": seed, "optimal_moves": len(path)}))
            seed += 1
    return TaskSuite(name, tasks)


def _load(name: str) -> TaskSuite:
    return TaskSuite.from_jsonl(DATA / f"{name}.jsonl", name=name)


def load_sokoban_6x6_1() -> TaskSuite:
    return _load("sokoban-6x6-1")


def load_sokoban_7x7_2() -> TaskSuite:
    return _load("sokoban-7x7-2")


def load_sokoban_8x8_3() -> TaskSuite:
    return _load("sokoban-8x8-3")


def load_frozenlake_4x4() -> TaskSuite:
    return _load("frozenlake-4x4")


def load_frozenlake_6x6() -> TaskSuite:
    return _load("frozenlake-6x6")


def main() -> None:
    for name in SOKOBAN:
        build_sokoban(name).to_jsonl(DATA / f"{name}.jsonl")
    for name in FROZENLAKE:
        build_frozenlake(name).to_jsonl(DATA / f"{name}.jsonl")


if __name__ == "__main__":
    main()
