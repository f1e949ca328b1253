"""The resumable evaluation loop.

``evaluate(config, runner, out_dir)`` plans one :class:`WorkItem` per (env, task of the split,
run index), skips the items whose trajectory is already in ``out_dir/trajectories.jsonl``,
hands the rest to ``runner`` in batches, appends every trajectory it gets back to
``trajectories.jsonl`` durably (write, flush, fsync — one line per episode), then computes the
statistics and writes ``results.json`` and ``report.html``. A killed evaluation, started again
with the same folder, continues where it stopped without re-running finished episodes, and its
results equal those of an uninterrupted one (seeds depend only on the item, never on the order
or on what already ran).

The episode runner contract (:data:`EpisodeRunner`)
    ``runner(items) -> Iterable[Trajectory]``: exactly one trajectory per item, **in the order
    of** ``items``. A generator that yields each episode as soon as it is done lets the loop
    save it at once; a rollout engine that returns a list at the end of a batch works too (a
    kill then loses at most that batch). Each item carries the seed its episode must use
    (``env.reset(seed=item.seed, options={"task": item.task_id})``, and the policy's sampling
    seed). The loop stamps ``traj_id``, ``env_id``, ``task_id`` and ``seed`` from the item.

``trajectories.jsonl`` lines are :class:`~turngym.agents.trajectory.Trajectory` JSON with one
extra key, ``run`` (the run index), so :func:`turngym.agents.trajectory.read_jsonl` reads the
file unchanged. A line torn by a kill mid-write is dropped on resume; a corrupt line elsewhere is
moved aside (its episode runs again), never the lines after it.

Training's periodic evaluation calls :func:`evaluate` with a runner built on its own policy and
a fresh folder per evaluation step, and so writes the same files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from turngym.agents.evaluation.results import (
    EnvSummary,
    EvalResults,
    ResultsError,
    env_summary,
    suite_stats,
    write_results,
)
from turngym.agents.trajectory import Trajectory, json_line

__all__ = [
    "EpisodeRunner",
    "EvalConfig",
    "EvalConfigError",
    "TrajectoryStore",
    "WorkItem",
    "evaluate",
    "item_seed",
    "plan_work",
    "policy_runner",
    "split_tasks",
]

log = logging.getLogger(__name__)

TRAJECTORIES = "trajectories.jsonl"
RESULTS = "results.json"
REPORT = "report.html"
CONFIG = "eval_config.json"


class EvalConfigError(ValueError):
    """An evaluation that cannot run as asked (one clear sentence)."""


class WorkItem(BaseModel):
    """One episode to run: run ``run`` of task ``task_id`` in environment ``env_id``."""

    model_config = ConfigDict(frozen=True)

    env_id: str
    task_id: str
    run: int
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.env_id, self.task_id, self.run)

    @property
    def traj_id(self) -> str:
        return f"{self.env_id}|{self.task_id}|run{self.run}"


#: ``runner(items) -> one Trajectory per item, in order`` (see the module docstring).
EpisodeRunner = Callable[[Sequence[WorkItem]], Iterable[Trajectory]]


class EvalConfig(BaseModel):
    """What to evaluate. Flat; every field documented."""

    envs: list[str] = Field(min_length=1)
    """Environment ids, e.g. ``["turngym/Sokoban-v0"]``."""
    split: str = "test"
    """The suite split to evaluate on (frozen held-out split by default)."""
    policy: str
    """The policy spec; recorded in the results and checked on resume."""
    runs: int = Field(default=4, ge=1)
    """Runs per task (independent episodes with different seeds)."""
    ks: list[int] = Field(default_factory=lambda: [1])
    """``k`` values for pass@k and pass^k."""
    max_tasks: int | None = Field(default=None, ge=1)
    """Evaluate only the first ``max_tasks`` tasks of each split (in the suite's frozen order)."""
    seed: int = 0
    """Base seed: episode seeds and the bootstrap derive from it."""
    batch_size: int = Field(default=64, ge=1)
    """Work items handed to the runner per call."""
    confidence: float = Field(default=0.95, gt=0, lt=1)
    """Confidence level of the intervals."""
    bootstrap_samples: int = Field(default=2000, ge=100)
    """Bootstrap resamples."""
    report: bool = True
    """Write ``report.html`` beside ``results.json``."""


def policy_runner(policy: Any, options: dict[str, Any]) -> EpisodeRunner:
    """An episode runner that runs a :class:`~turngym.agents.policy.Policy` with the rollout engine.

    Every item becomes one episode (its env, task and seed), all items of a batch that share an
    environment run together through one engine (one batched ``generate`` per round). Options:
    ``tokenizer`` (default: ``policy.tokenizer`` when the policy has one, else chat messages),
    ``rollout`` (a :class:`~turngym.agents.rollout.RolloutConfig`; evaluation defaults to greedy
    decoding) and ``env_kwargs`` (constructor arguments of the environments).
    """
    from turngym.agents.rollout import EpisodeSpec, RolloutConfig, RolloutEngine

    tokenizer = options.get("tokenizer", getattr(policy, "tokenizer", None))
    config = options.get("rollout") or RolloutConfig(temperature=0.0, progress=False)
    env_kwargs = options.get("env_kwargs") or {}

    def run(items: Sequence[WorkItem]) -> list[Trajectory]:
        out: dict[int, Trajectory] = {}
        by_env: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_env.setdefault(item.env_id, []).append(i)
        for env_id, indices in by_env.items():
            engine = RolloutEngine(policy, env_id, tokenizer, config, env_kwargs=env_kwargs)
            specs = [EpisodeSpec(task=items[i].task_id, seed=items[i].seed, group_id=items[i].task_id,
                                 traj_id=items[i].traj_id) for i in indices]
            for i, traj in zip(indices, engine.run_episodes(specs)):
                out[i] = traj
        return [out[i] for i in range(len(items))]

    return run


def item_seed(base_seed: int, env_id: str, task_id: str, run: int) -> int:
    """A seed that depends only on the item (stable across processes, orders and resumes)."""
    digest = hashlib.blake2b(f"{base_seed}\x00{env_id}\x00{task_id}\x00{run}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def split_tasks(env_id: str, split: str) -> tuple[str, list[str]]:
    """The suite name and the task ids of ``split`` of the environment's suite."""
    import turngym

    env = turngym.make(env_id)
    try:
        base = env.unwrapped
        suite = getattr(base, "suite", None)
        if suite is None:
            raise EvalConfigError(f"environment {env_id!r} has no task suite to evaluate on")
        return suite.name, [task.id for task in suite.split(split)]
    finally:
        env.close()


def plan_work(config: EvalConfig) -> tuple[list[WorkItem], dict[str, tuple[str, list[str]]]]:
    """All work items, run-major (every task's run 0, then run 1, ...), and each env's tasks.

    Run-major order means a stopped evaluation has whole single-run passes over the suite.
    """
    suites: dict[str, tuple[str, list[str]]] = {}
    for env_id in dict.fromkeys(config.envs):
        name, task_ids = split_tasks(env_id, config.split)
        suites[env_id] = (name, task_ids[: config.max_tasks] if config.max_tasks else task_ids)
    items = [
        WorkItem(env_id=env_id, task_id=task_id, run=run, seed=item_seed(config.seed, env_id, task_id, run))
        for run in range(config.runs)
        for env_id, (_, task_ids) in suites.items()
        for task_id in task_ids
    ]
    return items, suites


class TrajectoryStore:
    """``trajectories.jsonl`` as an append-only, crash-safe record of finished episodes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[tuple[str, str, int], Trajectory] = {}
        self._load()

    def _load(self) -> None:
        """Every readable line becomes a record. A line that is not a trajectory is moved to
        ``trajectories.jsonl.unreadable`` (its episode runs again; the lines after it stay); a
        last line torn by a kill mid-write is dropped, so the next append starts a line of its own."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        good: list[bytes] = []
        bad: list[bytes] = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                run = int(record.pop("run"))
                traj = Trajectory.model_validate(record)
            except (ValueError, KeyError, TypeError, AttributeError):
                bad.append(raw)
                continue
            self.records[(traj.env_id, traj.task_id, run)] = traj
            good.append(raw)
        if torn:
            log.warning("%s: dropping a torn last line (%d bytes)", self.path, len(torn))
        if bad:
            aside = self.path.with_name(self.path.name + ".unreadable")
            log.warning("%s: %d unreadable line(s) moved to %s; their episodes run again", self.path, len(bad), aside)
            with aside.open("ab") as fh:
                fh.write(b"".join(line + b"\n" for line in bad))
        if torn or bad:  # rewritten whole and renamed into place: a kill now loses nothing
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_bytes(b"".join(line + b"\n" for line in good))
            tmp.replace(self.path)

    def __contains__(self, key: object) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, run: int, traj: Trajectory) -> None:
        line = json_line(traj, run=run) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.records[(traj.env_id, traj.task_id, run)] = traj

    def episodes(self, env_id: str) -> Iterator[tuple[int, Trajectory]]:
        for (env, _task, run), traj in self.records.items():
            if env == env_id:
                yield run, traj


def _batches(items: Sequence[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# Fields that must match for a folder to be resumed: they change what an episode means.
_IDENTITY_FIELDS = ("policy", "split", "seed")


def _check_or_write_config(config: EvalConfig, out: Path) -> None:
    path = out / CONFIG
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = {}
        for field in _IDENTITY_FIELDS:
            if field in previous and previous[field] != getattr(config, field):
                raise EvalConfigError(
                    f"{out} holds an evaluation with {field}={previous[field]!r}, not {getattr(config, field)!r}; "
                    "use another --out folder"
                )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)


def _stamp(item: WorkItem, traj: Any) -> Trajectory:
    if not isinstance(traj, Trajectory):
        raise TypeError(f"the episode runner returned {type(traj).__name__}, not a Trajectory")
    if traj.task_id and traj.task_id != item.task_id:
        raise RuntimeError(
            f"the episode runner returned task {traj.task_id!r} for item {item.traj_id!r}; "
            "runners must return one trajectory per item, in order"
        )
    return traj.model_copy(update={"traj_id": item.traj_id, "env_id": item.env_id, "task_id": item.task_id, "seed": item.seed})


def evaluate(
    config: EvalConfig,
    runner: EpisodeRunner,
    out_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResults:
    """Run (or resume) the evaluation into ``out_dir``; return and write its results.

    ``progress(done, total)`` is called after every saved episode.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_or_write_config(config, out)
    items, suites = plan_work(config)
    store = TrajectoryStore(out / TRAJECTORIES)
    todo = [item for item in items if item.key not in store]
    done = len(items) - len(todo)
    if done:
        log.info("resuming %s: %d of %d episodes already done", out, done, len(items))
    for batch in _batches(todo, config.batch_size):
        produced = 0
        for item, traj in zip(batch, runner(batch)):
            store.append(item.run, _stamp(item, traj))
            produced += 1
            done += 1
            if progress:
                progress(done, len(items))
        if produced != len(batch):
            raise RuntimeError(f"the episode runner returned {produced} trajectories for {len(batch)} work items")

    results = compute_results(config, suites, store)
    write_results(results, out / RESULTS)
    if config.report:
        from turngym.agents.evaluation.report import write_report

        write_report(results, store.records, out / REPORT)
    return results


def compute_results(
    config: EvalConfig,
    suites: dict[str, tuple[str, list[str]]],
    store: TrajectoryStore,
) -> EvalResults:
    """Statistics over the planned items only (a folder may hold more, from a larger plan)."""
    summaries: list[EnvSummary] = []
    pooled_tasks = []
    pooled_runs: dict[int, list[float]] = {}
    pooled_count = 0
    for env_id, (suite_name, task_ids) in suites.items():
        wanted = set(task_ids)
        episodes = [(run, t) for run, t in store.episodes(env_id) if t.task_id in wanted and run < config.runs]
        if not episodes:
            raise ResultsError(f"no finished episodes for {env_id}")
        summary, per_run = env_summary(
            env_id, suite_name, config.split, episodes, config.ks, task_order=task_ids,
            level=config.confidence, samples=config.bootstrap_samples, seed=config.seed,
        )
        summaries.append(summary)
        pooled_tasks += [t.model_copy(update={"task_id": f"{env_id}/{t.task_id}"}) for t in summary.tasks]
        for run, values in per_run.items():
            pooled_runs.setdefault(run, []).extend(values)
        pooled_count += len(episodes)
    overall = None
    if len(summaries) > 1:
        overall = suite_stats(pooled_tasks, config.ks, pooled_runs, pooled_count,
                              level=config.confidence, samples=config.bootstrap_samples, seed=config.seed)
    return EvalResults(
        policy=config.policy,
        split=config.split,
        runs=config.runs,
        ks=config.ks,
        seed=config.seed,
        confidence=config.confidence,
        bootstrap_samples=config.bootstrap_samples,
        envs=summaries,
        overall=overall,
    )
