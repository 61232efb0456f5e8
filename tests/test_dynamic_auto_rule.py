"""auto_rule.decide: on a device the baseline stays unless another candidate is clearly faster."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.devices.timer import (BLOCK_RUNS, EXTRA_BUDGET_S, EXTRA_REQUESTS, compare,
                                  request_options, settings_for)
from edgert.device_agents.interleave import block_order
from edgert.dynamic.auto_rule import ALPHA, MARGIN, agreement, decide, unsettled
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


@pytest.mark.parametrize("inputs, warmup, runs", [(1, 5, 20), (3, 6, 24), (8, 8, 24), (0, 5, 20),
                                                   (5, 5, 20), (7, 7, 28)])
def test_device_timing_runs_whole_passes_over_the_inputs_in_whole_blocks(inputs, warmup, runs):
    settings = settings_for(inputs)
    assert (settings.warmup_runs, settings.runs) == (warmup, runs)
    assert runs % max(1, inputs) == 0 and runs % BLOCK_RUNS == 0
    assert request_options(inputs) == ["--warmup", str(warmup), "--runs", str(runs),
                                       "--block-runs", str(BLOCK_RUNS)]


def test_block_order_is_abba_rounds():
    assert block_order(["a", "b"], 4) == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert block_order(["a", "b", "c"], 2) == ["a", "b", "c", "c", "b", "a"]
    order = block_order(["a", "b"], 10)
    # every candidate's mean block position is the same: a linear drift costs both alike
    assert np.mean([i for i, n in enumerate(order) if n == "a"]) == np.mean(
        [i for i, n in enumerate(order) if n == "b"])


def test_a_drift_that_flips_sequential_timing_is_cancelled_by_the_block_order():
    """Equal candidates on a device whose load doubles the run time over the measurement:
    timed one after the other the second looks 40% slower and significantly so; timed in
    the ABBA blocks the rule keeps the baseline and says it is settled."""
    names, runs = ["ort", "tvm"], 20
    drift = np.linspace(1.0, 2.0, 2 * runs)  # run time of the same work, over time
    sequential = {"tvm": list(10 * drift[:runs]), "ort": list(10 * drift[runs:])}
    assert decide("ort", sequential).chosen == "tvm"  # the artefact this guards against
    order = block_order(names, runs // BLOCK_RUNS)
    ticks = {name: [i * BLOCK_RUNS + k for i, n in enumerate(order) if n == name
                    for k in range(BLOCK_RUNS)] for name in names}
    interleaved = {name: list(10 * drift[t]) for name, t in ticks.items()}
    decision = decide("ort", interleaved)
    assert decision.chosen == "ort" and decision.median_ratio == pytest.approx(1.0, abs=0.02)
    assert not unsettled(decision)


@pytest.mark.parametrize("ratio, p, expected", [
    (0.70, 1e-6, False),  # a clear win
    (0.70, 2e-3, True),  # wins, but within a decade of ALPHA
    (0.70, 0.03, True),  # looks faster, not significant yet
    (0.94, 1e-9, True),  # significant, but the median sits at the margin
    (0.96, 1e-9, True),
    (0.98, 1e-9, False),  # not even half the margin faster: more runs would not make it win
    (1.30, 1e-9, False),  # slower
])
def test_unsettled_marks_the_rule_boundary(ratio, p, expected):
    from edgert.dynamic.auto_rule import Decision

    chosen = "tvm" if ratio < 1 - MARGIN and p < ALPHA else "ort"
    assert unsettled(Decision(chosen, "ort", "tvm", ratio, p)) is expected
    assert not unsettled(Decision("ort", "ort", None, 1.0, 1.0))


def test_agreement_tells_a_contradiction_from_an_inconclusive_retiming():
    fast, slow = _samples(6.0, 0.2), _samples(10.0, 0.2, seed=1)
    again = {"ort": slow, "tvm": fast}
    assert agreement("tvm", decide("ort", again), again) == "reproduced"
    # compile kept ORT, the second timing finds TVM clearly faster: a contradiction
    assert agreement("ort", decide("ort", again), again) == "contradicted"
    # compile chose TVM; the second timing finds ORT clearly faster: also a contradiction
    flipped = {"ort": fast, "tvm": slow}
    assert agreement("tvm", decide("ort", flipped), flipped) == "contradicted"
    # compile chose TVM; the second timing cannot tell them apart: inconclusive
    noisy = {"ort": [10.0, 6.0, 14.0, 9.0, 12.0], "tvm": [8.0, 13.0, 5.0, 7.0, 11.0]}
    assert decide("ort", noisy).chosen == "ort"
    assert agreement("tvm", decide("ort", noisy), noisy) == "inconclusive"


class _Device:
    """Answers interleaved requests with samples drawn around fixed medians (one per
    candidate) and records the block orders asked for."""

    def __init__(self, medians: dict[str, float], spread: float, run_ms: float = 1.0) -> None:
        self.medians, self.spread, self.run_ms = medians, spread, run_ms
        self.orders: list[list[str]] = []
        self.rng = np.random.default_rng(7)

    def __call__(self, order: list[str]) -> dict:
        self.orders.append(order)
        raw = {}
        for name, median in self.medians.items():
            runs = order.count(name) * BLOCK_RUNS
            ms = median * self.run_ms + self.spread * self.rng.uniform(-1, 1, runs)
            raw[name] = {"samples_ns": list(ms * 1e6)}
        return {"order": order, "raw": raw, "failed": {}}


def test_compare_stops_after_one_request_when_the_rule_is_settled():
    device = _Device({"ort": 10.0, "tvm": 5.0}, 0.2)
    timed = compare(["ort", "tvm"], 1, "ort", device)
    assert timed.requests == 1 and len(device.orders) == 1 and not timed.note
    assert len(timed.samples_ms["ort"]) == settings_for(1).runs
    assert timed.order == device.orders[0] == block_order(["ort", "tvm"], settings_for(1).runs // BLOCK_RUNS)
    assert decide("ort", timed.samples_ms).chosen == "tvm"


def test_compare_takes_more_requests_near_the_boundary_continuing_the_rounds():
    """4% faster with no overlap: at the margin, so EXTRA_REQUESTS more requests follow,
    whose blocks continue the ABBA rounds, and the record says it stayed unsettled."""
    device = _Device({"ort": 10.0, "tvm": 9.6}, 0.05)
    timed = compare(["ort", "tvm"], 1, "ort", device)
    assert timed.requests == len(device.orders) == 1 + EXTRA_REQUESTS
    rounds = settings_for(1).runs // BLOCK_RUNS
    assert timed.order == block_order(["ort", "tvm"], rounds * timed.requests)
    assert len(timed.samples_ms["tvm"]) == settings_for(1).runs * timed.requests
    assert "still near the rule's boundary" in timed.note
    assert timed.to_dict()["requests"] == timed.requests and timed.to_dict()["interleaved"] is True


def test_compare_stops_extending_when_the_budget_would_be_exceeded():
    """The same boundary case with runs so slow that one more request exceeds the budget."""
    run_ms = EXTRA_BUDGET_S * 1e3 / 30  # 40 runs of ~1 ms*median per request: far over budget
    device = _Device({"ort": 10.0, "tvm": 9.6}, 0.05, run_ms=run_ms / 10)
    timed = compare(["ort", "tvm"], 1, "ort", device)
    assert timed.requests == 1 and "budget" in timed.note


def test_compare_leaves_a_candidate_that_failed_out():
    device = _Device({"ort": 10.0}, 0.2)  # tvm failed to load: the agent sends no samples of it
    timed = compare(["ort", "tvm"], 1, "ort",
                    lambda order: dict(device(order), failed={"tvm": "could not load"}))
    assert timed.failed == {"tvm": "could not load"} and set(timed.samples_ms) == {"ort"}
    assert timed.requests == 1
