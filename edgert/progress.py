"""Progress for long steps: a live display on a terminal, plain lines otherwise, nothing with --quiet.

The CLI opens one ``Progress`` per command; library code reports through the module-level
``step`` and ``transfer`` (a no-op unless a command opened a Progress in this context), so a
compile, an upload or a tune shows within a second of starting without threading callbacks
through every API. The agent never opens one: nothing is written to its protocol stream.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator, TextIO

PLAIN_INTERVAL_S = 2.0
PLAIN_AFTER_S = 1.0  # a step that lasts longer than this gets a line
_ACTIVE: contextvars.ContextVar["Progress | None"] = contextvars.ContextVar("edgert_progress", default=None)


class Step:
    """A running step: ``update(text)`` changes its line, ``close()`` ends it (idempotent)."""

    def __init__(self, progress: "Progress", text: str) -> None:
        self._p, self.text, self.started = progress, text, time.monotonic()
        self._tid: Any = None
        self._last_plain = 0.0
        self._timer: threading.Timer | None = None
        if progress.quiet:
            return
        if progress._rich is not None:
            self._tid = progress._rich.add_task(text, total=None, detail="")
        else:  # plain lines (a log, a pipe): only for steps still running after PLAIN_AFTER_S,
            # so a quick failure stays the one error line
            self._timer = threading.Timer(PLAIN_AFTER_S, self._announce)
            self._timer.daemon = True
            self._timer.start()

    def _announce(self) -> None:
        self._last_plain = time.monotonic()
        self._p._plain(f"{self.text} ...")

    def update(self, text: str, detail: str = "") -> None:
        self.text = text
        if self._p.quiet:
            return
        if self._tid is not None:
            self._p._rich.update(self._tid, description=text, detail=detail)
        elif time.monotonic() - max(self._last_plain, self.started) >= PLAIN_INTERVAL_S:
            self._last_plain = time.monotonic()
            self._p._plain(f"{text} {detail}".rstrip())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._tid is not None:
            self._p._rich.remove_task(self._tid)
            self._tid = None


def _own_stderr() -> TextIO:
    """A stream on a copy of stderr's descriptor: the display keeps reaching the terminal while
    an engine's output is sent to its log (``chatter.captured`` moves fd 2 during a TVM compile,
    which hid the compile's own progress line)."""
    try:
        sys.stderr.flush()
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):  # no real descriptor (a test's StringIO)
        return sys.stderr


class Progress:
    """``with Progress(...) as p:`` a live display for the command's long steps."""

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None,
                 max_duration_ms: float | None = None, runs: int | None = None) -> None:
        self.stream = stream or _own_stderr()
        self._owned = stream is None and self.stream is not sys.stderr
        self.quiet = quiet
        self.total = float(runs) if runs else (max_duration_ms or 0) / 1000.0
        self.by_runs = runs is not None
        self._rich: Any = None
        self._token: Any = None
        self._steps: list[Step] = []

    def __enter__(self) -> "Progress":
        if not self.quiet and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, Progress as RichProgress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn)
            self._rich = RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                      console=Console(file=self.stream), transient=True,
                                      refresh_per_second=10)
            self._rich.__enter__()
        self._token = _ACTIVE.set(None if self.quiet else self)
        return self

    def __exit__(self, *exc: object) -> None:
        for step in self._steps:  # a step still open (an error ended the command) says nothing more
            step.close()
        _ACTIVE.reset(self._token)
        if self._rich is not None:
            self._rich.__exit__(*exc)
        if self._owned:
            self.stream.close()

    def _plain(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def step(self, text: str) -> Step:
        self._steps.append(Step(self, text))
        return self._steps[-1]

    def task(self, name: str) -> Callable[[int, float], None]:
        """A callback ``(runs, elapsed_ms)`` for ``timing.measure``; until its first call the
        line says the model is loading (on a device: the upload and the load there)."""
        if self.quiet:
            return lambda n, ms: None
        step = self.step(f"{name}: loading the model")
        if step._tid is not None:
            rich, tid = self._rich, step._tid

            def update_rich(n: int, ms: float) -> None:
                rich.update(tid, description=f"{name}: measuring", total=self.total or None,
                            completed=n if self.by_runs else ms / 1000, detail=f"{n} runs")
            return update_rich

        def update_plain(n: int, ms: float) -> None:
            if step._timer is not None:
                step._timer.cancel()  # measuring: "loading" is over, announced or not
            step.update(f"{name}: {n} runs, {ms / 1000:.1f} s")
        return update_plain


@contextlib.contextmanager
def step(text: str) -> Iterator[Step | None]:
    """Show ``text`` with a spinner and the elapsed time while the block runs (if a command
    opened a Progress)."""
    active = _ACTIVE.get()
    if active is None:
        yield None
        return
    handle = active.step(text)
    try:
        yield handle
    finally:
        handle.close()


def transfer(text: str, total: int, start: int = 0) -> tuple[Callable[[int], None], Callable[[], None]]:
    """``(update(bytes_done), close())`` for a transfer of ``total`` bytes: bytes, rate and ETA.
    ``start``: bytes already there (a resumed upload), left out of the rate."""
    active = _ACTIVE.get()
    if active is None:
        return (lambda done: None), (lambda: None)
    handle = active.step(f"{text}: {_mb(0)}/{_mb(total)}")
    started = time.monotonic()
    sent = [0]

    def update(done: int) -> None:
        sent[0] = done
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = max(done - start, 0) / elapsed
        eta = (total - done) / rate if rate > 0 else float("inf")
        eta_text = f"ETA {eta:.0f} s" if eta != float("inf") else "ETA ?"
        if handle._tid is not None:
            active._rich.update(handle._tid, total=total or None, completed=done,
                                description=f"{text}: {_mb(done)}/{_mb(total)}",
                                detail=f"{_mb(rate)}/s {eta_text}")
        else:
            handle.update(f"{text}: {_mb(done)}/{_mb(total)}", f"{_mb(rate)}/s {eta_text}")

    def close() -> None:
        if handle._tid is None and not closed and sent[0] >= total:  # plain lines: how it went
            handle.close()
            elapsed = max(time.monotonic() - started, 1e-6)
            resumed = f", resumed at {_mb(start)} of {_mb(total)}" if start else ""
            active._plain(f"{text}: {_mb(total - start)} in {elapsed:.1f} s ({_mb((total - start) / elapsed)}/s"
                          f"{resumed})")
        closed.append(True)
        handle.close()
    closed: list[bool] = []
    return update, close


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
