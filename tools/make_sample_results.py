"""Regenerate tests/fixtures/results/: the sample result files the report and compare tests read.

The bench files come from a real ``edgert bench`` run on this machine (ORT and LiteRT on the
bundled MobileNetV2, ORT on the bundled ResNet). The sweep, calibration and dynamic-bundle files
follow the layouts in docs/report.md; their numbers are made up from fixed seeds, and each file
says so in its first warning, so nobody mistakes them for measurements. The sweep and calibration
carry power as a sysfs fixture's reading (labelled, no energy), as a run on a fixture tree would.

    .venv/bin/python tools/make_sample_results.py [--out tests/fixtures/results]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgert import power_status
from edgert.stats import summarize
from edgert.sweep import fixture_warning

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = "synthetic fixture for report tests: these numbers were not measured"
RUNS = "200"
# The sweep and calibration read as runs on a board's sysfs fixture tree would: their power is a
# labelled reading, never energy shown as measured (docs/sweep-schema.md).
POWER_SOURCE = "VDD_IN (watts)"
IDLE_W = 1.1
FIXTURE_ROOT = "tests/fixtures/sysfs/jetson_orin"
FIXTURE_POWER = {"power": power_status.block(power_status.FIXTURE, POWER_SOURCE, FIXTURE_ROOT), "fixture": True}
FIXTURE_WARNING = fixture_warning(FIXTURE_ROOT)


def run_bench(out: Path) -> None:
    """Real measurements: two backends side by side, and a second model."""
    common = ["--runs", RUNS, "--warmup", "10", "--threads", "1", "--quiet"]
    cli = [str(Path(sys.executable).parent / "edgert")]  # the venv's console script
    subprocess.run([*cli, "bench", "zoo:mobilenet_v2", "--backend", "ort", "--backend", "tflite",
                    "--json", str(out / "mobilenet_v2.json"), *common], check=True)
    subprocess.run([*cli, "bench", "zoo:resnet", "--backend", "ort",
                    "--json", str(out / "resnet.ort.json"), *common], check=True)


def _lognormal(rng: np.random.Generator, median_ms: float, n: int, sigma: float = 0.04) -> list[float]:
    return [float(v) for v in median_ms * rng.lognormal(0.0, sigma, n)]


def sweep(base: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A CPU frequency sweep plus one emulated point (layout: docs/report.md)."""
    p50 = base["latency_ms"]["p50"]
    top_khz = 1_800_000
    points = []
    for khz in (600_000, 1_000_000, 1_400_000, 1_800_000):
        samples = _lognormal(rng, p50 * top_khz / khz, 120)
        power = 1.2 + 2.6 * (khz / top_khz) ** 2.2
        energy = power * float(np.median(samples))  # W * ms = mJ
        points.append({
            "setting": {"domain": "cpu0", "requested": khz, "readback": khz},
            "latency_ms": summarize(samples), "samples_ms": samples,
            "power_w": None, "idle_power_w": None, "energy_per_inference_mj": None,
            "energy_above_idle_mj": None, "power_source": POWER_SOURCE, "power_status": "fixture",
            "power_reading": {"power_w": power, "idle_power_w": IDLE_W, "energy_per_inference_mj": energy},
            "temperatures_c": {"cpu": 42.0 + 14.0 * khz / top_khz},
            "emulated": False,
        })
    samples = _lognormal(rng, p50 * 2.0, 120)
    points.append({
        "setting": {"domain": "emulated", "requested": 0.5, "readback": 0.5},
        "latency_ms": summarize(samples), "samples_ms": samples,
        "power_w": None, "energy_per_inference_mj": None, "energy_above_idle_mj": None,
        "temperatures_c": {}, "emulated": True,
    })
    return {"schema": "edgert.sweep/1", "model": base["model"], "device": base["device"],
            "points": points, **FIXTURE_POWER, "warnings": [SYNTHETIC, FIXTURE_WARNING]}


def calibration(base: dict[str, Any]) -> dict[str, Any]:
    """All-in-One levels x CPU frequencies with accuracy and energy (layout: docs/report.md).

    ``ratio`` is the fraction of channels removed. At the lowest clock the 25% level is made no
    faster than the full model (as a level whose weights are cut at every run can be), so one
    level falls off the Pareto front there.
    """
    p50 = base["latency_ms"]["p50"]
    ratios = [0.0, 0.25, 0.5, 0.75]
    accuracy = [0.912, 0.905, 0.884, 0.801]
    work = [1.0, 0.8, 0.52, 0.3]  # share of the full model's time at the top clock
    freqs = [600_000, 1_200_000, 1_800_000]
    top = freqs[-1]
    latency = [[round(p50 * w * top / f * (1.27 if (r, f) == (0.25, 600_000) else 1.0), 4) for f in freqs]
               for r, w in zip(ratios, work)]
    power = [[1.1 + 2.6 * (f / top) ** 2.2 * (0.6 + 0.4 * w) for f in freqs] for w in work]
    energy = [[round(watts * ms, 4) for watts, ms in zip(prow, lrow)] for prow, lrow in zip(power, latency)]
    return {"schema": "edgert.calibration/1", "model": base["model"], "device": base["device"],
            "levels": [{"ratio": r, "accuracy": a} for r, a in zip(ratios, accuracy)],
            "frequencies": freqs, "frequency_unit": "kHz", "latency_ms": latency,
            **FIXTURE_POWER, "power_reading": {"power_w": power, "energy_mj": energy},
            "warnings": [SYNTHETIC, FIXTURE_WARNING]}


def dynamic(base: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A bench result of a dynamic bundle: per-segment and per-path blocks added."""
    p50 = base["latency_ms"]["p50"]
    out = json.loads(json.dumps(base))
    out["model"]["path"] = "detector.edgert"
    out["segments_ms"] = {name: summarize(_lognormal(rng, p50 * share, 200))
                          for name, share in (("backbone", 0.62), ("head_small", 0.18),
                                              ("head_large", 0.31), ("host_glue", 0.03))}
    out["paths"] = {name: summarize(_lognormal(rng, p50 * share, 100))
                    for name, share in (("then:small", 0.83), ("else:large", 0.96))}
    out["warnings"] = [SYNTHETIC, *out["warnings"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests/fixtures/results")
    parser.add_argument("--skip-bench", action="store_true",
                        help="keep the existing measured files, rebuild only the synthetic ones")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_bench:
        run_bench(args.out)
    base = json.loads((args.out / "mobilenet_v2.ort.json").read_text())
    rng = np.random.default_rng(7)
    for name, data in (("sweep.json", sweep(base, rng)), ("calibration.json", calibration(base)),
                       ("dynamic.json", dynamic(base, rng))):
        (args.out / name).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {', '.join(sorted(p.name for p in args.out.glob('*.json')))} to {args.out}")


if __name__ == "__main__":
    main()
