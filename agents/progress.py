"""Progress that reads well anywhere: a live bar on a terminal, plain lines everywhere else.

``Progress(desc, total, unit)`` is used like a tqdm bar (``update``, ``set``, ``set_postfix``,
``close``, or as a context manager):

- On a terminal it *is* a tqdm bar.
- Off a terminal (output to a file, a pipe, CI, ``nohup``) it writes no carriage-return
  frames: one plain line when a unit finishes and ``interval_s`` (default 30 s) have passed
  since the last line, and one at the end (with ``leave=True``), e.g.
  ``train: 40/80 step (50%), 2m10s elapsed, ~2m10s left, reward=0.41``.
  Nothing is written between updates: a line says something finished.

``TURNGYM_PROGRESS=lines`` forces plain lines on a terminal too, ``TURNGYM_PROGRESS=off``
silences progress (``bar`` forces the bar).

:func:`quiet_library_bars` turns off the Hugging Face libraries' own bars (loading weights,
converting a GGUF file, writing shards) in the same places; long commands call it first.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

__all__ = ["Progress", "format_seconds", "progress_mode", "quiet_library_bars"]


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``"1m15s"``, ``3725`` -> ``"1h02m"``, ``9.4`` -> ``"9s"``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_mode(file: IO[str] | None = None) -> str:
    """``bar``, ``lines`` or ``off`` for output to ``file`` (default stderr); see the module doc."""
    file = file if file is not None else sys.stderr
    return os.environ.get("TURNGYM_PROGRESS") or ("bar" if _is_terminal(file) else "lines")


def quiet_library_bars(file: IO[str] | None = None) -> None:
    """Unless ``file`` (default stderr) gets live bars, silence the Hugging Face libraries' tqdm
    bars, which would write carriage-return frames into a log."""
    if progress_mode(file) == "bar":
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when the libraries load
    if "transformers" in sys.modules:  # already loaded: tell them directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


class Progress:
    """A progress display for long work; see the module docstring."""

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        *,
        initial: int = 0,
        file: IO[str] | None = None,
        interval_s: float = 30.0,
        disable: bool = False,
        leave: bool = True,
        mode: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.desc, self.total, self.unit, self.n = desc, total, unit, initial
        self.file = file if file is not None else sys.stderr
        self.interval_s, self.leave, self._clock = interval_s, leave, clock
        self.postfix: dict[str, Any] = {}
        mode = mode or progress_mode(self.file)
        self.mode = "off" if disable else mode
        self._start = self._last_line = clock()
        self._first = initial  # units done before this display started (a resumed run)
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.file, leave=leave)

    # -- tqdm-like API -------------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        self.set(self.n + n)

    def set(self, done: int, total: int | None = None) -> None:
        """Set the count of finished units (and the total, when it becomes known)."""
        if total is not None:
            self.total = total
        self.n = done
        if self._bar is not None:
            self._bar.total, self._bar.n = self.total, done
            self._bar.refresh()
        elif self.mode == "lines" and self._clock() - self._last_line >= self.interval_s:
            self._write()

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the count (``reward=0.41``); floats get 3 significant digits."""
        self.postfix = values
        if self._bar is not None:
            self._bar.set_postfix({k: _fmt(v) for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self.leave:
            self._write()
        self.mode = "off"  # a second close writes nothing

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain lines ---------------------------------------------------------------------------------
    def line(self) -> str:
        """The plain progress line for the current state."""
        elapsed = self._clock() - self._start
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        parts = [f"{self.desc}: {count}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{format_seconds(elapsed)} elapsed")
        done_here = self.n - self._first
        if self.total and 0 < done_here and self.n < self.total:
            parts.append(f"~{format_seconds(elapsed / done_here * (self.total - self.n))} left")
        parts.extend(f"{k}={_fmt(v)}" for k, v in self.postfix.items())
        return ", ".join(parts)

    def _write(self) -> None:
        self._last_line = self._clock()
        print(self.line(), file=self.file, flush=True)


def _is_terminal(file: IO[str]) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
