"""``turngym envs``, ``suites``, ``check`` and ``play``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from turngym.envs import (
    EnvUnavailable,
    SuiteError,
    UnknownEnvError,
    make,
    registered_envs,
    suite_description,
    suite_names,
)
from turngym.envs.registration import load_plugins

USER_ERRORS = (UnknownEnvError, SuiteError, EnvUnavailable)
try:  # the prover family's "toolchain missing" error
    from turngym.sandboxes.provers.base import ProverUnavailable

    USER_ERRORS += (ProverUnavailable,)
except ImportError:  # pragma: no cover
    pass


def cmd_envs(args: argparse.Namespace) -> int:
    envs = registered_envs()
    width = max(map(len, envs), default=0)
    for env_id, desc in envs.items():
        print(f"{env_id:<{width}}  {desc}")
    return 0


def cmd_suites(args: argparse.Namespace) -> int:
    from turngym.envs import load_suite

    load_plugins()
    names = suite_names()
    width = max(map(len, names), default=0)
    for name in names:
        line = f"{name:<{width}}  {suite_description(name)}"
        if args.counts:
            splits = load_suite(name).splits()
            line += "  [" + ", ".join(f"{k}: {v}" for k, v in sorted(splits.items())) + "]"
        print(line)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from turngym.envs.checker import check

    if args.env_id not in registered_envs():
        make(args.env_id)  # raises UnknownEnvError with "did you mean"
    results = check(args.env_id, seed=args.seed)
    for r in results:
        mark = "ok  " if r.passed else "FAIL"
        print(f"[{mark}] {r.name}" + (f": {r.detail}" if r.detail else ""))
    failed = sum(not r.passed for r in results)
    print(f"{args.env_id}: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_play(args: argparse.Namespace) -> int:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    env = make(args.env_id)
    base = env.unwrapped
    options = {"task": args.task} if args.task else None
    shots = Path(args.screenshots) if args.screenshots else None
    if shots:
        if not hasattr(base, "screenshot"):
            raise SuiteError(f"{args.env_id} has no screenshots (only GUI environments do)")
        shots.mkdir(parents=True, exist_ok=True)
    obs, info = env.reset(seed=args.seed, options=options)
    print(getattr(base, "instructions", ""))
    if base.tools:
        print("Tools: " + ", ".join(f"{t.name} ({t.description})" for t in base.tools))
    print(f"Task {info.get('task_id')}. Type your reply; an empty line or Ctrl-D quits.\n")
    print(obs)
    total, step = 0.0, 0
    while True:
        if shots:
            (shots / f"step-{step:03d}.png").write_bytes(base.screenshot())
        try:
            action = input("> ")
        except EOFError:
            break
        if not action.strip() or action.strip() in ("quit", "exit"):
            break
        obs, reward, terminated, truncated, info = env.step(action)
        step += 1
        total += reward
        print(obs)
        print(f"[reward {reward:+.2f}, total {total:+.2f}, valid {info.get('action_valid')}]")
        if terminated or truncated:
            why = "solved" if info.get("success") else ("out of turns" if truncated else "episode over")
            print(f"Episode ended ({why}) after {step} turns with return {total:.2f}.")
            break
    env.close()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("envs", help="list registered environments")
    p.set_defaults(func=cmd_envs)

    p = sub.add_parser("suites", help="list registered task suites")
    p.add_argument("--counts", action="store_true", help="load each suite and show its split sizes")
    p.set_defaults(func=cmd_suites)

    p = sub.add_parser("check", help="run the conformance checks on an environment")
    p.add_argument("env_id")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("play", help="play an episode in the terminal")
    p.add_argument("env_id")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--task", default=None, help="task id (default: a random task of the train split)")
    p.add_argument("--screenshots", default=None, metavar="DIR", help="GUI envs: save a screenshot of each step")
    p.set_defaults(func=cmd_play)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
