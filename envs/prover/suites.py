"""The prover suites that ship with turngym, and a loader for miniF2F-style JSONL.

Shipped suites are JSONL files in ``data/`` (one :class:`~turngym.envs.tasks.Task` per line;
``metadata.statement`` is the theorem's type, ``metadata.header`` what precedes it, ``answer``
a reference proof). Every Coq reference proof is checked by the real ``coqc`` in the tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from turngym.envs.tasks import SuiteError, Task, TaskSuite

__all__ = ["load_coq_core", "load_lean4_core", "load_minif2f_jsonl", "DATA_DIR"]

DATA_DIR = Path(__file__).parent / "data"


def load_coq_core() -> TaskSuite:
    return TaskSuite.from_jsonl(DATA_DIR / "coq-core.jsonl", name="coq-core")


def load_lean4_core() -> TaskSuite:
    return TaskSuite.from_jsonl(DATA_DIR / "lean4-core.jsonl", name="lean4-core")


_FORMAL = re.compile(r"^\s*(?:theorem|lemma)\s+(\S+)\s*(.*?)\s*:=\s*(?:by\s+)?sorry\s*$", re.DOTALL)


def load_minif2f_jsonl(path: str | Path, name: str | None = None, header: str = "") -> TaskSuite:
    """A miniF2F-style file: one object per line with ``name``, ``formal_statement``
    (``theorem NAME ... := by sorry``), ``split`` (``valid``/``test``) and optionally
    ``header`` (``import Mathlib ...``). Run it with a Lean project that has what the header
    imports (``LeanConfig.project_dir``)."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"task file {path} does not exist")
    tasks = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        match = _FORMAL.match(row.get("formal_statement", ""))
        if not match:
            raise SuiteError(f"{path}:{lineno}: formal_statement is not `theorem NAME ... := by sorry`")
        statement = match.group(2)
        tasks.append(Task(
            id=str(row.get("name") or match.group(1)),
            prompt=row.get("informal_prefix", "") or f"Prove in Lean 4: theorem {match.group(1)} {statement}",
            answer=row.get("proof"),
            metadata={"statement": statement, "header": row.get("header", header)},
            split=str(row.get("split", "test")),
        ))
    return TaskSuite(name or path.stem, tasks)
