"""The search-world suites: generated questions over generated worlds, test worlds frozen.

Suites ``searchworld-1hop``, ``-2hop``, ``-3hop`` (every question needs that many passages) and
``searchworld-mixed`` (1 to 3 hops, a third each). A task carries its whole world: ``metadata``
holds the passages (``[id, title, text]``), the chain followed, the gold support
(``supporting_ids`` / ``supporting_titles``, as in the ``search-multihop`` suite) and ``hops``;
``answer`` is the gold answer. So a frozen task never changes when the generator does, and a
task's content hash covers its world.

The files in ``data/`` are the source of truth for the frozen splits: ``test`` holds 300
questions, three from each of 100 worlds of the ``"test"`` namespace; ``train`` holds 100
questions from 100 worlds of the ``"train"`` namespace. The suites also carry their generator
(seed -> a question over a fresh ``"train"`` world), so training draws an unbounded stream of
new worlds (:class:`~turngym.envs.tasks.TaskStream`) and never a test world.

``python -m turngym.envs.searchworld.suites`` rebuilds the files from fixed seeds.
"""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

from turngym.envs.search.corpus import load_task_file
from turngym.envs.searchworld.world import make_question, make_world
from turngym.envs.tasks import Task, TaskSuite, content_hash

__all__ = ["SUITES", "GENERATORS", "world_task", "build_suite", "load"]

DATA = Path(__file__).parent / "data"
SUITES = {"searchworld-1hop": (1,), "searchworld-2hop": (2,), "searchworld-3hop": (3,),
          "searchworld-mixed": (1, 2, 3)}
"""Suite name -> the hop counts its questions have."""
TEST_WORLDS, QUESTIONS_PER_TEST_WORLD, TRAIN_TASKS = 100, 3, 100


def world_task(seed: int, index: int, hops: tuple[int, ...], namespace: str = "train") -> Task:
    """Question ``index`` about the world ``(namespace, seed)``; its hop count is drawn from
    ``hops`` (id and split are set by the caller)."""
    world = make_world(seed, namespace)
    rng = random.Random(f"searchworld-question:{namespace}:{seed}:{index}:{hops}")
    q = make_question(world, rng.choice(hops) if len(hops) > 1 else hops[0], rng)
    by_title = {p.title: p.id for p in world.passages}
    meta = {
        "world": world.fingerprint,
        "passages": [[p.id, p.title, p.text] for p in world.passages],
        "hops": q.hops,
        "chain": list(q.chain),
        "supporting_titles": list(q.support),
        "supporting_ids": [by_title[name] for name in q.support],
        "seed": seed,
    }
    return Task(id=f"world-{namespace}-{seed}-q{index}", prompt=q.text, answer=[q.answer], metadata=meta)


def _generate(seed: int, hops: tuple[int, ...]) -> Task:
    return world_task(seed, 0, hops, "train")


GENERATORS = {name: partial(_generate, hops=hops) for name, hops in SUITES.items()}


def build_suite(name: str) -> TaskSuite:
    """The frozen splits: 100 train questions (one per train world), 300 test questions (three
    per test world, no question twice)."""
    hops = SUITES[name]
    tasks: list[Task] = []
    seen: set[str] = set()

    def add(task: Task, split: str, made: int) -> bool:
        key = content_hash(task)
        if key in seen:
            return False
        seen.add(key)
        tasks.append(task.model_copy(update={"id": f"{name}-{split}-{made:04d}", "split": split}))
        return True

    made = 0
    for seed in range(TRAIN_TASKS):
        made += add(world_task(seed, 0, hops, "train"), "train", made)
    made = 0
    for seed in range(TEST_WORLDS):
        index = 0
        for _ in range(QUESTIONS_PER_TEST_WORLD):  # a mixed test world asks 1, 2 and 3 hops
            task = None
            while task is None or not add(task, "test", made):
                one = (hops[len(tasks) % len(hops)],) if len(hops) > 1 else hops
                task, index = world_task(seed, index, one, "test"), index + 1
            made += 1
    return TaskSuite(name, tasks, generator=GENERATORS[name])


def load(name: str) -> TaskSuite:
    suite = load_task_file(DATA / f"{name}.jsonl.gz", name=name)
    suite.generator = GENERATORS[name]
    return suite


def load_1hop() -> TaskSuite:
    return load("searchworld-1hop")


def load_2hop() -> TaskSuite:
    return load("searchworld-2hop")


def load_3hop() -> TaskSuite:
    return load("searchworld-3hop")


def load_mixed() -> TaskSuite:
    return load("searchworld-mixed")


def main() -> None:
    import gzip

    DATA.mkdir(parents=True, exist_ok=True)
    for name in SUITES:
        suite = build_suite(name)
        path = DATA / f"{name}.jsonl.gz"
        with gzip.GzipFile(path, "wb", mtime=0) as fh:  # mtime=0: the same bytes on every rebuild
            fh.write("".join(t.model_dump_json() + "\n" for t in suite.tasks).encode())
        print(f"{path}: {suite.splits()}")


if __name__ == "__main__":
    main()
