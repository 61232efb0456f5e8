"""MLPerf LoadGen's Offline and Server scenarios: the device half, raw times only.

* **offline** — every query is available at once; ``concurrency`` workers (one session each)
  take them as fast as they can. The figure of merit is throughput (inferences/s); the
  per-query latency is the service time alone.
* **server** — queries arrive as a Poisson process at ``rate_qps`` (seeded exponential gaps)
  and wait in a FIFO queue for one of ``concurrency`` workers. A query's latency runs from its
  scheduled arrival to its completion, so queueing is included: the figure of merit is the
  latency percentiles under that load, and whether the completed rate kept up.

The single-stream scenario (one query after the other) is ``edgert.timing.measure``.
How many queries: ``settings.runs`` if given, else enough for ``min_duration_ms`` and
``min_runs``; issuing stops at ``max_duration_ms`` (the queue is drained, not dropped).
"""
from __future__ import annotations

import math
import queue
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from edgert.settings import BenchSettings
from edgert.timing import ProgressFn, RawRun, _clock

Run = Callable[[], object]


def _query_count(settings: BenchSettings, rate_qps: float | None) -> int | None:
    """Fixed count, or None (offline: until the time rules say stop)."""
    if settings.runs is not None:
        return settings.runs
    if rate_qps is None:
        return None
    return max(settings.min_runs, math.ceil(rate_qps * settings.min_duration_ms / 1e3))


def _warm(runs: Sequence[Run], settings: BenchSettings) -> list[int]:
    warmup = []
    for run in runs:  # every worker's session is warmed, the first one's times are kept
        for _ in range(settings.warmup_runs):
            t0 = time.perf_counter_ns()
            run()
            if run is runs[0]:
                warmup.append(time.perf_counter_ns() - t0)
    return warmup


def offline(runs: Sequence[Run], settings: BenchSettings,
            progress: ProgressFn | None = None) -> tuple[RawRun, dict[str, Any]]:
    """All queries at once on ``len(runs)`` workers; (raw service times, scenario block)."""
    clock_name, resolution_ns = _clock()
    start_unix = time.time()
    warmup = _warm(runs, settings)
    fixed = _query_count(settings, None)
    lock = threading.Lock()
    issued = [0]
    samples: list[tuple[int, int]] = []  # (start, duration)
    begin = time.perf_counter_ns()
    reason = ["runs" if fixed is not None else "max_time"]

    def take() -> bool:
        with lock:
            elapsed_ms = (time.perf_counter_ns() - begin) / 1e6
            if fixed is not None:
                if issued[0] >= fixed:
                    return False
            elif elapsed_ms >= settings.max_duration_ms or issued[0] >= settings.max_runs:
                reason[0] = "max_runs" if issued[0] >= settings.max_runs else "max_time"
                return False
            elif issued[0] >= settings.min_runs and elapsed_ms >= settings.min_duration_ms:
                reason[0] = "duration"
                return False
            issued[0] += 1
            return True

    def worker(run: Run) -> None:
        while take():
            t0 = time.perf_counter_ns()
            run()
            t1 = time.perf_counter_ns()
            with lock:
                samples.append((t0, t1 - t0))
                n = len(samples)
            if progress is not None and run is runs[0]:
                progress(n, (t1 - begin) / 1e6)

    _run_workers(worker, runs)
    end = time.perf_counter_ns()
    samples.sort()
    raw = RawRun([d for _, d in samples], [s for s, _ in samples], warmup, reason[0], clock_name,
                 resolution_ns, start_unix, time.time())
    wall_s = (end - begin) / 1e9
    return raw, {"name": "offline", "concurrency": len(runs), "queries": len(samples),
                 "duration_s": wall_s, "throughput_ips": len(samples) / wall_s}


def server(runs: Sequence[Run], settings: BenchSettings, rate_qps: float,
           progress: ProgressFn | None = None) -> tuple[RawRun, dict[str, Any]]:
    """Poisson arrivals at ``rate_qps`` into a FIFO served by ``len(runs)`` workers; latency
    from scheduled arrival to completion; (raw, scenario block with service times)."""
    clock_name, resolution_ns = _clock()
    start_unix = time.time()
    warmup = _warm(runs, settings)
    count = _query_count(settings, rate_qps)
    assert count is not None
    gaps_ns = np.random.default_rng(settings.seed).exponential(1e9 / rate_qps, size=count)
    arrivals = np.cumsum(gaps_ns).astype(np.int64)
    pending: queue.Queue[int | None] = queue.Queue()
    done: list[tuple[int, int, int]] = []  # (index, completion, service)
    lock = threading.Lock()
    begin = time.perf_counter_ns()

    def worker(run: Run) -> None:
        while (index := pending.get()) is not None:
            t0 = time.perf_counter_ns()
            run()
            t1 = time.perf_counter_ns()
            with lock:
                done.append((index, t1, t1 - t0))
                n = len(done)
            if progress is not None and run is runs[0]:  # callbacks from one thread only
                progress(n, (t1 - begin) / 1e6)

    threads = [threading.Thread(target=worker, args=(run,), daemon=True) for run in runs]
    for t in threads:
        t.start()
    issued, reason = 0, "runs"
    for index, at in enumerate(arrivals):
        if settings.runs is None and (at / 1e6 >= settings.max_duration_ms):
            reason = "max_time"
            break
        delay = (begin + int(at) - time.perf_counter_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        pending.put(index)
        issued += 1
    for _ in threads:
        pending.put(None)
    for t in threads:
        t.join()
    end = time.perf_counter_ns()
    done.sort()
    scheduled = [begin + int(arrivals[i]) for i, _, _ in done]
    latencies = [t1 - s for (_, t1, _), s in zip(done, scheduled)]
    raw = RawRun(latencies, scheduled, warmup, reason, clock_name, resolution_ns, start_unix, time.time())
    wall_s = (end - begin) / 1e9
    return raw, {"name": "server", "concurrency": len(runs), "rate_qps": rate_qps, "queries": issued,
                 "scheduled_qps": issued / (arrivals[issued - 1] / 1e9) if issued else 0.0,
                 "duration_s": wall_s, "throughput_ips": issued / wall_s,
                 "service_ns": [s for _, _, s in done]}


def _run_workers(worker: Callable[[Run], None], runs: Sequence[Run]) -> None:
    if len(runs) == 1:
        worker(runs[0])
        return
    threads = [threading.Thread(target=worker, args=(run,), daemon=True) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
