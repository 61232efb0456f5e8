"""auto_rule.decide: on a device the baseline stays unless another candidate is clearly faster."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.devices.timer import bench_options, settings_for
from edgert.dynamic.auto_rule import ALPHA, MARGIN, decide
from edgert.errors import InternalError


def _samples(median: float, spread: float, n: int = 20, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(median + spread * rng.uniform(-1, 1, n))


def test_a_clearly_faster_challenger_replaces_the_baseline():
    decision = decide("ort", {"ort": _samples(10.0, 0.2), "tvm": _samples(7.0, 0.2, seed=1)})
    assert decision.chosen == "tvm" and decision.challenger == "tvm"
    assert decision.median_ratio == pytest.approx(0.7, abs=0.03) and decision.p_value < ALPHA
    assert "Mann-Whitney" in decision.reason and f"{decision.median_ratio:.2f}x" in decision.reason
    assert type(decision.median_ratio) is float  # goes into the manifest as JSON


def test_a_significant_win_within_the_margin_keeps_the_baseline():
    """3% faster with no overlap at all: significant, but not worth leaving the baseline."""
    decision = decide("whole_model", {"whole_model": _samples(10.0, 0.01),
                                      "partitioned": _samples(10.0 * (1 - MARGIN + 0.02), 0.01)})
    assert decision.p_value < ALPHA and decision.median_ratio > 1 - MARGIN
    assert decision.chosen == "whole_model"


def test_a_faster_median_within_the_noise_keeps_the_baseline():
    """Medians 20% apart, but five samples each spread over 2x: the test cannot tell them apart."""
    baseline, challenger = [10.0, 6.0, 14.0, 9.0, 12.0], [8.0, 13.0, 5.0, 7.0, 11.0]
    decision = decide("ort", {"ort": baseline, "tvm": challenger})
    assert decision.median_ratio < 1 - MARGIN and decision.p_value >= ALPHA
    assert decision.chosen == "ort"


def test_a_slower_challenger_and_identical_samples_keep_the_baseline():
    assert decide("ort", {"ort": _samples(5.0, 0.1), "tvm": _samples(9.0, 0.1)}).chosen == "ort"
    same = decide("ort", {"ort": [2.0] * 8, "tvm": [2.0] * 8})
    assert same.chosen == "ort" and same.p_value == 1.0


def test_the_fastest_of_several_challengers_is_tested():
    decision = decide("ort", {"ort": _samples(10.0, 0.1), "tvm": _samples(9.0, 0.1),
                              "tflite": _samples(4.0, 0.1)})
    assert decision.challenger == "tflite" and decision.chosen == "tflite"


def test_the_baseline_alone_is_kept_and_a_missing_one_is_an_internal_error():
    alone = decide("ort", {"ort": [1.0, 2.0]})
    assert alone.chosen == "ort" and alone.challenger is None and "only candidate" in alone.reason
    with pytest.raises(InternalError, match="baseline 'ort'"):
        decide("ort", {"tvm": [1.0]})


@pytest.mark.parametrize("inputs, warmup, runs", [(1, 5, 20), (3, 6, 21), (8, 8, 24), (0, 5, 20)])
def test_device_timing_runs_whole_passes_over_the_inputs(inputs, warmup, runs):
    settings = settings_for(inputs)
    assert (settings.warmup_runs, settings.runs) == (warmup, runs)
    assert bench_options(inputs) == ["--warmup", str(warmup), "--runs", str(runs)]
