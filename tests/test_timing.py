import time
import types

import pytest

import edgert.timing
from edgert.settings import BenchSettings
from edgert.timing import measure


class FakeClock:
    """The timing module's clock, advanced only by the work being measured: the stopping rules
    are checked on exact durations, not on how a loaded machine schedules a busy loop."""

    def __init__(self) -> None:
        self.ns = 0

    def work(self, us: float) -> None:
        self.ns += int(us * 1000)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(edgert.timing, "time", types.SimpleNamespace(
        perf_counter_ns=lambda: fake.ns, time=time.time, get_clock_info=time.get_clock_info))
    return fake


def test_fixed_run_count_discards_warmup():
    calls = []
    raw = measure(lambda: calls.append(1), BenchSettings(warmup_runs=3, runs=17))
    assert len(calls) == 20
    assert len(raw.samples_ns) == 17 and len(raw.warmup_ns) == 3
    assert raw.stop_reason == "runs"
    assert all(b > a for a, b in zip(raw.starts_ns, raw.starts_ns[1:]))  # monotonic clock


def test_adaptive_stops_when_converged_after_min_time(clock):
    settings = BenchSettings(warmup_runs=1, min_duration_ms=50, max_duration_ms=5000)
    raw = measure(lambda: clock.work(200), settings)
    assert raw.stop_reason == "converged"
    elapsed_ms = (raw.starts_ns[-1] + raw.samples_ns[-1] - raw.starts_ns[0]) / 1e6
    assert 50 <= elapsed_ms < 5000
    assert set(raw.samples_ns) == {200_000}


def test_adaptive_respects_max_time_for_noisy_work(clock):
    # alternating 0.1 ms / 2 ms runs: the median's CI never gets within 0.1%
    state = {"i": 0}

    def noisy() -> None:
        state["i"] += 1
        clock.work(100 if state["i"] % 2 else 2000)

    settings = BenchSettings(warmup_runs=0, min_duration_ms=10, max_duration_ms=150,
                             target_ci_fraction=0.001)
    raw = measure(noisy, settings)
    assert raw.stop_reason == "max_time"


@pytest.mark.parametrize("fields, says", [
    ({"min_duration_ms": float("nan")}, "--min-time"),  # was accepted and written to the JSON as NaN
    ({"min_duration_ms": float("inf"), "max_duration_ms": float("inf")}, "--min-time"),  # ran for ever
    ({"seed": -1}, "--seed"),  # numpy's ValueError traceback
    ({"threads": 100_000}, "--threads"),  # ORT started them all
    ({"scenario": "server", "rate_qps": 1e-9}, "--rate"),  # the first query never came
])
def test_bench_settings_refuse_values_that_hang_or_poison_results(fields, says):
    from edgert.errors import UsageError
    from edgert.settings import BenchSettings

    with pytest.raises(UsageError, match=says):
        BenchSettings(**fields)
