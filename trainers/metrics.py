"""Run metrics: JSONL always, TensorBoard by default, Weights & Biases when asked, and a PNG
of the curves at the end of a run."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "nothing_trained", "read_metrics", "plot_metrics", "truncate_metrics"]

log = logging.getLogger(__name__)

#: The curves of the end-of-run plot: (title, metric keys drawn on that panel).
PLOT_PANELS: list[tuple[str, list[str]]] = [
    ("reward", ["rollout/reward_mean"]),
    ("success: training rollouts vs held-out (95% CI)", ["rollout/success_rate", "eval/success_rate"]),
    ("KL to reference", ["train/kl"]),
    ("entropy", ["train/entropy"]),
    ("clip fraction", ["train/clipfrac"]),
    ("turns per episode", ["rollout/turns_mean"]),
]


class MetricsLogger:
    """Writes each step's metrics to ``metrics.jsonl`` (appending, so a resumed run continues
    the same file) and to TensorBoard / W&B when enabled.

    ``resume_step``: the step of the checkpoint a resumed run continues from. What the run
    logged after it (steps the resumed run is about to log again) is forgotten first: those
    rows of ``metrics.jsonl`` are dropped, and TensorBoard purges its events from the next step
    on, so every step is in the logs once."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, wandb: bool = False, config: dict[str, Any] | None = None,
                 resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if resume_step is not None:
            dropped = truncate_metrics(self.path, resume_step)
            if dropped:
                log.info("resuming at step %d: %d metric rows logged after it dropped", resume_step, dropped)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = resume_step + 1 if resume_step is not None else None
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge)
            except ImportError:
                log.warning("TensorBoard is not installed; metrics go to metrics.jsonl only")
        if wandb:
            try:
                import wandb as wandb_lib

                self._wandb = wandb_lib.init(project="turngym", dir=str(self.run_dir), config=config or {}, resume="allow")
            except ImportError:
                log.warning("wandb is not installed (pip install wandb); metrics go to metrics.jsonl only")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **clean}) + "\n")
        if self._tb is not None:
            for key, value in clean.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of ``metrics.jsonl`` (a line a kill cut short is left out)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in rows if isinstance(r, dict) and "step" in r]


def truncate_metrics(path: str | Path, step: int) -> int:
    """Drop the rows of ``metrics.jsonl`` at ``path`` logged after ``step`` (the file is rewritten
    and renamed into place); returns how many were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    rows = read_metrics(path)
    kept = [r for r in rows if r["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    tmp.replace(path)
    return len(rows) - len(kept)


def nothing_trained(records: Iterable[dict[str, float]]) -> str | None:
    """Why a run's steps updated nothing, or None when at least one step trained on a row.

    Every training episode ending in an environment error, or every group's rewards being
    equal (so every advantage is zero) for the whole run: either way no gradient ever flowed,
    and the run must not look like a success."""
    steps = [r for r in records if "train/rows" in r]
    if not steps or any(r["train/rows"] > 0 for r in steps):
        return None
    episodes = sum(r.get("rollout/episodes", 0) for r in steps)
    errors = sum(r.get("rollout/error_episodes", 0) for r in steps)
    if episodes and errors >= episodes:
        return (f"every one of the {int(episodes)} training episodes ended in an environment error, so no step "
                "trained on anything (the trajectories in eval/ hold the errors)")
    return (f"in all {len(steps)} step(s) every group had equal rewards, so every advantage was zero and no step "
            "updated the model: make the rewards differ within a group (a larger rollout.group_size, a higher "
            "rollout.temperature, easier tasks, or a warm start with sft.enabled=true)")


def plot_metrics(records: Iterable[dict[str, float]], out: str | Path, title: str = "") -> Path:
    """A PNG with one panel per curve family (reward/success, KL, entropy, clip fraction, turns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (name, keys) in zip(axes.flat, PLOT_PANELS):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=key)
        band = [(r["step"], r["eval/success_ci_low"], r["eval/success_ci_high"]) for r in records
                if "eval/success_ci_low" in r and "eval/success_rate" in keys]
        if band:  # held-out success is a sample: show its interval, not only its mean
            steps, lows, highs = zip(*band)
            ax.fill_between(steps, lows, highs, alpha=0.2, color="tab:orange")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=ax.transAxes, color="gray")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
