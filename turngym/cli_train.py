"""``turngym train CONFIG`` and ``turngym sft CONFIG``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from turngym.config import ConfigError, dump_config, load_config

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, FileExistsError)


def _load(args: argparse.Namespace):
    from turngym.trainers.config import TrainConfig

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"run.out_dir={args.out}")
    return load_config(TrainConfig, args.config, overrides)


def _errors() -> tuple[type[BaseException], ...]:
    from turngym.agents.models import ModelSpecError
    from turngym.envs import SuiteError, UnknownEnvError
    from turngym.trainers.checkpoint import CheckpointMismatchError
    from turngym.trainers.estimators import EstimatorError
    from turngym.trainers.sft import NoExpertError

    return (ModelSpecError, SuiteError, UnknownEnvError, EstimatorError, NoExpertError, CheckpointMismatchError)


def _console() -> None:
    """turngym's own INFO lines (evaluations, warnings) on stderr; libraries stay at WARNING;
    off a terminal the Hugging Face libraries' bars are silenced."""
    import logging

    from turngym.agents.progress import quiet_library_bars

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("turngym").setLevel(logging.INFO)
    quiet_library_bars()


def cmd_train(args: argparse.Namespace) -> int:
    config = _load(args)
    _console()
    resume = _preflight(config, args.resume)
    from turngym.trainers.trainer import Trainer

    try:
        trainer = Trainer(config, resume=resume)
        out = Path(config.run.out_dir)
        if trainer.dist.is_main:
            dump_config(config, out / "config.yaml")
        summary = trainer.train()
    except _errors() as err:
        raise ConfigError(str(err)) from None
    trainer.dist.close()  # after a failure torchrun tears the group down; a barrier could hang
    if not trainer.dist.is_main:  # under a multi-process launch rank 0 reports for the group
        return 0
    labels = {"eval_before": "before", "eval_after_sft": "after warm start", "eval_after": "after RL"}
    parts = [f"{label} {_with_ci(summary[key], summary[key + '_ci'])}" for key, label in labels.items() if key in summary]
    print(f"held-out success on {config.env.id} ({config.env.eval_split}, 95% CI): " + " -> ".join(parts))
    if summary.get("generalization_warning"):
        print(f"warning: {summary['generalization_warning']}")
    print(f"run folder: {out}  (curves: {summary['plot']}, metrics: {out / 'metrics.jsonl'})")
    return _trained_on_something(out)


def _preflight(config, resume: bool) -> bool:
    """The whole config checked in seconds before anything heavy (a bad key is one sentence,
    exit 2, and nothing written), then the run folder made ready; whether to resume."""
    import os

    from turngym.trainers.checkpoint import prepare_run_dir
    from turngym.trainers.validate import validate_config

    validate_config(config)
    resume, note = prepare_run_dir(config.run.out_dir, resume, main=os.environ.get("RANK", "0") == "0")
    if note:
        print(f"turngym: {note}", file=sys.stderr)
    return resume


def _trained_on_something(out: Path) -> int:
    """1 (with the reason) for a run whose every step updated nothing: it must not pass for a result."""
    from turngym.trainers.metrics import nothing_trained, read_metrics

    reason = nothing_trained(read_metrics(out / "metrics.jsonl"))
    if reason:
        print(f"turngym: error: the run trained on nothing: {reason}", file=sys.stderr)
        return 1
    return 0


def _with_ci(mean: float, ci: list[float]) -> str:
    return f"{mean:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"


def cmd_sft(args: argparse.Namespace) -> int:
    config = _load(args)
    _console()
    from turngym.trainers.validate import validate_config

    validate_config(config)
    from turngym.trainers.trainer import Trainer

    try:
        trainer = Trainer(config)
        before = trainer.evaluate("before-sft")["eval/success_rate"]
        metrics = trainer.warm_start()
        after = trainer.evaluate("after-sft")["eval/success_rate"]
        path = trainer.save()
    except _errors() as err:
        raise ConfigError(str(err)) from None
    print(json.dumps(metrics))
    print(f"held-out success on {config.env.id}: before {before:.1%} -> after warm start {after:.1%}; checkpoint {path}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, help="YAML config (see examples/); defaults when omitted")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. optim.lr=1e-5 (repeatable)")
    p.add_argument("--out", default=None, help="run folder (overrides run.out_dir)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a policy with RL (optionally after a supervised warm start)")
    _common(p)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sft", help="supervised warm start on an environment's expert demonstrations")
    _common(p)
    p.set_defaults(func=cmd_sft)
