"""The README and docs/*.md, held to what the code does.

Every shell command in a ```bash block, and every inline `turngym ...`, `bash scripts/...` or
`pip install ...` span, is checked:

- ``turngym`` commands (also after ``-m turngym`` under torchrun/accelerate, and after ``--`` of
  ``ray job submit``) go through the CLI's own argparse parser; then every environment id must
  be registered, every policy spec must name a known scheme, model or a path that a documented
  job produces, every config file must exist and load with its ``--set`` overrides, and
  ``compare`` must read folders that a documented ``eval`` writes;
- scripts and ``--config_file`` files must exist; ``pip install 'turngym[...]'`` extras must be
  declared in pyproject.toml.

Upper-case words (CONFIG, N, HEAD_IP) are placeholders. The cheap commands (envs, suites,
check, scripted evaluations at 2 tasks, compare) then run for real, in a scratch folder, and
the README's Python example runs as written.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.DOTALL)
INLINE = re.compile(r"(?<!`)`((?:turngym |bash scripts/|pip install )[^`]*)`(?!`)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")
EXTERNAL = {"ray"}  # documented programs of other projects: not ours to check
RUN_FOR_REAL = {"envs", "suites", "check", "compare"}


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    argv: tuple[str, ...]
    mention: bool = False
    """An inline name of a command in prose (`turngym eval`, `turngym train ...`): only the
    command itself must exist."""

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.argv)}"


def _strip_fences(text: str) -> str:
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def extract(path: Path) -> list[Command]:
    text = path.read_text()
    found: list[Command] = []
    for block in FENCE.finditer(text):
        start = text.count("\n", 0, block.start(1)) + 1
        body = block.group(1).replace("\\\n", "  ")  # continuation lines join their command
        lines = block.group(1).split("\n")
        offsets = [start + i for i, raw in enumerate(lines) if not raw.rstrip().endswith("\\") or i == 0]
        for k, line in enumerate(body.split("\n")):
            argv = shlex.split(line, comments=True)
            if argv:
                found.append(Command(path.name, offsets[k] if k < len(offsets) else start, tuple(argv)))
    outside = _strip_fences(text)
    for span in INLINE.finditer(outside):
        line = outside.count("\n", 0, span.start()) + 1
        argv = tuple(shlex.split(span.group(1)))
        mention = argv[0] == "turngym" and (len(argv) <= 2 or "..." in argv)
        found.append(Command(path.name, line, argv, mention))
    return found


ALL = [c for doc in DOCS for c in extract(doc)]


def turngym_argv(argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """The argument list of the ``turngym`` invocation inside a command, or None."""
    if argv[0] == "turngym":
        return argv[1:]
    for i in range(len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] == "turngym":
            return argv[i + 2:]
    if "--" in argv:
        rest = argv[argv.index("--") + 1:]
        return turngym_argv(rest) if rest else None
    return None


# -- what exists -----------------------------------------------------------------------------------


def _extras() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9][\w-]*)\s*=", section, re.MULTILINE))


def _eval_outputs() -> set[str]:
    outs = set()
    for command in ALL:
        argv = turngym_argv(command.argv)
        if argv and argv[0] == "eval" and "--out" in argv:
            outs.add(argv[argv.index("--out") + 1])
    return outs


def surviving_checkpoints(config_path: Path) -> set[int]:
    """Steps whose checkpoints a finished run of this config leaves (after keep_checkpoints)."""
    from turngym.trainers.config import TrainConfig

    config = TrainConfig.model_validate(yaml.safe_load(config_path.read_text()))
    run = config.run
    saved = {run.steps}  # the final save
    if config.sft.enabled:
        saved.add(0)  # the warm start's
    if run.checkpoint_every:
        saved.update(range(run.checkpoint_every, run.steps + 1, run.checkpoint_every))
    ordered = sorted(saved)
    return set(ordered[-run.keep_checkpoints:] if run.keep_checkpoints > 0 else ordered)


def check_produced_path(spec: str) -> None:
    """A path under a run folder must be one that a documented config's run leaves behind."""
    match = re.fullmatch(r"(?P<out>.+)/checkpoints/step-(?P<step>\d{6})/model", spec)
    assert match, f"{spec} is not a path that turngym writes"
    configs = [p for p in sorted((ROOT / "examples").glob("*.yaml"))
               if (yaml.safe_load(p.read_text()).get("run") or {}).get("out_dir") == match["out"]]
    assert configs, f"no example config writes to {match['out']}"
    steps = surviving_checkpoints(configs[0])
    assert int(match["step"]) in steps, (
        f"{spec}: a finished run of {configs[0].name} keeps only steps {sorted(steps)}")


