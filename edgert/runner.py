"""Load a model (or a dynamic-network bundle) on this machine and time it: the device half
of a benchmark.

Runs the same way locally and inside the agent; returns raw data only (no statistics),
so the host analyses every run with the same code.
"""
from __future__ import annotations

import contextlib
import resource
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from edgert import loadgen
from edgert.backends import BackendOptions, Session, get_backend
from edgert.errors import ModelError, UsageError
from edgert.settings import BenchSettings
from edgert.tensors import check_dims, check_feeds, check_given_dims, random_feeds
from edgert.timing import ProgressFn, measure


def peak_rss_bytes() -> int:
    """Peak resident set size of this process: Linux's ``VmHWM`` (which ``reset_peak_rss``
    resets; ``ru_maxrss`` also keeps the peak of the process that exec'd us, a whole test
    suite's 1.4 GB), else ``ru_maxrss`` (KiB on Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> None:
    """Start the peak over from the current resident size (Linux: ``clear_refs`` 5), so a
    model's peak is not an earlier one's: with ``--backend ort --backend tvm`` the ORT column
    showed the TVM compiler's 450 MiB. Elsewhere the peak stays the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


BUNDLE_SUFFIX = ".edgert"


@contextlib.contextmanager
def prepared_session(model_path: Path, backend_name: str, settings: BenchSettings, *,
                     options: BackendOptions | None = None,
                     dims: Mapping[str, int] | None = None,
                     feeds: Mapping[str, np.ndarray] | None = None
                     ) -> Iterator[tuple[dict[str, Any], Session, dict[str, np.ndarray]]]:
    """(backend description, loaded session, checked feeds: given ones, the rest seeded random).

    A bundle (``.edgert``) carries its engines per segment, so ``backend_name`` must be
    ``bundle`` for it.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"no such model file: {model_path}", path=str(model_path))
    options = options or BackendOptions(threads=settings.threads)
    if model_path.suffix == BUNDLE_SUFFIX:
        if backend_name != "bundle":
            raise UsageError(f"{model_path.name} is a bundle: its engines were chosen at compile time "
                             "(use --backend bundle, or recompile with edgert compile --backend)")
        from edgert.dynamic import load

        session: Session = load(model_path, threads=options.threads)
        description = bundle_description(session.manifest)  # type: ignore[attr-defined]
    else:
        backend = get_backend(backend_name, options)
        session = backend.load(model_path)
        description = backend.describe()
    with session:
        check_dims(session.inputs, dims or {})
        given = dict(feeds or {})
        check_given_dims(session.inputs, dims or {}, given)
        made = random_feeds([s for s in session.inputs if s.name not in given], dims or {},
                            settings.seed)
        all_feeds = {**made, **given}
        check_feeds(session.inputs, all_feeds)
        yield description, session, all_feeds


def bundle_description(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``backend`` block for a bundle: its engines and which one runs each segment."""
    return {"name": "bundle", "version": manifest.get("created_by", "?"),
            "options": {"engines": manifest["engines"], "target": manifest["target"],
                        "segments": {s["id"]: s["engine"] for s in manifest["segments"]}}}


