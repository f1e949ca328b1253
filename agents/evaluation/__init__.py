"""turngym.agents.evaluation — held-out evaluation with its noise reported.

- :mod:`~turngym.agents.evaluation.stats`: pass@1 with a bootstrap CI over tasks, unbiased
  pass@k and pass^k, paired comparison and a power estimate (pure functions).
- :mod:`~turngym.agents.evaluation.results`: the versioned ``results.json`` schema.
- :mod:`~turngym.agents.evaluation.runner`: the resumable evaluation loop over an
  :data:`EpisodeRunner` (``runner(work items) -> trajectories``).
- :mod:`~turngym.agents.evaluation.report`: the self-contained ``report.html``.
- :mod:`~turngym.agents.evaluation.scripted`: ``scripted:solver`` / ``scripted:random``.
"""

from turngym.agents.evaluation.results import (
    SCHEMA_VERSION,
    EnvSummary,
    EvalResults,
    ResultsError,
    SuiteStats,
    TaskStats,
    load_results,
)
from turngym.agents.evaluation.runner import (
    EpisodeRunner,
    EvalConfig,
    EvalConfigError,
    TrajectoryStore,
    WorkItem,
    evaluate,
    item_seed,
    plan_work,
)
from turngym.agents.evaluation.scripted import (
    SCRIPTED_POLICIES,
    register_expert,
    register_scripted,
    scripted_runner,
)
from turngym.agents.evaluation.stats import (
    BootstrapCI,
    PairedComparison,
    bootstrap_mean_ci,
    paired_compare,
    pass_at_k,
    pass_hat_k,
    runs_needed,
)

__all__ = [
    "SCHEMA_VERSION",
    "SCRIPTED_POLICIES",
    "BootstrapCI",
    "EnvSummary",
    "EpisodeRunner",
    "EvalConfig",
    "EvalConfigError",
    "EvalResults",
    "PairedComparison",
    "ResultsError",
    "SuiteStats",
    "TaskStats",
    "TrajectoryStore",
    "WorkItem",
    "bootstrap_mean_ci",
    "evaluate",
    "item_seed",
    "load_results",
    "paired_compare",
    "pass_at_k",
    "pass_hat_k",
    "plan_work",
    "register_expert",
    "register_scripted",
    "runs_needed",
    "scripted_runner",
]
