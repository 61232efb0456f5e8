"""Progress for long measurements: a bar on a terminal, plain lines otherwise, nothing with --quiet."""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

PLAIN_INTERVAL_S = 2.0


class Progress:
    """``with Progress(...) as p: task = p.task("ort"); task(n, elapsed_ms)``."""

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None,
                 max_duration_ms: float | None = None, runs: int | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.total = float(runs) if runs else (max_duration_ms or 0) / 1000.0
        self.by_runs = runs is not None
        self._rich: Any = None

    def __enter__(self) -> "Progress":
        if not self.quiet and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn)
            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.fields[runs]} runs"), TimeElapsedColumn(),
                                      console=Console(file=self.stream), transient=True)
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def task(self, name: str) -> Callable[[int, float], None]:
        """A callback ``(runs, elapsed_ms)`` for ``timing.measure``."""
        if self.quiet:
            return lambda n, ms: None
        if self._rich is not None:
            tid = self._rich.add_task(name, total=self.total or None, runs=0)

            def update_rich(n: int, ms: float) -> None:
                self._rich.update(tid, completed=n if self.by_runs else ms / 1000, runs=n)
            return update_rich
        last = [0.0]

        def update_plain(n: int, ms: float) -> None:
            now = time.monotonic()
            if now - last[0] >= PLAIN_INTERVAL_S:
                last[0] = now
                self.stream.write(f"{name}: {n} runs, {ms / 1000:.1f} s\n")
                self.stream.flush()
        return update_plain