class _PathRecorder:
    """Per-run control-flow path and per-call segment times of a dynamic bundle."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.paths: list[str] = []
        self.host_overhead_ns: list[int] = []
        self.segments_ns: dict[str, list[int]] = {}
        self._pending: list[tuple[str, int]] = []
        runtime.on_segment = lambda seg, ns: self._pending.append((seg, ns))

    def after_run(self, warmup: bool) -> None:
        calls, self._pending = self._pending, []
        if warmup:
            return
        for seg, ns in calls:
            self.segments_ns.setdefault(seg, []).append(ns)
        trace = self.runtime.last_path
        self.paths.append(trace.key())
        self.host_overhead_ns.append(trace.host_overhead_ns)

    def to_dict(self) -> dict[str, Any]:
        return {"paths": self.paths, "host_overhead_ns": self.host_overhead_ns,
                "segments_ns": self.segments_ns}


def run_benchmark(model_path: Path, backend_name: str, settings: BenchSettings, *,
                  options: BackendOptions | None = None,
                  dims: Mapping[str, int] | None = None,
                  feeds: Mapping[str, np.ndarray] | None = None,
                  progress: ProgressFn | None = None,
                  cases: Sequence[tuple[str, Mapping[str, np.ndarray]]] = ()) -> dict[str, Any]:
    """Load ``model_path`` with ``backend_name``, check inputs, time it; return raw facts.

    With ``cases`` (name, feeds) the runs cycle through them in order (each checked first)
    and ``"cases"`` gives the case of every measured run, for per-case latency (and, for a
    bundle, per-path: different inputs take different branches).

    Returns ``{"backend", "inputs", "outputs", "raw", "peak_rss_bytes", "first_outputs",
    "load_ms", "first_inference_ms", "scenario"}`` and, for bundles,
    ``"dynamic"`` (path per run, segment call times, host overhead). ``load_ms`` covers
    building the session from the compiled artifact; the first inference is timed apart from
    the warm-up. Offline and server scenarios open one session per worker.
    """
    # inputs every case gives need no made-up default (which a symbolic dimension would stop)
    shared = set.intersection(*(set(given) for _, given in cases)) if cases else set()
    feeds = {**{name: cases[0][1][name] for name in shared}, **(feeds or {})}
    reset_peak_rss()
    t_load = time.perf_counter_ns()
    with prepared_session(model_path, backend_name, settings, options=options, dims=dims,
                          feeds=feeds) as (description, session, all_feeds):
        load_ms = (time.perf_counter_ns() - t_load) / 1e6
        recorder = _PathRecorder(session) if hasattr(session, "last_path") else None
        case_feeds = [_case_feeds(session, all_feeds, name, given) for name, given in cases]
        if case_feeds:
            all_feeds = case_feeds[0]
        t_first = time.perf_counter_ns()
        first = session.run(all_feeds)  # also the first warm-up run; catches run errors early
        first_ms = (time.perf_counter_ns() - t_first) / 1e6
        if recorder is not None:
            recorder.after_run(warmup=True)
        scenario: dict[str, Any] = {"name": settings.scenario, "concurrency": settings.concurrency}
        order: list[int] = []
        if settings.scenario == "single-stream" and case_feeds:
            def run_case() -> object:
                order.append(len(order) % len(case_feeds))
                return session.run(case_feeds[order[-1]])
            raw = measure(run_case, settings, progress, after_each=recorder.after_run if recorder else None)
        elif settings.scenario == "single-stream":
            raw = measure(lambda: session.run(all_feeds), settings, progress,
                          after_each=recorder.after_run if recorder else None)
        elif case_feeds:
            raise UsageError("--cases runs with --scenario single-stream only")
        else:
            raw, scenario = _loadgen(session, all_feeds, settings, progress, model_path, backend_name,
                                     options, dims, feeds)
        measured = {
            "backend": description,
            "inputs": [s.to_dict() | {"shape": list(all_feeds[s.name].shape)} for s in session.inputs],
            "outputs": [s.to_dict() for s in session.outputs],
            "raw": raw.to_dict(),
            "peak_rss_bytes": peak_rss_bytes(),
            "first_outputs": [np.asarray(o) for o in first],
            "load_ms": load_ms,
            "first_inference_ms": first_ms,
            "scenario": scenario,
            "batch": _batch(session, all_feeds),
        }
        if case_feeds:
            names = [name for name, _ in cases]
            measured["cases"] = [names[i] for i in order[len(raw.warmup_ns):]]
        source = (getattr(session, "manifest", None) or {}).get("source")
        if source:  # a bundle: the ONNX model it was compiled from (compare pairs them)
            measured["model_source"] = source
        if recorder is not None and settings.scenario == "single-stream":
            measured["dynamic"] = recorder.to_dict()
        return measured


def _batch(session: Session, feeds: Mapping[str, np.ndarray]) -> int:
    """Samples per query: the first input's leading size when that dimension is symbolic (a
    batch chosen with --shape), else 1."""
    first = session.inputs[0] if session.inputs else None
    if first is None or not first.shape or not isinstance(first.shape[0], str):
        return 1
    return int(np.shape(feeds[first.name])[0])


def _case_feeds(session: Session, defaults: dict[str, np.ndarray], name: str,
                given: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One case's feeds: its arrays over the defaults, checked against the model's inputs."""
    unknown = set(given) - {s.name for s in session.inputs}
    if unknown:
        raise UsageError(f"case {name!r} has arrays the model does not take: {', '.join(sorted(unknown))}")
    feeds = {**defaults, **{k: np.asarray(v) for k, v in given.items()}}
    check_feeds(session.inputs, feeds)
    return feeds


def _loadgen(session: Session, all_feeds: dict[str, np.ndarray], settings: BenchSettings,
             progress: ProgressFn | None, model_path: Path, backend_name: str,
             options: BackendOptions | None, dims: Mapping[str, int] | None,
             feeds: Mapping[str, np.ndarray] | None) -> tuple[Any, dict[str, Any]]:
    """Offline or server on ``settings.concurrency`` sessions (this one and fresh ones)."""
    with contextlib.ExitStack() as stack:
        runs = [lambda: session.run(all_feeds)]
        for _ in range(settings.concurrency - 1):
            _, other, other_feeds = stack.enter_context(prepared_session(
                model_path, backend_name, settings, options=options, dims=dims, feeds=feeds))
            runs.append(lambda s=other, f=other_feeds: s.run(f))
        if settings.scenario == "offline":
            return loadgen.offline(runs, settings, progress)
        assert settings.rate_qps is not None
        return loadgen.server(runs, settings, settings.rate_qps, progress)
