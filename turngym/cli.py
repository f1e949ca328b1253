"""The ``turngym`` command line.

Each command group lives in its own module exposing ``add_commands(subparsers)`` (each
command sets ``func`` on its parser) and ``USER_ERRORS`` (the exception types a user can cause
there). Errors of those types are printed as one sentence with exit code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import pydantic

COMMAND_MODULES = [
    "turngym.cli_envs",      # envs, suites, check, play
    "turngym.cli_sandbox",   # sandbox build-image / prune
    "turngym.cli_serve",     # serve
    "turngym.cli_serve_env", # serve-env (OpenEnv's protocol)
    "turngym.cli_eval",      # eval, compare
    "turngym.cli_train",     # train, sft
]


def _load_modules() -> list:
    modules = []
    for name in COMMAND_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            if err.name != name:  # a real missing dependency inside the module
                raise
    return modules


def build_parser(modules: list | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="turngym",
        description="Multi-turn tool-use environments for LLM agents, and a per-turn RL trainer.",
    )
    from turngym import __version__

    parser.add_argument("--version", action="version", version=f"turngym {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in modules if modules is not None else _load_modules():
        module.add_commands(sub)
    return parser


class UserError(Exception):
    """An error the user caused and can fix; the CLI prints its message and exits 2."""


def fail(message: str) -> UserError:
    return UserError(message)


def _one_line(err: BaseException) -> str:
    if isinstance(err, pydantic.ValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"invalid configuration: {where}: {first['msg']}"
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    modules = _load_modules()
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    user_errors: tuple[type[BaseException], ...] = (UserError, pydantic.ValidationError)
    for module in modules:
        user_errors += tuple(getattr(module, "USER_ERRORS", ()))
    try:
        return int(args.func(args) or 0)
    except user_errors as err:
        print(f"turngym: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("turngym: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
