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
    assert warnings[0].startswith("B was measured on an emulated device")  # first: it changes every number
    lines = render_compare(compare(a, b)).splitlines()  # the header said nothing before
    assert lines[1].startswith("B: ") and lines[1].endswith("[EMULATED]") and "EMULATED" not in lines[0]


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


def test_three_files_against_the_first_with_a_geometric_mean(real: dict, tmp_path: Path) -> None:
    from conftest import run_cli
    from edgert.compare import compare_many, render_many

    files = []
    for name, median in (("a", 5.0), ("b", 4.0), ("c", 5.5)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(with_samples(real, lognormal(ord(name), median))))
        files.append(path)
    report = compare_many([json.loads(f.read_text()) for f in files])
    [b, c] = report["comparisons"]
    assert b["faster"] and c["slower"] and report["baseline"]["p50"] == b["a"]["p50"]
    ratios = [b["median_ratio"], c["median_ratio"]]
    assert report["geometric_mean"]["median_ratio"] == pytest.approx(float(np.sqrt(ratios[0] * ratios[1])))
    lines = render_many(report).splitlines()
    assert lines[1].startswith("A  ") and "baseline" in lines[1]
    assert lines[2].startswith("B  ") and "faster than A" in lines[2] and "p99" in lines[2]
    assert lines[3].startswith("C  ") and "slower than A" in lines[3]
    assert lines[4].startswith("geometric mean of the ratios to A: p50 ")
    proc = run_cli("compare", *map(str, files))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[4] == lines[4]
    proc = run_cli("compare", *map(str, files), "--json", "-")
    assert proc.returncode == 0 and json.loads(proc.stdout)["schema"] == "edgert.compare-many/1"
    proc = run_cli("compare", str(files[0]), "--json", str(tmp_path / "one.json"))
    assert proc.returncode == 2 and "at least two result files" in proc.stderr


def test_p99_has_its_own_verdict_when_the_tail_moves_the_other_way(real: dict) -> None:
    rng = np.random.default_rng(3)
    a = with_samples(real, 5.0 * rng.lognormal(0.0, 0.02, 1000))
    faster_body = 4.5 * rng.lognormal(0.0, 0.02, 1000)
    faster_body[::20] *= 3.0  # 5% of runs three times as slow: a worse tail
    report = compare(a, with_samples(real, faster_body))
    assert report["faster"] and report["p99_ratio"] > 2
    assert report["p99_verdict"].startswith("p99 is") and "higher (worse)" in report["p99_verdict"]
    assert ", but its p99 is" in report["verdict"]
    assert "         p99 is" in render_compare(report)


def test_a_bundle_and_its_source_model_compare_without_a_flag(real: dict) -> None:
    bundle = copy.deepcopy(real)
    bundle["model"] = {**bundle["model"], "path": "m.edgert", "sha256": "b" * 64,
                       "source_sha256": real["model"]["sha256"]}
    assert compare(real, bundle)["b"]["source_sha256"] == real["model"]["sha256"]
    other = copy.deepcopy(bundle)
    other["model"]["source_sha256"] = "c" * 64
    with pytest.raises(UsageError, match="add --allow-different-models"):
        compare(real, other)


def test_bench_a_real_bundle_and_its_onnx_then_compare(tmp_path: Path) -> None:
    from conftest import run_cli
    from edgert.hashing import sha256_file
    from edgert.zoo import resolve

    bundle = tmp_path / "resnet.edgert"
    proc = run_cli("compile", "zoo:resnet", "--backend", "ort", "-o", str(bundle), "--quiet")
    assert proc.returncode == 0, proc.stderr
    for model, out in ((bundle, "b.json"), ("zoo:resnet", "a.json")):
        proc = run_cli("bench", str(model), "--runs", "20", "--warmup", "1", "--json", str(tmp_path / out),
                       "--quiet")
        assert proc.returncode == 0, proc.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["model"]["source_sha256"] == json.loads((tmp_path / "a.json").read_text())["model"]["sha256"]
    assert b["model"]["source_sha256"] == sha256_file(resolve("zoo:resnet"))
    proc = run_cli("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert proc.returncode == 0, proc.stderr
    assert "verdict: " in proc.stdout and "resnet.edgert, bundle" in proc.stdout


@pytest.mark.parametrize("samples", [[], None, "x", [1.0, float("nan")], [1.0, float("inf")], [1.0, -1.0],
                                     [1.0, True]])
def test_compare_and_report_refuse_impossible_samples(real: dict, tmp_path: Path, samples) -> None:
    """Negative samples gave '-217%', NaN a 'nan% slower' verdict; the report crashed on empty,
    null, NaN, inf and text samples."""
    from conftest import run_cli

    good = tmp_path / "a.json"
    good.write_text(json.dumps(with_samples(real, lognormal(1, 5.0))))
    bad = tmp_path / "b.json"
    data = copy.deepcopy(real)
    data["samples_ms"] = samples
    bad.write_text(json.dumps(data))  # json writes NaN/Infinity as Python reads them back
    for args in (("compare", str(good), str(bad)), ("report", str(good), str(bad), "-o", str(tmp_path / "r.html"))):
        proc = run_cli(*args)
        assert proc.returncode == 2 and "samples_ms must be" in proc.stderr and "Traceback" not in proc.stderr


def test_a_fifo_or_a_deep_file_is_not_a_result(tmp_path: Path) -> None:
    import os

    from conftest import run_cli

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for path, says in ((fifo, "not a regular file"), (deep, "not JSON")):
        for args in (("compare", str(path), str(path)), ("report", str(path), "-o", str(tmp_path / "r.html"))):
            proc = run_cli(*args, timeout=60)
            assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_huge_samples_print_short_ratios(real: dict) -> None:
    """A hand-edited 1e300 ms sample printed its ratios with about 300 digits."""
    a = with_samples(real, lognormal(1, 5.0))
    b = with_samples(real, [1e300] * 200)
    text = render_compare(compare(a, b))
    assert re.search(r"median B/A: \d\.\d{3}e\+299 \(95% CI \d\.\d{3}e\+299\.\.\d\.\d{3}e\+299", text), text
    assert re.search(r"B is \d\.\d+e\+299x slower", text), text
    assert max(len(word) for word in text.split()) < 40, text


def test_a_0_ms_median_on_either_side_is_refused(real: dict) -> None:
    """A's was refused; B's read as 'B is 100% faster'."""
    normal, zero = with_samples(real, lognormal(1, 5.0)), with_samples(real, [0.0] * 50)
    for a, b, side in ((zero, normal, "A"), (normal, zero, "B")):
        with pytest.raises(UsageError, match=f"{side}'s median or p99 latency is 0 ms"):
            compare(a, b)


def test_a_large_change_is_a_factor_both_ways(real: dict) -> None:
    """A 32x speed-up read '97% faster', the same pair reversed '3085% slower'."""
    slow, fast = with_samples(real, lognormal(1, 32.0)), with_samples(real, lognormal(2, 1.0))
    assert re.match(r"B is 3[12]\.\dx faster than A", compare(slow, fast)["verdict"])
    assert re.match(r"B is 3[12]\.\dx slower than A", compare(fast, slow)["verdict"])
    assert percent(compare(slow, with_samples(real, lognormal(3, 32.0 * 0.8)))["verdict"]) == pytest.approx(20, abs=2)

