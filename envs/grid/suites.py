"""The grid-puzzle suites: generated levels frozen as JSONL files in ``envs/grid/data``.

The files are the source of truth (a change to a generator never changes a published task);
``python -m turngym.envs.grid.suites`` regenerates them from fixed seeds. Each task carries
its shortest solution in ``answer`` (the demonstrations ``turngym sft`` learns from).

Every loaded suite also carries its generator (``TaskSuite.generator``, seed -> task, the same
function that built the files), so training draws fresh levels from an unbounded stream
(``turngym.envs.tasks.TaskStream``) while the test split stays frozen. The test splits hold 500
levels: enough that a 10-point change in held-out success lies outside its 95% interval.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from turngym.envs.grid.frozenlake import generate_map
from turngym.envs.grid.sokoban import generate_level
from turngym.envs.tasks import Task, TaskSuite, content_hash

DATA = Path(__file__).parent / "data"
SPLITS = {"train": (200, 0), "test": (500, 1_000_000)}  # count, seed offset (disjoint seeds)

SOKOBAN = {"sokoban-6x6-1": (6, 6, 1), "sokoban-7x7-2": (7, 7, 2), "sokoban-8x8-3": (8, 8, 3)}
FROZENLAKE = {"frozenlake-4x4": 4, "frozenlake-6x6": 6}


def sokoban_task(seed: int, name: str) -> Task:
    """The level generated from ``seed`` for suite ``name`` (id and split set by the caller)."""
    h, w, boxes = SOKOBAN[name]
    level, solution = generate_level(seed, h, w, boxes)
    return Task(id=f"{name}-seed-{seed}", answer=solution,
                metadata={"board": level.render(), "seed": seed, "optimal_moves": len(solution)})


def frozenlake_task(seed: int, name: str) -> Task:
    """The map generated from ``seed`` for suite ``name`` (id and split set by the caller)."""
    rows, path = generate_map(seed, FROZENLAKE[name])
    return Task(id=f"{name}-seed-{seed}", answer=path, metadata={"map": rows, "seed": seed, "optimal_moves": len(path)})


GENERATORS = {**{name: partial(sokoban_task, name=name) for name in SOKOBAN},
              **{name: partial(frozenlake_task, name=name) for name in FROZENLAKE}}


def build_suite(name: str) -> TaskSuite:
    """The frozen splits: consecutive seeds from each split's offset, no level twice (within a
    split or across splits)."""
    generator = GENERATORS[name]
    tasks: list[Task] = []
    seen: set[str] = set()
    for split, (count, offset) in SPLITS.items():
        seed, made = offset, 0
        while made < count:
            task = generator(seed)
            key = content_hash(task)
            if key not in seen:
                seen.add(key)
                tasks.append(task.model_copy(update={"id": f"{name}-{split}-{made:04d}", "split": split}))
                made += 1
            seed += 1
    return TaskSuite(name, tasks, generator=generator)


def _load(name: str) -> TaskSuite:
    suite = TaskSuite.from_jsonl(DATA / f"{name}.jsonl", name=name)
    suite.generator = GENERATORS[name]
    return suite


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
    for name in GENERATORS:
        build_suite(name).to_jsonl(DATA / f"{name}.jsonl")


if __name__ == "__main__":
    main()
