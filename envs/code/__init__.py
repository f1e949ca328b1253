"""Code: write, run and fix programs in a sandbox; graded by hidden tests that cannot be gamed.

``turngym.make("turngym/Code-v0")`` — tools ``python(code)``, ``bash(cmd)``, ``submit(code)``;
reward 1 when every hidden test passes (or the fraction passed, ``reward="fraction"``);
``info["anchor"]`` = (task id, last test outcome vector), ``info["stratum"]`` = executions so far.
``turngym/HumanEval-v0`` is the same environment on the 164 HumanEval problems (test split).

Modules (nothing heavy is imported by this package itself):

- ``env``: :class:`~turngym.envs.code.env.CodeEnv` and its options.
- ``grader``: grading in a fresh sandbox (the threat model is in its docstring).
- ``harness``: the program the grader runs inside the sandbox (shipped as a file).
- ``data``: the packaged train/test suite and the HumanEval loader; ``build_data`` rebuilds and
  verifies it.

Your own tasks: a JSONL file of ``{"id", "prompt", "answer": reference solution, "split",
"metadata": {"entry_point", "tests": [test sources], "wrong_solution"?}}``, passed as
``turngym.make("turngym/Code-v0", suite="my_tasks.jsonl", split="test")``.
"""