def check_policy(spec: str) -> None:
    from turngym.agents.evaluation.policies import RUNNER_SCHEMES
    from turngym.agents.evaluation.scripted import SCRIPTED_POLICIES
    from turngym.agents.models import MODEL_LOADERS, parse_spec
    from turngym.agents.openai_http import parse_openai_spec

    scheme, sep, rest = spec.partition(":")
    if sep and scheme == "scripted":
        assert rest in SCRIPTED_POLICIES, f"unknown scripted policy {rest!r}"
    elif sep and scheme == "openai":
        parse_openai_spec(rest)
    elif sep and scheme == "vllm":
        check_policy(rest)
    elif sep and scheme in RUNNER_SCHEMES:
        pass
    elif parse_spec(spec)[0] in MODEL_LOADERS:
        pass
    elif re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", spec):
        pass  # a Hugging Face id (org/name): nothing here can download it to check
    elif not PLACEHOLDER.match(spec):
        check_produced_path(spec)


def check_turngym(command: Command, argv: tuple[str, ...]) -> None:
    from turngym.cli import build_parser
    from turngym.config import load_config
    from turngym.envs import registered_envs
    from turngym.trainers.config import TrainConfig

    parser = build_parser()
    if command.mention:
        commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
        assert argv[0] in commands, f"{command}: no command {argv[0]!r}"
        return
    try:
        args = parser.parse_args(list(argv))
    except SystemExit:
        pytest.fail(f"the CLI parser refuses {command}")
    envs = getattr(args, "env", None) or []
    envs = [envs] if isinstance(envs, str) else envs
    envs += [getattr(args, "env_id")] if getattr(args, "env_id", None) else []
    for env_id in envs:
        assert PLACEHOLDER.match(env_id) or env_id in registered_envs(), f"{command}: no environment {env_id!r}"
    if getattr(args, "policy", None):
        check_policy(args.policy)
    if args.command == "serve":
        check_policy(args.model)
    if args.command in {"train", "sft"} and args.config and not PLACEHOLDER.match(args.config):
        load_config(TrainConfig, ROOT / args.config, args.set or [])
    if args.command == "compare":
        missing = {args.a, args.b} - _eval_outputs()
        assert not missing, f"{command}: no documented `turngym eval --out` writes {sorted(missing)}"


@pytest.mark.parametrize("command", ALL, ids=str)
def test_documented_command_exists(command: Command):
    argv = command.argv
    inner = turngym_argv(argv)
    if inner is not None:
        check_turngym(command, inner)
    if "--config_file" in argv:
        assert (ROOT / argv[argv.index("--config_file") + 1]).is_file(), command
    if argv[0] == "bash":
        assert (ROOT / argv[1]).is_file(), f"{command}: no script {argv[1]}"
    elif argv[:2] == ("pip", "install"):
        for extras in re.findall(r"turngym\[([^\]]*)\]", " ".join(argv)):
            unknown = set(extras.split(",")) - _extras()
            assert not unknown, f"{command}: pyproject.toml declares no extra {sorted(unknown)}"
    elif inner is None:
        assert argv[0] in EXTERNAL or argv[0] in {"torchrun", "accelerate"}, f"{command}: unchecked program {argv[0]}"


def test_the_docs_have_commands_to_check():
    assert len(ALL) > 20 and any(turngym_argv(c.argv) for c in ALL)


def test_the_checks_catch_what_they_should():
    from pydantic import ValidationError

    for bad in [("eval", "--env", "turngym/Sokoban-v0", "--policy", "scripted:expert", "--no-such-flag")]:
        with pytest.raises(pytest.fail.Exception):
            check_turngym(Command("t", 0, ("turngym", *bad)), bad)
    with pytest.raises(AssertionError, match="keeps only steps"):
        check_produced_path("runs/main/checkpoints/step-000003/model")
    with pytest.raises(ValueError):
        check_policy("openai:localhost#m")
    with pytest.raises((ValidationError, ValueError)):
        check_turngym(Command("t", 0, ()), ("train", "examples/main.yaml", "--set", "trainer.lr=1e-5"))


# -- the cheap ones, for real ----------------------------------------------------------------------


def _cheap() -> list[Command]:
    chosen = []
    for command in ALL:
        argv = turngym_argv(command.argv)
        if argv is None or command.mention or command.argv[0] != "turngym" or any(PLACEHOLDER.match(a) for a in argv):
            continue
        if argv[0] in RUN_FOR_REAL or (argv[0] == "eval" and "scripted:" in " ".join(argv)):
            chosen.append(command)
    return sorted(chosen, key=lambda c: c.argv[1] == "compare")  # compare reads what eval wrote


def test_cheap_commands_run_for_real(tmp_path, monkeypatch, capsys):
    from turngym.cli import main

    monkeypatch.chdir(tmp_path)  # eval folders land here
    monkeypatch.setenv("TURNGYM_PROGRESS", "off")
    commands = _cheap()
    assert {c.argv[1] for c in commands} >= {"envs", "check", "eval", "compare"}
    for command in commands:
        argv = list(command.argv[1:])
        if argv[0] == "eval":
            argv += ["--max-tasks", "2", "--no-report"]  # tiny size: the first two tasks
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, f"{command} exited {code}: {out.err[-500:]}"


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if b.startswith("import turngym")]
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
