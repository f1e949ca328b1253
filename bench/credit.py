"""Credit assignment where it should matter: GRPO vs GiGPO vs Flow-GRPO on a long-horizon grid.

FrozenLake 6x6 with up to 30 turns (``turngym/FrozenLake-6x6-v0``), the tiny-markov model and
the recipe of ``examples/main.yaml`` otherwise. One supervised warm start, sized by steps (so
the seed fixes it; 500 steps: 0% -> 25% held-out), is shared by every run; each estimator x seed is then trained for the same
number of steps, with held-out success (greedy, the first ``--eval-tasks`` test maps) every
``--eval-every`` steps. Run seed s trains on the same generated task stream whatever the
estimator, so runs are paired by seed.

Before training, the warm-started policy's own training rollouts are measured: the share of
turns in GiGPO step groups of size > 1 (rows of one group with equal anchors), the mean
step-group size, and each estimator's advantages on that same batch. During training every
step logs the same diagnostics under ``credit/*`` in the run's ``metrics.jsonl``.

    nice -n 19 env OMP_NUM_THREADS=1 python bench/credit.py --steps 20 --eval-every 5 \
        --eval-tasks 200 --seeds 0 1 2 3 4

Output: ``OUT/warm-start/`` (weights + diagnostics), ``OUT/<estimator>-seed<s>/`` (runs),
``OUT/summary.json``, ``OUT/credit.md`` (tables) and ``OUT/credit.png`` (curves). Resumable:
finished runs are kept, an unfinished one is started again; ``--report-only`` writes the
summary from whatever runs have finished. Several processes may share the work once the warm
start exists (e.g. ``--seeds 0 2 4`` in one and ``--seeds 1 3`` in another, then one
``--report-only`` call with every seed).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from turngym.agents.evaluation.stats import bootstrap_mean_ci
from turngym.config import load_config
from turngym.trainers.config import TrainConfig
from turngym.trainers.estimators import RowBatch, discounted_returns, estimate
from turngym.trainers.rows import estimator_inputs
from turngym.trainers.trainer import Trainer

ESTIMATORS = ["grpo", "gigpo", "flow_grpo"]
PAIRS = [("gigpo", "grpo"), ("flow_grpo", "grpo"), ("gigpo", "flow_grpo")]  # A - B: the question first
DEFAULT_SETTING = [
    "env.id=turngym/FrozenLake-6x6-v0", "env.kwargs={max_turns: 30}",
    # The warm start is sized by steps, not by the clock: every run starts from the same weights
    # whatever the machine's load (examples/main.yaml's 45 s cap gives a different model per load).
    "sft.steps=500", "sft.max_seconds=null", "policy.torch_threads=1",
]
# Two-sided 95% Student t quantiles, df 1..10 (no scipy in the environment); df > 10 uses 2.0.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


# --------------------------------------------------------------------------------------------
# Pure statistics (tests/bench/test_credit.py)
# --------------------------------------------------------------------------------------------


def step_group_stats(group_ids: Sequence[Any], anchors: Sequence[Any],
                     step_returns: Sequence[float] | None = None) -> dict[str, float]:
    """How much content GiGPO's step groups have in one batch of turns.

    A step group is the set of turns of one GRPO group whose anchors (the state before the
    action) are equal — exactly GiGPO's grouping. Returns the share of turns in step groups of
    size > 1 (only those get a step-level advantage), the mean step-group size (over step
    groups) and the turn-weighted mean size (the size of the group an average turn is in).
    With ``step_returns``, also the share of turns in step groups whose discounted returns
    differ (the only ones whose step advantage is nonzero).
    """
    from turngym.envs.core import canonical_anchor

    keys = [(g, canonical_anchor(a)) for g, a in zip(group_ids, anchors, strict=True)]
    if not keys:
        return {"turns": 0, "step_groups": 0, "share_in_multi": math.nan, "mean_size": math.nan,
                "turn_weighted_size": math.nan, **({"share_informative": math.nan} if step_returns is not None else {})}
    table: dict[Any, int] = {}
    codes = np.fromiter((table.setdefault(k, len(table)) for k in keys), dtype=np.int64, count=len(keys))
    sizes = np.bincount(codes)
    out = {"turns": len(keys), "step_groups": len(sizes),
           "share_in_multi": float(np.mean(sizes[codes] > 1)), "mean_size": float(sizes.mean()),
           "turn_weighted_size": float(sizes[codes].mean())}
    if step_returns is not None:
        r = np.asarray(step_returns, dtype=np.float64)
        lo = np.full(len(sizes), np.inf)
        hi = np.full(len(sizes), -np.inf)
        np.minimum.at(lo, codes, r)
        np.maximum.at(hi, codes, r)
        out["share_informative"] = float(np.mean((hi - lo)[codes] > 1e-12))
    return out


def advantage_stats(adv: Sequence[float]) -> dict[str, float]:
    """Variance, mean |A| and the share of nonzero advantages (a zero one has no gradient)."""
    a = np.asarray(adv, dtype=np.float64)
    if a.size == 0:
        return {"var": math.nan, "abs_mean": math.nan, "share_nonzero": math.nan}
    return {"var": float(a.var()), "abs_mean": float(np.abs(a).mean()), "share_nonzero": float(np.mean(a != 0.0))}


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean with a two-sided 95% Student t interval (over seeds); zero width for one value."""
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    if x.size < 2:
        return m, m, m
    t = T975[x.size - 2] if x.size - 1 <= len(T975) else 2.0
    half = t * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, m - half, m + half


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Exact two-sided sign-flip permutation p-value for mean(diffs) = 0 (paired by seed).

    Under the null each paired difference is as likely to have either sign; the p-value is the
    share of the 2^n sign patterns whose |mean| is at least the observed one. With n = 5 the
    smallest possible p is 2/32 = 0.0625: five seeds alone can never reach p < 0.05.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        return math.nan
    observed = abs(d.mean())
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=d.size)))
    means = np.abs(signs @ d) / d.size
    return float(np.mean(means >= observed - 1e-12))


