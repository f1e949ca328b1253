"""``turngym train CONFIG`` and ``turngym sft CONFIG``."""

from __future__ import annotations

import argparse
import json
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


def cmd_train(args: argparse.Namespace) -> int:
    config = _load(args)
    from turngym.trainers.trainer import Trainer

    try:
        trainer = Trainer(config, resume=args.resume)
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
    return 0


def _with_ci(mean: float, ci: list[float]) -> str:
    return f"{mean:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"


def cmd_sft(args: argparse.Namespace) -> int:
    config = _load(args)
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
