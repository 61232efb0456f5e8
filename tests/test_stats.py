import numpy as np
import pytest

from edgert import stats


def test_summary_orders_percentiles_and_ci_brackets_median():
    x = np.random.default_rng(1).lognormal(mean=1.0, sigma=0.3, size=500)
    s = stats.summarize(x, seed=3)
    assert s["n"] == 500
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]
    assert s["ci95"][0] <= s["p50"] <= s["ci95"][1]
    assert s["p50"] == pytest.approx(np.median(x))
    assert s["mad"] == pytest.approx(np.median(np.abs(x - np.median(x))))


def test_bootstrap_is_seeded_and_narrows_with_more_samples():
    rng = np.random.default_rng(2)
    small, large = rng.normal(10, 1, 50), rng.normal(10, 1, 5000)
    assert stats.bootstrap_median_ci95(small, seed=5) == stats.bootstrap_median_ci95(small, seed=5)
    lo_s, hi_s = stats.bootstrap_median_ci95(small)
    lo_l, hi_l = stats.bootstrap_median_ci95(large)
    assert hi_l - lo_l < (hi_s - lo_s) / 3


def test_order_statistic_ci_covers_true_median_about_95_percent():
    rng = np.random.default_rng(4)
    hits = sum(lo <= 0.0 <= hi for lo, hi in
               (stats.median_ci95(rng.standard_normal(101)) for _ in range(400)))
    assert 0.90 <= hits / 400 <= 0.99


def test_convergence_rule():
    tight = np.random.default_rng(0).normal(10, 0.01, 200)
    loose = np.random.default_rng(0).normal(10, 5, 20)
    assert stats.ci_converged(tight, 0.01)
    assert not stats.ci_converged(loose, 0.01)
    assert not stats.ci_converged([1.0, 1.0], 0.5)  # too few to say


def test_warnings_name_what_is_wrong():
    steady = list(np.random.default_rng(0).normal(10, 0.05, 200))
    assert stats.stability_warnings(steady, timer_resolution_ms=1e-6) == []
    drifting = [10.0] * 100 + [12.0] * 100
    assert any("second half" in w and "slower" in w
               for w in stats.stability_warnings(drifting, timer_resolution_ms=1e-6))
    spiky = [10.0] * 99 + [30.0]
    assert any("max is 200% above the median" in w
               for w in stats.stability_warnings(spiky, timer_resolution_ms=1e-6))
    assert any("only 5 runs" in w for w in stats.stability_warnings([1.0] * 5, timer_resolution_ms=1e-6))
    # one run: std 0 and a zero-width CI were reported with no word that they mean nothing
    assert any("say nothing" in w for w in stats.stability_warnings([1.0], timer_resolution_ms=1e-6))
    assert not any("say nothing" in w for w in stats.stability_warnings([1.0, 1.1], timer_resolution_ms=1e-6))
    assert any("timer resolution" in w
               for w in stats.stability_warnings([0.0001] * 50, timer_resolution_ms=1e-6))