def paired_by_seed(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """A minus B on the seeds both have: mean difference, t interval, sign-flip p, wins/ties."""
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    if not d:
        return {"n": 0}
    m, lo, hi = mean_ci(d)
    return {"n": len(d), "diffs": d, "mean": m, "ci": [lo, hi], "p_sign_flip": sign_flip_p(d),
            "a_better": sum(x > 0 for x in d), "ties": sum(x == 0 for x in d)}


def pooled_task_bootstrap(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]],
                          samples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """A minus B per held-out task, averaged over the seeds both have, with a bootstrap over
    tasks (each task's pair kept together). It holds the task sampling noise, not the
    seed-to-seed noise: read it with the per-seed test."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return {"n_seeds": 0}
    tasks = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    d = np.array([np.mean([a[s][t] - b[s][t] for s in seeds]) for t in tasks])
    ci = bootstrap_mean_ci(d, samples=samples, seed=seed)
    return {"n_seeds": len(seeds), "n_tasks": len(tasks), "mean": ci.mean, "ci": [ci.low, ci.high]}


def steps_to_threshold(points: Sequence[tuple[int, float]], threshold: float) -> int | None:
    """The first evaluated step whose held-out success is >= threshold (None: never)."""
    return next((s for s, v in points if v >= threshold), None)


# --------------------------------------------------------------------------------------------
# Diagnostics on a batch of trajectories
# --------------------------------------------------------------------------------------------


def batch_diagnostics(trajs: Sequence[Any], adv: Sequence[float] | None, gamma: float) -> dict[str, float]:
    """Step-group content of a batch, the GiGPO step component A^S it would get, and (given)
    the advantages actually trained on. A^S is measured whatever the estimator, so a GRPO run
    also shows how much step-level signal it leaves out."""
    inputs = estimator_inputs(trajs)
    if len(inputs["rewards"]) == 0:
        return {}
    batch = RowBatch.build(inputs["rewards"], inputs["group_ids"], inputs["traj_ids"], inputs["steps"])
    returns = discounted_returns(batch.rewards, batch.traj, batch.positions, gamma)
    out = {f"step_groups/{k}": float(v) for k, v in
           step_group_stats(inputs["group_ids"], inputs["anchors"], returns).items()}
    args = (inputs["rewards"], inputs["group_ids"], inputs["traj_ids"], inputs["steps"])
    full = estimate("gigpo", *args, anchors=inputs["anchors"], mode="mean_norm", gamma=gamma)
    episode = estimate("gigpo", *args, anchors=inputs["anchors"], mode="mean_norm", gamma=gamma, omega=0.0)
    out.update({f"gigpo_step_part/{k}": v for k, v in advantage_stats(full - episode).items()})
    # Outcome estimators learn only from groups whose trajectories' returns differ.
    lo = np.full(batch.n_groups, np.inf)
    hi = np.full(batch.n_groups, -np.inf)
    np.minimum.at(lo, batch.traj_group, batch.traj_returns)
    np.maximum.at(hi, batch.traj_group, batch.traj_returns)
    out["groups/share_mixed"] = float(np.mean(hi - lo > 1e-12))
    out["groups/success"] = float(np.mean(batch.traj_returns > 0))
    if adv is not None:
        out.update({f"adv/{k}": v for k, v in advantage_stats(adv).items()})
    return out


def estimator_comparison(trajs: Sequence[Any], options: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each estimator's advantage statistics on the same batch (its options from ``options``)."""
    inputs = estimator_inputs(trajs)
    args = (inputs["rewards"], inputs["group_ids"], inputs["traj_ids"], inputs["steps"])
    return {name: advantage_stats(estimate(name, *args, anchors=inputs["anchors"], **opts))
            for name, opts in options.items()}


