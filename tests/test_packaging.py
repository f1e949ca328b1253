"""The distribution: one top-level package `turngym`, the five folders mapped under it."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"envs", "agents", "trainers", "tools", "sandboxes"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = out.glob("turngym-*.whl")
    wheel_log[:] = (build.stdout + build.stderr).splitlines()
    return wheel


wheel_log: list[str] = []


def test_the_build_prints_no_packaging_warnings(wheel):
    # setuptools' own warnings about this project's configuration (package data folders it was
    # not told of, a deprecated license table), not pip's notes about the machine's indexes
    warnings = [line for line in wheel_log if "BuildBackendWarning" in line or "SetuptoolsDeprecationWarning" in line]
    assert warnings == []


def test_wheel_has_only_the_turngym_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"turngym"}
    for folder in FOLDERS:
        assert f"turngym/{folder}/__init__.py" in names
    assert not any(n.split("/")[0] in FOLDERS for n in names)


def test_every_source_package_and_data_file_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in FOLDERS | {"turngym"}:
        prefix = "turngym" if folder == "turngym" else f"turngym/{folder}"
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder).as_posix()
            assert f"{prefix}/{rel}" in names, rel
    assert "turngym/envs/grid/data/sokoban-6x6-1.jsonl" in names


def test_the_bare_folders_are_not_importable():
    # `pytest` with --import-mode=importlib keeps the repo root off sys.path, so the bare
    # folders never shadow installed packages of the same names (the OpenAI Agents SDK owns
    # `agents`). Run the suite with `pytest`, not `python -m pytest` (which adds the cwd).
    import importlib.util

    for folder in FOLDERS:
        spec = importlib.util.find_spec(folder)
        assert spec is None or not str(spec.origin).startswith(str(ROOT)), folder


def test_third_party_package_registers_through_the_entry_point_group(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(ROOT / "examples" / "third_party_env")],
        check=True,
    )
    code = (
        "import turngym\n"
        "env = turngym.make('guess/Guess-v0')\n"
        "obs, info = env.reset(options={'task': 'guess-42'})\n"
        "seen = [env.step(f'<guess>{g}</guess>')[0] for g in (50, 25, 42)]\n"
        "print(seen[0], '|', seen[1], '|', seen[2], '|', info['task_id'])\n"
        "print('guess/Guess-v0' in turngym.registered_envs())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["50 is wrong: go lower. | 25 is wrong: go higher. | Correct! | guess-42", "True"]
    check = subprocess.run([sys.executable, "-m", "turngym", "check", "guess/Guess-v0"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    from turngym.envs.checker import CHECKS

    assert check.stdout.splitlines()[-1] == f"guess/Guess-v0: {len(CHECKS)} passed, 0 failed"
    assert all(f"[ok  ] {name}" in check.stdout for name in CHECKS)
    # the package's tool-using environment (turngym_guess/stock.py) registers and passes too
    check = subprocess.run([sys.executable, "-m", "turngym", "check", "guess/Stock-v0"], env=env, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.splitlines()[-1] == f"guess/Stock-v0: {len(CHECKS)} passed, 0 failed", check.stdout + check.stderr


def test_example_env_is_under_sixty_lines():
    lines = (ROOT / "examples" / "third_party_env" / "turngym_guess" / "__init__.py").read_text().splitlines()
    assert len(lines) < 60
