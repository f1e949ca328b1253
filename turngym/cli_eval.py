"""``turngym eval`` and ``turngym compare``.

``turngym eval --env ID [--env ID2 ...] --suite test --policy SPEC --runs N --k 1,5 --out DIR``
runs (or resumes) an evaluation into DIR: ``trajectories.jsonl``, ``results.json``,
``report.html``. ``turngym compare A B`` pairs two result folders task by task.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from turngym.agents.evaluation.results import EvalResults, ResultsError, load_results
from turngym.agents.evaluation.runner import EvalConfigError
from turngym.envs import SuiteError, UnknownEnvError

USER_ERRORS: tuple[type[BaseException], ...] = (EvalConfigError, ResultsError, UnknownEnvError, SuiteError)
try:  # a bad model spec (the models module is light to import; torch loads on use)
    from turngym.agents.models import ModelSpecError

    USER_ERRORS += (ModelSpecError,)
except ImportError:  # pragma: no cover
    pass


def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k takes comma-separated positive integers, not {text!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"--k takes comma-separated positive integers, not {text!r}")
    return ks


def _default_out(policy: str) -> str:
    return str(Path("eval") / re.sub(r"[^A-Za-z0-9._-]+", "_", policy).strip("_"))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print_results(results: EvalResults) -> None:
    ks = results.ks
    level = round(results.confidence * 100)
    for env in results.envs:
        s = env.stats
        extras = "  ".join(f"pass@{k} {_fmt(s.pass_at_k.get(k))}  pass^{k} {_fmt(s.pass_hat_k.get(k))}" for k in ks if k != 1)
        print(f"{env.env_id} [{env.suite}/{env.split}] {s.num_tasks} tasks x {results.runs} runs: "
              f"pass@1 {s.pass1.mean:.3f} ({level}% CI {s.pass1.low:.3f}-{s.pass1.high:.3f})  {extras}".rstrip())
    if results.overall is not None:
        s = results.overall
        print(f"all environments: pass@1 {s.pass1.mean:.3f} ({level}% CI {s.pass1.low:.3f}-{s.pass1.high:.3f})")
    short = [k for k in ks if k > results.runs]
    if short:  # pass@k of k runs out of fewer is undefined; say why it shows as "-"
        named = ", ".join(f"pass@{k} and pass^{k}" for k in short)
        print(f"({named} need at least {short[0]} runs per task (--runs {results.runs}): shown as -)")


def cmd_eval(args: argparse.Namespace) -> int:
    from turngym.agents.evaluation.policies import runner_for_spec
    from turngym.agents.evaluation.runner import EvalConfig, evaluate
    from turngym.agents.progress import Progress, quiet_library_bars
    from turngym.agents.evaluation.decoding import eval_settings

    quiet_library_bars()  # before a model loads: its loading bars would go into a log as frames
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    runs, max_tasks = args.runs, args.max_tasks
    if args.episodes is not None:  # shorthand: N episodes = the first N tasks, one run each
        runs, max_tasks = 1, args.episodes
    window = {"memory": "window", "memory_window": args.memory_window} if args.memory_window is not None else {}
    settings = eval_settings(args.policy, {
        "temperature": args.temperature, "max_tokens": args.max_tokens, "stop": args.stop, "max_turns": args.max_turns,
        "step_timeout_s": args.step_timeout, **window}, args.seed, args.env)
    config = EvalConfig(
        envs=args.env, split=args.suite, policy=args.policy, runs=runs, ks=args.k,
        max_tasks=max_tasks, seed=settings.seed, batch_size=args.batch_size, report=not args.no_report,
    )
    out = Path(args.out or _default_out(args.policy))
    runner = runner_for_spec(args.policy, rollout=settings.rollout, env_kwargs=settings.env_kwargs)
    # a bar on a terminal; in a file or a pipe one plain line about every 30 s and one at the end
    with Progress("episodes", unit="ep", file=sys.stderr, disable=args.quiet) as bar:
        try:
            results = evaluate(config, runner, out, progress=lambda done, total: bar.set(done, total))
        finally:
            close = getattr(runner, "close", None)
            if callable(close):
                close()
    _print_results(results)
    print(f"wrote {out / 'results.json'}" + ("" if args.no_report else f" and {out / 'report.html'}"))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from turngym.agents.evaluation.compare import compare_results

    a, b = load_results(args.a), load_results(args.b)
    report = compare_results(a, b, delta=args.delta, alpha=args.alpha, power=args.power, seed=args.seed)
    for line in report.lines():
        print(line)
    if args.json:
        Path(args.json).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a policy on held-out task suites (resumable)",
                       description="Evaluate a policy on environments' held-out splits, several runs per task; "
                                   "re-running with the same --out resumes without repeating finished episodes.")
    p.add_argument("--env", action="append", required=True, metavar="ID", help="environment id (repeat for several)")
    p.add_argument("--suite", default="test", metavar="SPLIT", help="suite split to evaluate on (default: test)")
    p.add_argument("--policy", required=True, metavar="SPEC",
                   help="scripted:solver, scripted:random, a Hugging Face id or path, smollm2, tiny, vllm:..., openai:URL#model")
    p.add_argument("--runs", type=int, default=4, help="runs per task (default: 4)")
    p.add_argument("--k", type=_parse_ks, default=[1], metavar="K[,K...]", help="k values for pass@k and pass^k (default: 1)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: eval/<policy>)")
    p.add_argument("--max-tasks", type=int, metavar="M", help="only the first M tasks of each split")
    p.add_argument("--episodes", type=int, metavar="N", help="shorthand for --max-tasks N --runs 1")
    # Decoding defaults: a trained checkpoint's own (its evaluations in training), else these.
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature of model policies (default: a checkpoint's, else 0, greedy)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="most new tokens per reply of model policies (default: a checkpoint's, else 256)")
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop string for model policies (repeatable)")
    p.add_argument("--max-turns", type=int, default=None, help="cap on turns per episode, on top of the environment's own")
    p.add_argument("--memory-window", type=int, default=None, metavar="K",
                   help="show the model the task and only the last K turns (default: a checkpoint's, else the whole history)")
    p.add_argument("--step-timeout", type=float, default=None, metavar="S",
                   help="deadline of one environment step in seconds, for every policy; past it the episode is an "
                        "error (default: a checkpoint's, else 60)")
    p.add_argument("--seed", type=int, default=None, help="base seed for episodes and the bootstrap (default: a checkpoint's, else 0)")
    p.add_argument("--batch-size", type=int, default=64, help="episodes handed to the policy runner at once (default: 64)")
    p.add_argument("--torch-threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: torch's); 1 is fastest for small models on a busy CPU")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    c = sub.add_parser("compare", help="compare two evaluation result folders, task by task",
                       description="Paired comparison A - B per task with a bootstrap CI, and how many runs per task "
                                   "would detect a given difference.")
    c.add_argument("a", metavar="A", help="results folder (or results.json) of policy A")
    c.add_argument("b", metavar="B", help="results folder (or results.json) of policy B")
    c.add_argument("--delta", type=float, default=0.05, help="difference of interest for the power estimate (default: 0.05)")
    c.add_argument("--alpha", type=float, default=0.05, help="two-sided significance level (default: 0.05)")
    c.add_argument("--power", type=float, default=0.8, help="power (default: 0.8)")
    c.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    c.add_argument("--json", metavar="PATH", help="also write the comparison as JSON")
    c.set_defaults(func=cmd_compare)