class BenchTrainer(Trainer):
    """The trainer with two bench-only additions (no change to what it trains):

    - every step's ``credit/*`` diagnostics (``batch_diagnostics``) go into ``metrics.jsonl``;
    - the step-0 evaluation is the shared warm start's, given in ``warm_eval``: with greedy
      decoding on a deterministic environment every run would re-measure the same number.
    """

    def __init__(self, *args: Any, warm_eval: dict[str, float] | None = None, gamma: float = 0.95, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.warm_eval, self.gamma, self.diagnostics = warm_eval, gamma, {}

    def advantages(self, table):
        adv = super().advantages(table)
        self.diagnostics = batch_diagnostics(table.trajectories, adv, self.gamma)
        return adv

    def train_step(self) -> dict[str, float]:
        self.diagnostics = {}
        metrics = super().train_step()
        metrics.update({f"credit/{k}": v for k, v in self.diagnostics.items()})
        return metrics

    def evaluate(self, label: str | None = None) -> dict[str, float]:
        if label == "step-000000" and self.warm_eval is not None:
            return dict(self.warm_eval)
        return super().evaluate(label)


# --------------------------------------------------------------------------------------------
# The bench
# --------------------------------------------------------------------------------------------


def estimator_options(base: TrainConfig) -> dict[str, dict[str, Any]]:
    """Each estimator with its defaults, except the config's own estimator, which keeps its options."""
    return {name: (dict(base.estimator.options) if name == base.estimator.name else {}) for name in ESTIMATORS}


def check_same_recipe(base: TrainConfig, saved: Path) -> None:
    """A resumed bench must train with the recipe its warm start was made with: examples/main.yaml
    may change between calls, and runs from two recipes must not be pooled. ``run.*`` (steps,
    evaluation) may differ."""
    if not saved.exists():
        return
    old = {k: v for k, v in json.loads(saved.read_text()).items() if k != "run"}
    new = {k: v for k, v in base.model_dump(mode="json").items() if k != "run"}
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        raise SystemExit(f"{saved.parent} was made with another recipe (sections {', '.join(changed)} differ): "
                         "use a new --out, or the same config and --set overrides as before")


def warm_start(base: TrainConfig, out: Path, diag_steps: int) -> dict[str, Any]:
    """The shared warm start (cached in ``out/warm-start/state.pt``), its held-out evaluations,
    and the diagnostics of the warm-started policy's training rollouts (``diag_steps`` batches)."""
    warm_dir = out / "warm-start"
    warm_file = warm_dir / "state.pt"
    if warm_file.exists():
        check_same_recipe(base, warm_dir / "config.json")
        return torch.load(warm_file)
    if warm_dir.exists():
        shutil.rmtree(warm_dir)
    cfg = base.model_copy(deep=True)
    cfg.run.out_dir, cfg.run.steps = str(warm_dir), 0
    warm = Trainer(cfg)
    before = warm.evaluate("before")
    t0 = time.perf_counter()
    sft_metrics = warm.warm_start()
    sft_seconds = time.perf_counter() - t0
    after = warm.evaluate("after-sft")
    trajs = [t for _ in range(diag_steps) for t in warm.collect()[0]]  # temperature-1 training rollouts
    gamma = float(base.estimator.options.get("gamma", 0.95)) if base.estimator.name == "gigpo" else 0.95
    saved = {"state": copy.deepcopy(warm.model.state_dict()), "before": before, "after": after,
             "sft": {**sft_metrics, "seconds": sft_seconds}, "diagnostics": batch_diagnostics(trajs, None, gamma),
             "estimators": estimator_comparison(trajs, estimator_options(base)),
             "rollout_success": float(np.mean([t.success for t in trajs])),
             "rollout_turns": float(np.mean([len(t.turns) for t in trajs])), "episodes": len(trajs)}
    warm_dir.mkdir(parents=True, exist_ok=True)
    (warm_dir / "config.json").write_text(json.dumps(base.model_dump(mode="json"), indent=2))
    (warm_dir / "diagnostics.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "state"}, indent=2))
    tmp = warm_file.with_suffix(".tmp")
    torch.save(saved, tmp)
    tmp.replace(warm_file)
    return saved


def run_one(base: TrainConfig, name: str, seed: int, warm: dict[str, Any], out: Path) -> Path:
    """One estimator x seed from the shared warm start; skipped when already finished."""
    from turngym.agents.models import load_model

    cfg = base.model_copy(deep=True)
    cfg.estimator.options = estimator_options(base)[name]
    cfg.estimator.name = name
    cfg.run.seed = cfg.rollout.seed = seed
    cfg.sft.enabled = False
    run_dir = out / f"{name}-seed{seed}"
    cfg.run.out_dir = str(run_dir)
    done = run_dir / "bench.json"
    if done.exists():
        return run_dir
    if run_dir.exists():  # an unfinished run: start it again
        shutil.rmtree(run_dir)
    model, tokenizer = load_model(cfg.policy.model)
    model.load_state_dict(warm["state"])
    gamma = float(cfg.estimator.options.get("gamma", 0.95))
    trainer = BenchTrainer(cfg, model=model, tokenizer=tokenizer, warm_eval=warm["after"], gamma=gamma)
    load_start, t0 = os.getloadavg(), time.perf_counter()
    trainer.train()
    done.write_text(json.dumps({"seconds": time.perf_counter() - t0, "load_start": load_start,
                                "load_end": os.getloadavg()}))
    return run_dir


def read_run(run_dir: Path) -> dict[str, Any]:
    """A finished run's held-out curve (step, success, CI low, CI high), its per-step credit
    diagnostics, the final evaluation's per-task outcomes and its timing."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [(int(r["step"]), r["eval/success_rate"], r["eval/success_ci_low"], r["eval/success_ci_high"])
             for r in records if "eval/success_rate" in r]
    curve = sorted({p[0]: p for p in curve}.values())  # one point per step
    credit = [{k[len("credit/"):]: v for k, v in r.items() if k.startswith("credit/")} for r in records]
    credit = [c for c in credit if c]
    last = curve[-1][0]
    outcomes = {}
    for line in (run_dir / "eval" / f"step-{last:06d}" / "trajectories.jsonl").read_text().splitlines():
        traj = json.loads(line)
        outcomes[traj["task_id"]] = float(traj["success"])
    return {"curve": curve, "credit": credit, "outcomes": outcomes, **json.loads((run_dir / "bench.json").read_text())}


def summarize(runs: dict[str, dict[int, dict[str, Any]]], warm_success: float, threshold: float) -> dict[str, Any]:
    """Per estimator: final success over seeds (t interval), steps to threshold, mean credit
    diagnostics over all steps; per pair of estimators: the paired tests of the final difference."""
    per: dict[str, Any] = {}
    for name, by_seed in runs.items():
        finals = {s: r["curve"][-1][1] for s, r in by_seed.items()}
        m, lo, hi = mean_ci(list(finals.values()))
        credit = [c for r in by_seed.values() for c in r["credit"]]
        keys = sorted(set().union(*credit)) if credit else []
        per[name] = {
            "n": len(by_seed), "final_mean": m, "final_ci": [lo, hi], "finals": finals,
            "final_eval_ci_halfwidth": float(np.mean([(r["curve"][-1][3] - r["curve"][-1][2]) / 2 for r in by_seed.values()])),
            "steps_to_threshold": {s: steps_to_threshold([(p[0], p[1]) for p in r["curve"]], threshold) for s, r in by_seed.items()},
            "credit_mean": {k: float(np.nanmean([c[k] for c in credit if k in c])) for k in keys},
            "seconds_per_run": float(np.mean([r["seconds"] for r in by_seed.values()])),
            "load": [min(min(r["load_start"][0], r["load_end"][0]) for r in by_seed.values()),
                     max(max(r["load_start"][0], r["load_end"][0]) for r in by_seed.values())],
        }
    pairs = {}
    for a, b in [(a, b) for a, b in PAIRS if a in runs and b in runs]:
        pairs[f"{a} - {b}"] = {
            "by_seed": paired_by_seed(per[a]["finals"], per[b]["finals"]),
            "by_task": pooled_task_bootstrap({s: r["outcomes"] for s, r in runs[a].items()},
                                             {s: r["outcomes"] for s, r in runs[b].items()}),
        }
    return {"warm_start_success": warm_success, "threshold": threshold, "estimators": per, "pairs": pairs}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(summary: dict[str, Any], warm: dict[str, Any]) -> str:
    """The tables that go into bench/RESULTS.md (also written to ``OUT/credit.md``)."""
    d, lines = warm["diagnostics"], []
    lines.append(f"Warm start: {pct(warm['before']['eval/success_rate'])}% -> {pct(warm['after']['eval/success_rate'])}% "
                 f"held-out [{pct(warm['after']['eval/success_ci_low'])}, {pct(warm['after']['eval/success_ci_high'])}] "
                 f"({warm['sft']['sft/steps']} steps). Its training rollouts (temperature 1, {warm['episodes']} episodes): "
                 f"success {pct(warm['rollout_success'])}%, {warm['rollout_turns']:.1f} turns/episode, "
                 f"{pct(d.get('groups/share_mixed', math.nan))}% of groups with mixed outcomes; "
                 f"**{pct(d['step_groups/share_in_multi'])}% of turns in step groups of size > 1**, mean step-group size "
                 f"{d['step_groups/mean_size']:.2f} (turn-weighted {d['step_groups/turn_weighted_size']:.2f}); "
                 f"{pct(d['step_groups/share_informative'])}% of turns in step groups whose returns differ.\n")
    lines.append("| on the warm start's batch | adv. variance | mean abs adv. | share of nonzero adv. |\n|---|---|---|---|")
    for name, s in warm["estimators"].items():
        lines.append(f"| {name} | {s['var']:.3f} | {s['abs_mean']:.3f} | {pct(s['share_nonzero'])}% |")
    lines.append(f"| GiGPO's step part A^S | {d['gigpo_step_part/var']:.3f} | {d['gigpo_step_part/abs_mean']:.3f} | "
                 f"{pct(d['gigpo_step_part/share_nonzero'])}% |\n")
    lines.append(f"| estimator | n | final held-out % (mean, 95% CI over seeds) | finals by seed | steps to {pct(summary['threshold'])}% "
                 "| adv. variance | nonzero adv. | mixed groups | turns in step groups > 1 | A^S nonzero | s/run |\n"
                 "|---|---|---|---|---|---|---|---|---|---|---|")
    for name, e in summary["estimators"].items():
        c, reach = e["credit_mean"], [v for v in e["steps_to_threshold"].values() if v is not None]
        lines.append(f"| {name} | {e['n']} | {pct(e['final_mean'])} [{pct(e['final_ci'][0])}, {pct(e['final_ci'][1])}] | "
                     f"{', '.join(pct(v) for v in e['finals'].values())} | {len(reach)} of {e['n']}"
                     f"{' (median ' + str(int(np.median(reach))) + ')' if reach else ''} | {c.get('adv/var', math.nan):.3f} | "
                     f"{pct(c.get('adv/share_nonzero', math.nan))}% | {pct(c.get('groups/share_mixed', math.nan))}% | {pct(c.get('step_groups/share_in_multi', math.nan))}% | "
                     f"{pct(c.get('gigpo_step_part/share_nonzero', math.nan))}% | {e['seconds_per_run']:.0f} |")
    half = np.mean([e["final_eval_ci_halfwidth"] for e in summary["estimators"].values()])
    lines.append(f"\nOne run's final evaluation has its own 95% bootstrap CI of about ±{100 * half:.1f} points "
                 "(over the held-out tasks); the interval above is over seeds.")
    lines.append("\n| final difference | seeds | per-seed differences (points) | mean [95% t CI] | sign-flip p | "
                 "per-task paired bootstrap (tasks, mean over seeds) |\n|---|---|---|---|---|---|")
    for pair, p in summary["pairs"].items():
        s, t = p["by_seed"], p["by_task"]
        if s.get("n"):
            lines.append(f"| {pair} | {s['n']} | {', '.join(f'{100 * x:+.1f}' for x in s['diffs'])} | {100 * s['mean']:+.1f} "
                         f"[{100 * s['ci'][0]:+.1f}, {100 * s['ci'][1]:+.1f}] | {s['p_sign_flip']:.3f} | "
                         f"{100 * t['mean']:+.1f} [{100 * t['ci'][0]:+.1f}, {100 * t['ci'][1]:+.1f}] ({t['n_tasks']} tasks) |")
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, dict[int, dict[str, Any]]], summary: dict[str, Any], path: Path) -> None:
    """Mean held-out curve per estimator with its 95% t band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, by_seed in runs.items():
        steps = sorted(set.intersection(*({p[0] for p in r["curve"]} for r in by_seed.values())))
        bands = [mean_ci([next(p[1] for p in r["curve"] if p[0] == s) for r in by_seed.values()]) for s in steps]
        mean, lo, hi = (np.array(v) for v in zip(*bands))
        ax.plot(steps, mean, marker="o", label=f"{name} (n={len(by_seed)})")
        ax.fill_between(steps, lo, hi, alpha=0.15)
    ax.axhline(summary["threshold"], ls="--", c="gray", lw=0.8, label=f"threshold {summary['threshold']:.2f}")
    ax.set_xlabel("update step")
    ax.set_ylabel("held-out success (greedy)")
    ax.set_title(f"credit assignment, warm start {summary['warm_start_success']:.2f}; band = 95% t CI over seeds",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="examples/main.yaml")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--eval-tasks", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--estimators", nargs="+", default=ESTIMATORS)
    ap.add_argument("--diag-steps", type=int, default=4, help="batches of warm-start rollouts measured before training")
    ap.add_argument("--threshold", type=float, default=None, help="success for steps-to-threshold (default: warm start + 5 points)")
    ap.add_argument("--out", default="bench/results/credit")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides (after the 6x6 setting)")
    ap.add_argument("--report-only", action="store_true", help="summarise the finished runs, train nothing")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_config(TrainConfig, args.config, DEFAULT_SETTING + args.set + [
        f"run.steps={args.steps}", f"run.eval_every={args.eval_every}", f"run.eval_tasks={args.eval_tasks}",
        "run.checkpoint_every=0", "run.tensorboard=false"])
    warm = warm_start(base, out, args.diag_steps)
    warm_success = warm["after"]["eval/success_rate"]
    print(f"warm start: {warm['before']['eval/success_rate']:.3f} -> {warm_success:.3f}; diagnostics {warm['diagnostics']}", flush=True)
    # +5 points: with ~20 steps of RL on 6x6 a +10 threshold is out of reach for every estimator
    threshold = args.threshold if args.threshold is not None else warm_success + 0.05
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for seed in args.seeds:  # seed-major: a stopped bench leaves every estimator with a similar n
        for name in args.estimators:
            run_dir = out / f"{name}-seed{seed}"
            if not args.report_only:
                run_one(base, name, seed, warm, out)
            if (run_dir / "bench.json").exists():
                runs.setdefault(name, {})[seed] = read_run(run_dir)
                print(name, seed, runs[name][seed]["curve"][-1][:2], flush=True)
    if not runs:
        return
    runs = {name: runs[name] for name in args.estimators if name in runs}
    summary = summarize(runs, warm_success, threshold)
    curves = {name: {s: r["curve"] for s, r in by_seed.items()} for name, by_seed in runs.items()}
    (out / "summary.json").write_text(json.dumps({"summary": summary, "curves": curves,
                                                   "warm_start": {k: v for k, v in warm.items() if k != "state"}}, indent=2))
    (out / "credit.md").write_text(markdown(summary, warm))
    plot(runs, summary, out / "credit.png")
    print((out / "credit.md").read_text())


if __name__ == "__main__":
    main()
