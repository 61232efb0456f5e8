"""The timing loop. It runs on the device and only collects raw samples.

Everything is on the monotonic clock (``time.perf_counter_ns`` is CLOCK_MONOTONIC on Linux),
so power samples taken on the same device can be aligned with the runs afterwards.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from edgert.settings import BenchSettings
from edgert.stats import ci_converged

ProgressFn = Callable[[int, float], None]  # (runs so far, elapsed ms)

CHECK_EVERY = 0.1  # re-check the stopping rule when the run count grew by 10%


@dataclasses.dataclass
class RawRun:
    """What the device sends back: raw samples and how the loop ended. No statistics."""

    samples_ns: list[int]
    starts_ns: list[int]  # monotonic start time of each measured run
    warmup_ns: list[int]
    stop_reason: str  # "runs", "converged", "max_time", "max_runs"
    clock: str
    timer_resolution_ns: float
    start_unix: float
    end_unix: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RawRun":
        return cls(**data)


def _clock() -> tuple[str, float]:
    info = time.get_clock_info("perf_counter")
    return info.implementation, info.resolution * 1e9


def measure(run: Callable[[], object], settings: BenchSettings,
            progress: ProgressFn | None = None,
            after_each: Callable[[bool], None] | None = None) -> RawRun:
    """Warm up, then time ``run()`` until ``settings`` say stop.

    With ``settings.runs`` the count is fixed. Otherwise runs continue until the 95% CI of
    the median is within ``target_ci_fraction`` (after ``min_duration_ms`` and ``min_runs``),
    or ``max_duration_ms`` / ``max_runs`` is reached. ``after_each(warmup)`` runs after
    every run, outside the timed interval (e.g. to record a dynamic network's path).
    """
    clock_name, resolution_ns = _clock()
    start_unix = time.time()
    warmup = []
    for _ in range(settings.warmup_runs):
        t0 = time.perf_counter_ns()
        run()
        warmup.append(time.perf_counter_ns() - t0)
        if after_each is not None:
            after_each(True)

    samples: list[int] = []
    starts: list[int] = []
    begin = time.perf_counter_ns()
    next_check = settings.min_runs
    reason = "runs"
    while True:
        t0 = time.perf_counter_ns()
        run()
        t1 = time.perf_counter_ns()
        samples.append(t1 - t0)
        starts.append(t0)
        if after_each is not None:
            after_each(False)
        n = len(samples)
        elapsed_ms = (t1 - begin) / 1e6
        if progress is not None:
            progress(n, elapsed_ms)
        if settings.runs is not None:
            if n >= settings.runs:
                break
            continue
        if n >= settings.max_runs:
            reason = "max_runs"
            break
        if elapsed_ms >= settings.max_duration_ms:
            reason = "max_time"
            break
        if n >= next_check and elapsed_ms >= settings.min_duration_ms:
            next_check = max(n + 1, int(n * (1 + CHECK_EVERY)))
            if ci_converged(samples, settings.target_ci_fraction):
                reason = "converged"
                break
    return RawRun(samples, starts, warmup, reason, clock_name, resolution_ns, start_unix, time.time())
