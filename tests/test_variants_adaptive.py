"""Calibration tables and the adaptive selector, on the real tiny and zoo models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgert.errors import UsageError
from edgert.settings import BenchSettings
from edgert.variants import AdaptiveModel, Policy, open as open_variants
from edgert.variants.adaptive import predict_ms
from edgert.variants.calibrate import FrequencySetting, calibrate
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
    for f in (300.0, 600.0, 1200.0, 2000.0):
        assert predict_ms(freqs, lat, f) == pytest.approx(1 + 800 / f)


def test_calibrate_stores_a_table_in_the_file(tiny_aio: Path) -> None:
    bench = BenchSettings(warmup_runs=1, runs=5)
    table = calibrate(tiny_aio, [FrequencySetting(2.0, label="b"), FrequencySetting(1.0, label="a")], bench)
    assert table["frequencies"] == [1.0, 2.0] and table["labels"] == ["a", "b"]
    with open_variants(tiny_aio) as vm:  # the file still verifies and carries the table
        assert vm.calibration["p50_ms"] == table["p50_ms"]
        assert len(vm.calibration["p50_ms"]) == len(vm.levels) == 3
        assert all(v > 0 for row in table["p50_ms"] for v in row)


def test_selects_by_frequency_with_dwell(tiny_aio: Path) -> None:
    clock = {"f": 1.0}
    model = AdaptiveModel(tiny_aio, budget_ms=10.0, frequency_source=lambda: clock["f"],
                          policy=Policy(min_dwell_runs=3, frequency_interval_s=0.0, ewma_alpha=1e-9),
                          table=_table([8.0, 4.0, 2.0]))
    model.run(FEEDS)
    assert model.level.index == 0  # 8 ms fits 10 ms
    clock["f"] = 0.5  # level 0 would take 16 ms, level 1 8 ms
    model.run(FEEDS)
    assert model.log()[-1]["level"] == 1 and model.log()[-1]["switched"]
    assert model.log()[-1]["reason"] == "over budget"
    clock["f"] = 1.0
    for _ in range(3):
        model.run(FEEDS)
    assert [d["level"] for d in model.log()[-3:]] == [1, 1, 0]  # dwell: 3 runs after a switch
    clock["f"] = 0.5
    for _ in range(3):
        model.run(FEEDS)
    clock["f"] = 0.85  # level 0 would take 9.4 ms: within budget, not within the 10% hysteresis
    for _ in range(6):
        model.run(FEEDS)
    assert {d["level"] for d in model.log()[-6:]} == {1}
    model.close()


def test_impossible_budget_runs_the_smallest(tiny_aio: Path) -> None:
    model = AdaptiveModel(tiny_aio, budget_ms=0.5, frequency_source=lambda: 1.0,
                          table=_table([8.0, 4.0, 2.0]))
    model.run(FEEDS)
    assert model.level.index == 2
    assert model.log()[-1]["reason"].startswith("no level meets the budget")
    model.close()


def test_correction_follows_observed_latency(tiny_aio: Path) -> None:
    """The table claims 100 ms; the tiny model takes well under 10 ms, so the correction drops
    to the clip bound (one run can move it by at most a factor of 4**alpha)."""
    model = AdaptiveModel(tiny_aio, budget_ms=1000.0, frequency_source=lambda: 1.0,
                          table=_table([100.0, 50.0, 25.0]))
    for _ in range(30):
        model.run(FEEDS)
    assert 0.25 - 1e-9 <= model.correction < 0.26
    assert model.log()[-1]["observed_ms"] < 10
    model.close()


def test_uncalibrated_file_is_refused(tiny_aio: Path) -> None:
    with pytest.raises(UsageError, match="calibrat"):
        AdaptiveModel(tiny_aio, budget_ms=5, frequency_source=lambda: 1.0)
