import subprocess
import sys

import pytest

from turngym.cli import main


def test_envs_lists_the_grid_puzzles(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for env_id in ["turngym/Sokoban-v0", "turngym/FrozenLake-v0"]:
        line = next(line for line in out.splitlines() if line.startswith(env_id + " "))
        assert len(line.split(None, 1)[1]) > 10  # a one-line description


def test_suites_lists_split_counts(capsys):
    assert main(["suites", "--counts"]) == 0
    assert "sokoban-6x6-1" in capsys.readouterr().out


def test_check_passes_on_sokoban(capsys):
    from turngym.envs.checker import CHECKS

    assert main(["check", "turngym/Sokoban-v0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"[ok  ] {name}" for name in CHECKS] + [f"turngym/Sokoban-v0: {len(CHECKS)} passed, 0 failed"]


@pytest.mark.parametrize("argv,message", [
    (["check", "turngym/Sokobn-v0"], "did you mean 'turngym/Sokoban-v0'"),
    (["play", "nothing/Here-v0"], "`turngym envs` lists"),
    (["play", "turngym/Sokoban-v0", "--task", "no-such-task"], "no task 'no-such-task'"),
])
def test_user_errors_are_one_sentence_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_play_through_a_pipe_solves_a_level():
    from turngym.envs import load_suite

    task = load_suite("sokoban-6x6-1").get("sokoban-6x6-1-train-0003")
    moves = "\n".join(f"<action>{m}</action>" for m in task.answer) + "\n"
    result = subprocess.run(
        [sys.executable, "-m", "turngym", "play", "turngym/Sokoban-v0", "--task", task.id],
        input="jump\n" + moves, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Invalid action (no move found)" in result.stdout
    assert f"Episode ended (solved) after {len(task.answer) + 1} turns" in result.stdout


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: turngym" in capsys.readouterr().out
