"""Comparing two evaluations task by task (``turngym compare A B``).

Tasks are paired by ``(env_id, task_id)``; only tasks present in both results count. For each
environment both evaluated, and for all paired tasks together, the result is a
:class:`~turngym.agents.evaluation.stats.PairedComparison` (mean difference A - B with a
paired bootstrap CI, and the runs per task needed to detect ``delta`` — formula in
:mod:`~turngym.agents.evaluation.stats`).
"""

from __future__ import annotations

from pydantic import BaseModel
from turngym.agents.evaluation.results import EvalResults, ResultsError, TaskStats
from turngym.agents.evaluation.stats import PairedComparison, paired_compare

__all__ = ["ComparisonReport", "compare_results"]


class ComparisonReport(BaseModel):
    policy_a: str
    policy_b: str
    split_a: str
    split_b: str
    per_env: dict[str, PairedComparison]
    overall: PairedComparison

    def lines(self) -> list[str]:
        """A human-readable summary."""
        out = [f"A = {self.policy_a} ({self.split_a}), B = {self.policy_b} ({self.split_b})"]
        for name, cmp in [*self.per_env.items(), ("all paired tasks", self.overall)]:
            ci = cmp.difference
            level = round(ci.level * 100)
            out.append(
                f"{name}: {cmp.num_tasks} tasks, pass@1 A {cmp.mean_a:.3f} B {cmp.mean_b:.3f}, "
                f"A - B {ci.mean:+.3f} ({level}% CI {ci.low:+.3f} to {ci.high:+.3f})"
            )
            if cmp.runs_needed is None:
                need = f"no number of runs detects {cmp.delta:.3f} with {cmp.num_tasks} tasks; more tasks are needed"
            else:
                need = f"{cmp.runs_needed} runs per task detect a difference of {cmp.delta:.3f}"
            out.append(
                f"  power: {need} (alpha {cmp.alpha}, power {cmp.power}); with the runs at hand "
                f"the smallest detectable difference is {cmp.min_detectable:.3f}"
            )
        return out


def _index(results: EvalResults) -> dict[tuple[str, str], TaskStats]:
    return {(env.env_id, t.task_id): t for env in results.envs for t in env.tasks}


def _compare(keys: list[tuple[str, str]], a: dict, b: dict, **kwargs) -> PairedComparison:
    return paired_compare(
        [f"{env}/{task}" for env, task in keys],
        [a[k].runs for k in keys], [a[k].successes for k in keys],
        [b[k].runs for k in keys], [b[k].successes for k in keys],
        **kwargs,
    )


def compare_results(
    a: EvalResults, b: EvalResults, delta: float = 0.05, alpha: float = 0.05, power: float = 0.8, seed: int = 0
) -> ComparisonReport:
    """Paired comparison of ``a`` and ``b`` on the tasks both evaluated."""
    ta, tb = _index(a), _index(b)
    shared = [key for key in ta if key in tb]
    if not shared:
        raise ResultsError("the two results share no (environment, task) pair to compare")
    kwargs = dict(delta=delta, alpha=alpha, power=power, level=a.confidence, samples=a.bootstrap_samples, seed=seed)
    per_env = {}
    for env_id in dict.fromkeys(env for env, _ in shared):
        keys = [k for k in shared if k[0] == env_id]
        per_env[env_id] = _compare(keys, ta, tb, **kwargs)
    return ComparisonReport(
        policy_a=a.policy, policy_b=b.policy, split_a=a.split, split_b=b.split,
        per_env=per_env, overall=_compare(shared, ta, tb, **kwargs),
    )
