"""Load a model on this machine and time it: the device half of a benchmark.

Runs the same way locally and inside the agent; returns raw data only (no statistics),
so the host analyses every run with the same code.
"""
from __future__ import annotations

import contextlib
import resource
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from backends import Backend, BackendOptions, Session, get_backend
from edgert.errors import ModelError
from edgert.settings import BenchSettings
from edgert.tensors import check_feeds, random_feeds
from edgert.timing import ProgressFn, measure


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def prepared_session(model_path: Path, backend_name: str, settings: BenchSettings, *,
                     options: BackendOptions | None = None,
                     dims: Mapping[str, int] | None = None,
                     feeds: Mapping[str, np.ndarray] | None = None
                     ) -> Iterator[tuple[Backend, Session, dict[str, np.ndarray]]]:
    """A loaded session and checked feeds (given ones, the rest seeded random)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"no such model file: {model_path}", path=str(model_path))
    backend = get_backend(backend_name, options or BackendOptions(threads=settings.threads))
    with backend.load(model_path) as session:
        given = dict(feeds or {})
        made = random_feeds([s for s in session.inputs if s.name not in given], dims or {},
                            settings.seed)
        all_feeds = {**made, **given}
        check_feeds(session.inputs, all_feeds)
        yield backend, session, all_feeds


def run_benchmark(model_path: Path, backend_name: str, settings: BenchSettings, *,
                  options: BackendOptions | None = None,
                  dims: Mapping[str, int] | None = None,
                  feeds: Mapping[str, np.ndarray] | None = None,
                  progress: ProgressFn | None = None) -> dict[str, Any]:
    """Load ``model_path`` with ``backend_name``, check inputs, time it; return raw facts.

    Returns ``{"backend", "inputs", "outputs", "raw", "peak_rss_bytes", "first_outputs"}``.
    """
    with prepared_session(model_path, backend_name, settings, options=options, dims=dims,
                          feeds=feeds) as (backend, session, all_feeds):
        first = session.run(all_feeds)  # also the first warm-up run; catches run errors early
        raw = measure(lambda: session.run(all_feeds), settings, progress)
        return {
            "backend": backend.describe(),
            "inputs": [s.to_dict() | {"shape": list(all_feeds[s.name].shape)} for s in session.inputs],
            "outputs": [s.to_dict() for s in session.outputs],
            "raw": raw.to_dict(),
            "peak_rss_bytes": peak_rss_bytes(),
            "first_outputs": [np.asarray(o) for o in first],
        }
