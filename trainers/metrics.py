"""Run metrics: JSONL always, TensorBoard by default, Weights & Biases when asked, and a PNG
of the curves at the end of a run."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "read_metrics", "plot_metrics"]

log = logging.getLogger(__name__)

#: The curves of the end-of-run plot: (title, metric keys drawn on that panel).
PLOT_PANELS: list[tuple[str, list[str]]] = [
    ("reward", ["rollout/reward_mean"]),
    ("success", ["rollout/success_rate", "eval/success_rate"]),
    ("KL to reference", ["train/kl"]),
    ("entropy", ["train/entropy"]),
    ("clip fraction", ["train/clipfrac"]),
    ("turns per episode", ["rollout/turns_mean"]),
]


class MetricsLogger:
    """Writes each step's metrics to ``metrics.jsonl`` (appending, so a resumed run continues
    the same file) and to TensorBoard / W&B when enabled."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, wandb: bool = False, config: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
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
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
