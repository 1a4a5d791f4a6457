"""A progress bar on stderr while the suites run, so a fifteen-minute run is not silent.

Suites say how many phases they have (`plan`) and name each as it starts (`step`); the
runner owns the one `Progress` the module-level functions write to. On a terminal the bar
redraws in place; otherwise (CI logs, a pipe) each phase is one line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 24


class Progress:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.suite = ""
        self.total = 1
        self.done = 0
        self.started = time.monotonic()
        self.phases: list[str] = []

    def begin(self, suite: str) -> None:
        self.suite, self.total, self.done = suite, 1, 0
        self.started = time.monotonic()
        self.phases = []

    def plan(self, steps: int) -> None:
        self.total = max(1, steps)

    def step(self, label: str) -> None:
        self.phases.append(label)
        self._draw(label)
        self.done = min(self.total, self.done + 1)

    def end(self) -> float:
        elapsed = time.monotonic() - self.started
        self.done = self.total
        self._draw(f"done in {elapsed:.0f} s")
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        return elapsed

    def line(self, label: str) -> str:
        filled = round(WIDTH * self.done / self.total)
        bar = "#" * filled + "." * (WIDTH - filled)
        elapsed = time.monotonic() - self.started
        return f"{self.suite:<9} [{bar}] {self.done:>2}/{self.total:<2} {elapsed:>4.0f}s  {label}"

    def _draw(self, label: str) -> None:
        if not self.enabled:
            return
        text = self.line(label)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text[:120])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


current = Progress(enabled=False)


def plan(steps: int) -> None:
    current.plan(steps)


def step(label: str) -> None:
    current.step(label)
