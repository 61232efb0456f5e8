"""Run a model or bundle once per input case on this machine: outputs and the path taken.

The device half of ``edgert run`` and ``edgert validate --device``: the agent calls it for
an ``artifact.run`` request and ``--device local`` calls it directly, so both report the
same thing. Device side: numpy and the engines only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgert.backends import BackendOptions, Session, get_backend
from edgert.errors import InputError, ModelError, UsageError
from edgert.runner import BUNDLE_SUFFIX
from edgert.tensors import check_feeds


def run_cases(model_path: Path, backend: str, cases: Sequence[Mapping[str, np.ndarray]], *,
              target: str = "host", threads: int | None = None) -> list[dict[str, Any]]:
    """One record per case: ``{"outputs": [array, ...], "names": [output name, ...]}``, plus ``"path"`` (``Trace.to_dict``
    with If margins, and the segments called) for a bundle, or ``{"error": message}`` when
    the bundle refuses that input (InputError); other errors end the whole run.

    A model file needs every input in each case; a bundle (``backend="bundle"``) checks
    its own inputs.
    """
    model_path = Path(model_path)
    if not cases:
        return []
    records = []
    bundle = model_path.suffix == BUNDLE_SUFFIX
    with _load(model_path, backend, BackendOptions(threads=threads, target=target)) as session:
        if bundle:
            session.record_margins = True  # type: ignore[attr-defined]
        for feeds in cases:
            feeds = {k: np.asarray(v) for k, v in feeds.items()}
            try:
                if not bundle:
                    check_feeds(session.inputs, feeds)
                outputs = session.run(feeds)
            except InputError as exc:
                if not bundle:
                    raise
                records.append({"error": exc.message})
                continue
            record: dict[str, Any] = {"outputs": [np.asarray(o) for o in outputs],
                                      "names": [o.name for o in session.outputs]}
            if bundle:
                trace = session.last_path  # type: ignore[attr-defined]
                record["path"] = dict(trace.to_dict(), segments=trace.segments)
            records.append(record)
    return records


def _load(model_path: Path, backend: str, options: BackendOptions) -> Session:
    """The bundle's runtime, or the model on ``backend``; no feeds are made up here."""
    if not model_path.is_file():
        raise ModelError(f"no such model file: {model_path}", path=str(model_path))
    if model_path.suffix == BUNDLE_SUFFIX:
        if backend != "bundle":
            raise UsageError(f"{model_path.name} is a bundle: its engines were chosen at compile "
                             f"time (use --backend bundle)")
        from edgert.dynamic import load

        return load(model_path, threads=options.threads)
    return get_backend(backend, options).load(model_path)
