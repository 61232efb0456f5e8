"""compare(): verdicts on synthetic result files built from a real one with known shifts."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgert.compare import compare, format_p, render_compare
from edgert.errors import UsageError
from edgert.stats import summarize

RESULTS = Path(__file__).parent / "fixtures" / "results"


@pytest.fixture(scope="module")
def real() -> dict:
    return json.loads((RESULTS / "mobilenet_v2.ort.json").read_text())


def with_samples(base: dict, samples: np.ndarray) -> dict:
    """A copy of a real result file whose samples (and summary) are replaced."""
    out = copy.deepcopy(base)
    out["samples_ms"] = [float(v) for v in samples]
    out["latency_ms"] = summarize(out["samples_ms"])
    out["warnings"] = []
    return out


def lognormal(seed: int, median_ms: float, n: int = 400) -> np.ndarray:
    return median_ms * np.random.default_rng(seed).lognormal(0.0, 0.05, n)


def percent(verdict: str) -> float:
    return float(re.search(r"([\d.]+)% (?:faster|slower)", verdict).group(1))


def test_ten_percent_faster(real: dict) -> None:
    a = with_samples(real, lognormal(1, 5.0))
    b = with_samples(real, lognormal(2, 4.5))
    report = compare(a, b)
    assert report["verdict"].startswith("B is ") and "faster than A" in report["verdict"]
    assert report["faster"] and not report["slower"]
    assert abs(percent(report["verdict"]) - 10) <= 2
    assert report["test"]["p_value"] < 0.01
    lo, hi = report["median_ratio_ci95"]
    assert lo < report["median_ratio"] < hi and 0.85 < lo and hi < 0.95


def test_ten_percent_slower(real: dict) -> None:
    a = with_samples(real, lognormal(3, 5.0))
    b = with_samples(real, lognormal(4, 5.5))
    report = compare(a, b)
    assert "slower than A" in report["verdict"] and report["slower"]
    assert abs(percent(report["verdict"]) - 10) <= 2
    assert report["test"]["p_value"] < 0.01
    assert report["p50_change"] == pytest.approx(0.10, abs=0.02)


def test_identical_distributions(real: dict) -> None:
    a = with_samples(real, lognormal(5, 5.0))
    b = with_samples(real, lognormal(5, 5.0))
    report = compare(a, b)
    assert report["verdict"] == "no significant difference (p=1)"
    assert not report["significant"] and not report["faster"] and not report["slower"]


def test_same_distribution_different_draws(real: dict) -> None:
    report = compare(with_samples(real, lognormal(6, 5.0)), with_samples(real, lognormal(7, 5.0)))
    assert report["verdict"].startswith("no significant difference (p=")
    assert report["test"]["p_value"] >= 0.01


def test_tiny_significant_difference_is_not_meaningful(real: dict) -> None:
    base = lognormal(8, 5.0, n=8000)
    report = compare(with_samples(real, base), with_samples(real, base * 0.996))
    assert report["significant"] and not report["meaningful"]
    assert report["verdict"].startswith("no meaningful difference: B is 0.4% faster than A")
    assert "1% practical threshold" in report["verdict"]


def test_different_models_refused_unless_allowed(real: dict) -> None:
    b = copy.deepcopy(real)
    b["model"]["sha256"] = "0" * 64
    with pytest.raises(UsageError, match="different models"):
        compare(real, b)
    assert compare(real, b, allow_different_models=True)["b"]["sha256"] == "0" * 64


def test_device_and_emulation_warnings(real: dict) -> None:
    a = with_samples(real, lognormal(9, 5.0))
    b = with_samples(real, lognormal(10, 5.0))
    assert compare(a, b)["warnings"] == []
    b["device"] = {**b["device"], "hostname": "rpi5", "arch": "aarch64"}
    b["emulated"] = True
    warnings = compare(a, b)["warnings"]
    assert any("devices differ" in w and "'rpi5'" in w for w in warnings)
    assert any(w.startswith("B was measured on an emulated device") for w in warnings)


def test_refuses_non_bench_files(real: dict) -> None:
    sweep = json.loads((RESULTS / "sweep.json").read_text())
    with pytest.raises(UsageError, match="not a bench result"):
        compare(real, sweep)
    with pytest.raises(UsageError, match="alpha"):
        compare(real, real, alpha=1.5)


def test_real_files_and_rendering() -> None:
    a = json.loads((RESULTS / "mobilenet_v2.ort.json").read_text())
    b = json.loads((RESULTS / "mobilenet_v2.tflite.json").read_text())
    report = compare(a, b)
    text = render_compare(report)
    lines = text.splitlines()
    assert lines[0].startswith("A: mobilenet_v2.onnx, ort ")
    assert lines[1].startswith("B: mobilenet_v2.onnx, tflite ")
    assert f"verdict: {report['verdict']}" in lines
    assert sum(line.startswith("warning: ") for line in lines) == len(report["warnings"]) > 0


def test_format_p() -> None:
    assert format_p(0.0004) == "p<0.001"
    assert format_p(0.0031) == "p=0.0031"
    assert format_p(0.41) == "p=0.41"
