"""``report.html``: a self-contained page people can read, offline, with no server.

Everything is inline: CSS, a few lines of JS (a filter for the trajectory viewer), and SVG plots
drawn here (success by task, distribution of turns) — no CDN, no external file. The page holds
a summary table (``#summary``), one per-task table per environment (``table.per-task``), and a
trajectory viewer: each trajectory is a ``<details class="traj">`` whose turns are
``<details class="turn">`` showing the prompt, the reply, the tool calls and their output, the
reward, the anchor, and the advantage when the trajectory comes from training.

Long texts are cut to ``max_chars`` and at most ``max_trajectories`` trajectories are embedded
(failures first, so the viewer shows what went wrong), so the page stays small for big suites.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from turngym.agents.evaluation.results import EvalResults, SuiteStats
from turngym.agents.trajectory import Trajectory

__all__ = ["render_report", "write_report", "svg_bars", "svg_histogram"]

_SUCCESS, _FAIL, _GRID, _TEXT = "#2f855a", "#c53030", "#e2e8f0", "#2d3748"


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def svg_bars(labels: Sequence[str], values: Sequence[float], title: str, width: int = 720, height: int = 220) -> str:
    """A bar chart of values in [0, 1] (one bar per label, each with a hover title)."""
    left, bottom, top = 36, 24, 24
    plot_w, plot_h = width - left - 8, height - bottom - top
    n = max(len(values), 1)
    bar_w = plot_w / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title>{escape(title)}</title>',
             f'<text x="{left}" y="15" font-size="13" fill="{_TEXT}">{escape(title)}</text>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="{_TEXT}">{tick:g}</text>')
    for i, (label, value) in enumerate(zip(labels, values)):
        h = plot_h * max(0.0, min(1.0, value))
        x = left + i * bar_w
        color = _SUCCESS if value >= 0.5 else _FAIL
        parts.append(f'<rect class="bar" x="{x + bar_w * 0.1:.2f}" y="{top + plot_h - h:.2f}" width="{bar_w * 0.8:.2f}" '
                     f'height="{h:.2f}" fill="{color}"><title>{escape(label)}: {value:.3f}</title></rect>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="11" text-anchor="middle" '
                 f'fill="{_TEXT}">tasks (sorted by success)</text></svg>')
    return "".join(parts)


def svg_histogram(successes: Sequence[int], failures: Sequence[int], title: str, width: int = 720, height: int = 220) -> str:
    """Stacked histogram of turns per episode: successes and failures, one bar per turn count."""
    left, bottom, top = 36, 24, 24
    plot_w, plot_h = width - left - 8, height - bottom - top
    hi = max([*successes, *failures, 0])
    counts = [(t, successes.count(t), failures.count(t)) for t in range(hi + 1)]
    peak = max([s + f for _, s, f in counts] + [1])
    bar_w = plot_w / len(counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title>{escape(title)}</title>',
             f'<text x="{left}" y="15" font-size="13" fill="{_TEXT}">{escape(title)} '
             f'(<tspan fill="{_SUCCESS}">success</tspan> / <tspan fill="{_FAIL}">failure</tspan>)</text>',
             f'<line x1="{left}" x2="{width - 8}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{_TEXT}"/>',
             f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end" fill="{_TEXT}">{peak}</text>']
    label_every = max(1, len(counts) // 15)
    for i, (turns, s, f) in enumerate(counts):
        x = left + i * bar_w
        hs, hf = plot_h * s / peak, plot_h * f / peak
        y = top + plot_h
        for count, h, color, kind in ((s, hs, _SUCCESS, "success"), (f, hf, _FAIL, "failure")):
            if count:
                y -= h
                parts.append(f'<rect class="bar" x="{x + bar_w * 0.1:.2f}" y="{y:.2f}" width="{bar_w * 0.8:.2f}" height="{h:.2f}" '
                             f'fill="{color}"><title>{turns} turns, {kind}: {count}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 12}" font-size="10" text-anchor="middle" '
                         f'fill="{_TEXT}">{turns}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 2}" font-size="11" text-anchor="middle" '
                 f'fill="{_TEXT}">turns per episode</text></svg>')
    return "".join(parts)


def _clip(text: Any, max_chars: int) -> str:
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=repr)
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n… [{len(text) - max_chars} more characters]"


def _summary_row(name: str, suite: str, stats: SuiteStats, ks: Sequence[int]) -> dict[str, Any]:
    ci = stats.pass1
    return {
        "name": name, "suite": suite, "tasks": stats.num_tasks, "episodes": stats.num_episodes,
        "pass1": _fmt(ci.mean), "ci": f"[{_fmt(ci.low)}, {_fmt(ci.high)}]",
        "run_std": _fmt(stats.pass1_run_std),
        "pass_at_k": [_fmt(stats.pass_at_k.get(k)) for k in ks],
        "pass_hat_k": [_fmt(stats.pass_hat_k.get(k)) for k in ks],
        "reward": _fmt(stats.mean_reward), "turns": _fmt(stats.mean_turns, 2), "tool_calls": _fmt(stats.mean_tool_calls, 2),
        "errors": _fmt(stats.error_rate), "truncated": _fmt(stats.truncated_rate), "timeouts": _fmt(stats.timeout_rate),
    }


def _trajectory_view(run: int, traj: Trajectory, max_chars: int) -> dict[str, Any]:
    return {
        "env_id": traj.env_id, "task_id": traj.task_id, "run": run, "success": traj.success, "status": traj.status,
        "error": traj.error, "reward": _fmt(traj.total_reward), "num_turns": len(traj.turns),
        "initial_observation": _clip(traj.initial_observation, max_chars),
        "turns": [
            {
                "step": turn.step, "prompt": _clip(turn.prompt_text, max_chars), "reply": _clip(turn.response_text, max_chars),
                "tool_calls": _clip(turn.tool_calls, max_chars) if turn.tool_calls else "",
                "observation": _clip(turn.observation, max_chars), "reward": _fmt(turn.reward),
                "anchor": "" if turn.anchor is None else _clip(turn.anchor, max_chars),
                "advantage": None if turn.advantage is None else _fmt(turn.advantage, 4),
                "action_valid": turn.action_valid,
            }
            for turn in traj.turns
        ],
    }


def render_report(
    results: EvalResults,
    trajectories: Mapping[tuple[str, str, int], Trajectory],
    max_trajectories: int = 400,
    max_chars: int = 4000,
) -> str:
    """The HTML text of the report."""
    ks = [k for k in results.ks if k != 1]  # pass@1 = pass^1 has its own column
    summary = [_summary_row(e.env_id, e.suite, e.stats, ks) for e in results.envs]
    if results.overall is not None:
        summary.append(_summary_row("all environments", "", results.overall, ks))
    envs = []
    for env in results.envs:
        ordered = sorted(env.tasks, key=lambda t: t.pass1)
        episodes = [(key[2], t) for key, t in trajectories.items() if key[0] == env.env_id]
        turns_ok = [len(t.turns) for _, t in episodes if t.success]
        turns_bad = [len(t.turns) for _, t in episodes if not t.success]
        envs.append({
            "env_id": env.env_id, "suite": env.suite,
            "bars": svg_bars([t.task_id for t in ordered], [t.pass1 for t in ordered], f"pass@1 by task — {env.env_id}"),
            "hist": svg_histogram(turns_ok, turns_bad, f"turns per episode — {env.env_id}"),
            "tasks": [
                {"task_id": t.task_id, "runs": t.runs, "successes": t.successes, "pass1": _fmt(t.pass1),
                 "pass_at_k": [_fmt(t.pass_at_k.get(k)) for k in ks], "pass_hat_k": [_fmt(t.pass_hat_k.get(k)) for k in ks],
                 "reward": _fmt(t.mean_reward), "turns": _fmt(t.mean_turns, 2), "tool_calls": _fmt(t.mean_tool_calls, 2),
                 "errors": _fmt(t.error_rate)}
                for t in env.tasks
            ],
        })
    # Failures first: they are what a reader opens the viewer for.
    chosen = sorted(trajectories.items(), key=lambda kv: (kv[1].success, kv[0]))[:max_trajectories]
    views = [_trajectory_view(key[2], traj, max_chars) for key, traj in chosen]
    template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
        resources.files("turngym.agents.evaluation").joinpath("report_template.html").read_text(encoding="utf-8")
    )
    return template.render(results=results, ks=results.ks, kcols=ks, summary=summary, envs=envs, trajectories=views,
                           shown=len(views), total=len(trajectories))


def write_report(
    results: EvalResults,
    trajectories: Mapping[tuple[str, str, int], Trajectory],
    path: str | Path,
    **kwargs: Any,
) -> None:
    """Write ``report.html`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    # a reply can hold lone surrogates (a broken client, an adversary): shown escaped, not a crash
    with tmp.open("w", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(render_report(results, trajectories, **kwargs))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
