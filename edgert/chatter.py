"""Keep engine libraries' own output off the terminal.

TVM's importer prints multi-line conversion errors (and "Error converting operator ..."
on imports that then succeed), TensorFlow and onnx2tf print progress and warnings, LiteRT
announces its XNNPACK delegate ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
on every interpreter. They write from C++ as well as Python, so the file descriptors are
redirected, not just ``sys.stdout``. On the core floor: the device-side LiteRT session uses
it too. The text goes to ``<cache>/edgert/logs/<engine>.log`` (the newest run
last); ``edgert --debug`` lets it through to the terminal instead.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from edgert.cache import cache_root

DEBUG_ENV = "EDGERT_DEBUG"  # set by ``edgert --debug``
_MAX_LOG_BYTES = 4 << 20  # a log above this starts over


def log_path(engine: str) -> Path:
    return cache_root() / "logs" / f"{engine}.log"  # $EDGERT_CACHE like every other cache


@contextlib.contextmanager
def captured(engine: str, what: str) -> Iterator[Path]:
    """Send everything written to stdout/stderr inside the block to ``engine``'s log."""
    path = log_path(engine)
    if os.environ.get(DEBUG_ENV):
        yield path
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "w" if path.exists() and path.stat().st_size > _MAX_LOG_BYTES else "a"
        log = open(path, mode)
    except OSError:  # a read-only home on a board: chatter on the terminal beats a failed run
        yield path
        return
    with log:
        log.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {what}\n")
        log.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield path
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
