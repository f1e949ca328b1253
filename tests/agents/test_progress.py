"""Progress output: a bar on a terminal, plain timed lines (no carriage returns) elsewhere."""

from __future__ import annotations

import io
import os

import pytest

from turngym.agents.progress import Progress, format_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (9.4, "9s"), (75.2, "1m15s"), (3725, "1h02m")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_off_a_terminal_one_line_per_interval_and_one_at_the_end(monkeypatch):
    monkeypatch.delenv("TURNGYM_PROGRESS", raising=False)
    out, clock = io.StringIO(), Clock()
    with Progress("train", total=80, unit="step", file=out, interval_s=30, clock=clock) as bar:
        assert bar.mode == "lines"
        for _ in range(40):  # 40 steps of 5 s: a line at 30 s, 60 s, ... not at every step
            clock.now += 5
            bar.update()
            bar.set_postfix(reward=0.41234, success="ok")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 200 // 30 + 1  # 6 timed lines, then the closing one
    assert lines[0] == "train: 6/80 step (8%), 30s elapsed, ~6m10s left, reward=0.412, success=ok"
    assert lines[-1] == "train: 40/80 step (50%), 3m20s elapsed, ~3m20s left, reward=0.412, success=ok"


def test_unknown_total_resumed_start_and_no_closing_line_without_leave(monkeypatch):
    monkeypatch.delenv("TURNGYM_PROGRESS", raising=False)
    out, clock = io.StringIO(), Clock()
    bar = Progress("rollout", unit="ep", file=out, clock=clock, leave=False)
    clock.now += 31
    bar.set(3)
    bar.close()
    bar.close()
    assert out.getvalue() == "rollout: 3 ep, 31s elapsed\n"
    out, clock = io.StringIO(), Clock()
    bar = Progress("train", total=10, unit="step", initial=6, file=out, clock=clock)
    clock.now += 40
    bar.update()  # one step in 40 s since the resume: 3 left take ~2 minutes
    assert out.getvalue() == "train: 7/10 step (70%), 40s elapsed, ~2m00s left\n"


def test_a_terminal_gets_a_bar_and_the_environment_can_override(monkeypatch):
    monkeypatch.delenv("TURNGYM_PROGRESS", raising=False)
    term = Terminal()
    with Progress("episodes", total=4, unit="ep", file=term) as bar:
        assert bar.mode == "bar"
        bar.set(4)
    assert "\r" in term.getvalue() and "4/4" in term.getvalue()
    monkeypatch.setenv("TURNGYM_PROGRESS", "lines")
    assert Progress("x", file=Terminal()).mode == "lines"
    monkeypatch.setenv("TURNGYM_PROGRESS", "off")
    quiet = io.StringIO()
    with Progress("x", total=1, file=quiet) as bar:
        bar.update()
    assert quiet.getvalue() == ""
    assert Progress("x", file=Terminal(), disable=True).mode == "off"


def test_eval_to_a_file_writes_plain_lines(tmp_path, capsys, monkeypatch):
    from turngym.cli import main

    monkeypatch.delenv("TURNGYM_PROGRESS", raising=False)
    code = main(["eval", "--env", "turngym/FrozenLake-v0", "--policy", "scripted:random", "--episodes", "3",
                 "--out", str(tmp_path / "e"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 0 and "\r" not in err
    assert err.splitlines()[-1].startswith("episodes: 3/3 ep (100%), ")


def test_library_bars_are_silenced_only_off_a_terminal(monkeypatch):
    import importlib

    from turngym.agents.progress import quiet_library_bars

    monkeypatch.delenv("TURNGYM_PROGRESS", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    hf_logging = importlib.import_module("transformers.utils.logging")
    monkeypatch.setattr(hf_logging, "_tqdm_active", True)
    quiet_library_bars(Terminal())
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ and hf_logging.is_progress_bar_enabled()
    quiet_library_bars(io.StringIO())
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert not hf_logging.is_progress_bar_enabled()
