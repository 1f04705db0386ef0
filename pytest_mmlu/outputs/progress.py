"""Live progress of a long evaluation, around pytest's output capture."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import pytest

from ..text import middle_cut

# -- during the run -----------------------------------------------------------------------------
TERMINAL_EVERY_S = 0.5  # a terminal line is redrawn in place: cheap, so often


PLAIN_EVERY_S = 10.0  # a CI log keeps every line: few of them


class Progress:
    """Progress of one evaluation, around pytest's output capture.

    On a terminal: one line, redrawn in place after pytest's own (``test_x.py ..``) and
    cleared when the evaluation ends, so the terminal shows what pytest alone would. In a CI
    log (not a terminal): a plain line every PLAIN_EVERY_S, and pytest does not print the
    file name again after it. Short evaluations print nothing."""

    def __init__(self, reporter: Any, capture: Any, nodeid: str) -> None:
        self._reporter = reporter
        self._capture = capture
        self._nodeid = nodeid
        tw = getattr(reporter, "_tw", None)
        # In place needs the terminal writer's file and line (private, hence the fallback).
        self._tty = bool(getattr(reporter, "isatty", False)) and hasattr(tw, "_file") and hasattr(tw, "_current_line")
        self._every = TERMINAL_EVERY_S if self._tty else PLAIN_EVERY_S
        self._start = self._last = time.perf_counter()
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self._last < self._every:
            return
        self._last = now
        rate = done / max(now - self._start, 1e-9)
        text = f"[mmlu] {self._nodeid}: {done}/{total} questions, {rate:.1f} q/s"
        with self._around_capture():
            self._draw(text) if self._tty else self._line(text)

    def close(self) -> None:
        """Clear the in-place line (a terminal); nothing to do for plain lines."""
        if self._drawn:
            with self._around_capture():
                self._raw("\r" + self._reporter._tw._current_line + "\x1b[K")
            self._drawn = False

    def _draw(self, text: str) -> None:
        tw = self._reporter._tw
        line = tw._current_line
        room = max(getattr(tw, "fullwidth", 80) - len(line) - 2, 10)
        gap = "" if line.endswith(" ") else " "
        self._raw("\r" + line + gap + middle_cut(text, room) + "\x1b[K")
        self._drawn = True

    def _raw(self, text: str) -> None:
        file = self._reporter._tw._file
        file.write(text)
        file.flush()

    def _line(self, text: str) -> None:
        reporter = self._reporter
        where = reporter.currentfspath
        if getattr(reporter._tw, "width_of_current_line", 1) == 0:
            reporter.currentfspath = None  # at a line start (after our last line): no empty line
        reporter.write_line(text)
        # write_line forgets the file pytest was printing results for, and pytest would print its
        # name again before the next result: the result goes on the next line instead.
        reporter.currentfspath = where

    def _around_capture(self) -> Any:
        return nullcontext() if self._capture is None else self._capture.global_and_fixture_disabled()


def progress(config: pytest.Config, nodeid: str) -> Progress | None:
    """A progress display for one evaluation, or None when quiet (``-q``) or without a terminal
    reporter."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.get_verbosity() < 0:
        return None
    return Progress(reporter, config.pluginmanager.get_plugin("capturemanager"), nodeid)
