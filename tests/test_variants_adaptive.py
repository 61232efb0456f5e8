"""Calibration tables and the adaptive selector, on the real tiny and zoo models."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from edgert.errors import UsageError
from edgert.settings import BenchSettings
from edgert.variants import AdaptiveModel, Policy, open as open_variants
from edgert.variants.adaptive import predict_ms
from edgert.variants.calibrate import calibrate
from edgert.variants.frequency import FrequencySetting
from edgert.variants.prune import prune

from test_variants_prune import tiny_model

FEEDS = {"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}


@pytest.fixture
def tiny_aio(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.aio"
    prune(tiny_model(tmp_path / "tiny.onnx"), [0, 0.5, 0.75], path)
    return path


def _table(p50_at_full: list[float]) -> dict:
    """A table for levels whose latency is proportional to 1/f (what a CPU-bound model does)."""
    return {"frequencies": [0.5, 1.0], "p50_ms": [[2 * p, p] for p in p50_at_full]}


def test_predict_is_exact_for_a_plus_b_over_f() -> None:
    freqs = [400.0, 800.0, 1600.0]
    lat = [1 + 800 / f for f in freqs]
    for f in (600.0, 1200.0, 2000.0):
        assert predict_ms(freqs, lat, f) == pytest.approx(1 + 800 / f)
    # below the lowest point: that point scaled by f_lowest / f, the most a + b/f (a >= 0) can be
    assert predict_ms(freqs, lat, 300.0) == pytest.approx(lat[0] * 400 / 300)


def test_below_the_table_a_noisy_pair_never_predicts_a_faster_run() -> None:
    """1.00 ms at 600 MHz and 1.03 ms at 1200 (noise the wrong way): a line through them
    predicted 0.7 ms at 100 MHz, so the full level was chosen for a 1.1 ms budget."""
    assert predict_ms([600.0, 1200.0], [1.00, 1.03], 100.0) == pytest.approx(6.0)


def test_calibrate_stores_a_table_in_the_file(tiny_aio: Path) -> None:
    bench = BenchSettings(warmup_runs=1, runs=5)
    table = calibrate(tiny_aio, [FrequencySetting(2.0, label="b"), FrequencySetting(1.0, label="a")], bench)
    assert table["frequencies"] == [1.0, 2.0] and table["labels"] == ["a", "b"]
    with open_variants(tiny_aio) as vm:  # the file still verifies and carries the table
        assert vm.calibration["p50_ms"] == table["p50_ms"]
        assert len(vm.calibration["p50_ms"]) == len(vm.levels) == 3
        assert all(v > 0 for row in table["p50_ms"] for v in row)


def _step(model: AdaptiveModel, observed_ms: float) -> dict:
    """One decision fed a chosen latency (``prepare`` + ``observe``, as ``run`` does around inference)."""
    frequency, switched, reason = model.prepare()
    return dataclasses.asdict(model.observe(frequency, observed_ms, switched, reason))


def test_selects_by_frequency_with_dwell(tiny_aio: Path) -> None:
    clock = {"f": 1.0}
    model = AdaptiveModel(tiny_aio, budget_ms=10.0, frequency_source=lambda: clock["f"],
                          policy=Policy(min_dwell_runs=3, frequency_interval_s=0.0),
                          table=_table([8.0, 4.0, 2.0]))
    table_ms = lambda: model.predict(model.level.index, clock["f"])  # noqa: E731 - runs as the table says
    _step(model, 8.0)
    assert model.level.index == 0  # 8 ms fits 10 ms
    clock["f"] = 0.5  # level 0 would take 16 ms, level 1 8 ms
    d = _step(model, 8.0)
    assert d["level"] == 1 and d["switched"] and d["reason"] == "over budget"
    clock["f"] = 1.0
    assert [_step(model, table_ms())["level"] for _ in range(3)] == [1, 1, 0]  # dwell: 3 runs after a switch
    clock["f"] = 0.5
    for _ in range(3):
        _step(model, table_ms())
    clock["f"] = 0.85  # level 0 would take 9.4 ms: within budget, not within the 10% hysteresis
    assert {_step(model, table_ms())["level"] for _ in range(6)} == {1}
    model.close()


def test_impossible_budget_runs_the_smallest(tiny_aio: Path) -> None:
    model = AdaptiveModel(tiny_aio, budget_ms=0.5, frequency_source=lambda: 1.0,
                          table=_table([8.0, 4.0, 2.0]))
    model.run(FEEDS)
    assert model.level.index == 2
    assert model.log()[-1]["reason"].startswith("no level meets the budget")
    model.close()


def test_correction_is_the_median_of_recent_runs_per_frequency_and_level(tiny_aio: Path) -> None:
    """A bimodal level (most runs 4 ms, a third 16 ms, table 4 ms) is predicted at its median,
    4 ms, so the 5 ms budget keeps it; the old mean-like estimate would have dropped it."""
    clock = {"f": 1.0}
    model = AdaptiveModel(tiny_aio, budget_ms=5.0, frequency_source=lambda: clock["f"],
                          policy=Policy(min_dwell_runs=0, frequency_interval_s=0.0),
                          table=_table([8.0, 4.0, 2.0]))
    _step(model, 4.0)
    assert model.level.index == 1
    levels = [_step(model, 16.0 if i % 3 == 2 else 4.0)["level"] for i in range(30)]
    assert set(levels) == {1} and model.corrections(1.0)[1] == 1.0
    clock["f"] = 0.5  # nothing observed at this frequency yet: the table holds (level 2 takes 4 ms)
    assert model.corrections(0.5) == [1.0, 1.0, 1.0]
    assert _step(model, 12.0)["level"] == 2  # but it runs at 3x its entry...
    for _ in range(2):
        _step(model, 12.0)
    assert model.corrections(0.5)[2] == pytest.approx(3.0)  # ...which the next choices use
    clock["f"] = 1.0
    assert model.corrections(1.0)[1] == 1.0  # the runs at 0.5 do not change level 1 at 1.0
    model.close()


def test_runs_record_real_latencies(tiny_aio: Path) -> None:
    model = AdaptiveModel(tiny_aio, budget_ms=1000.0, frequency_source=lambda: 1.0,
                          table=_table([100.0, 50.0, 25.0]))
    t0 = time.perf_counter()
    for _ in range(5):
        model.run(FEEDS)
    wall_ms = (time.perf_counter() - t0) * 1e3
    log = model.log()
    assert all(d["observed_ms"] > 0 for d in log) and log[-1]["level"] == 0
    assert sum(d["observed_ms"] for d in log) <= wall_ms  # milliseconds, measured inside the runs
    assert model.corrections(1.0)[0] == pytest.approx(float(np.median([d["observed_ms"] for d in log])) / 100)
    model.close()


def test_uncalibrated_file_is_refused(tiny_aio: Path) -> None:
    with pytest.raises(UsageError, match="calibrat"):
        AdaptiveModel(tiny_aio, budget_ms=5, frequency_source=lambda: 1.0)


@pytest.mark.parametrize("table, says", [
    ({"frequencies": [0.5, 1.0], "p50_ms": [[1.0]] * 3}, "one latency per frequency"),
    ({"frequencies": [1.0], "p50_ms": [["a"]] * 3}, "finite number"),
    ({"frequencies": [], "p50_ms": [[]] * 3}, "at least one frequency"),
    ({"frequencies": [1.0], "p50_ms": [[float("nan")]] * 3}, "finite number"),
    ({"frequencies": [1.0, 1.0], "p50_ms": [[1.0, 2.0]] * 3}, "distinct and ascending"),
    ({"frequencies": [0.0], "p50_ms": [[1.0]] * 3}, "above 0"),
    ({"frequencies": [1.0], "p50_ms": [[-1.0]] * 3}, "above 0"),
])
def test_a_given_table_is_checked_before_use(tiny_aio: Path, table: dict, says: str) -> None:
    """A short row was an IndexError at the first run, text a ValueError, NaN used as is, a
    repeated frequency a division by zero."""
    with pytest.raises(UsageError, match=says):
        AdaptiveModel(tiny_aio, budget_ms=1.0, frequency_source=lambda: 1.0, table=table)


@pytest.mark.parametrize("policy", [{"min_dwell_runs": 2.5}, {"correction_window": float("nan")},
                                    {"frequency_interval_s": -1}, {"log_size": 0}, {"hysteresis": "0.1"}])
def test_a_bad_policy_is_one_line(policy: dict) -> None:
    with pytest.raises(UsageError, match="policy"):
        Policy(**policy)
