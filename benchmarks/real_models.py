"""Real-model zoo on every engine: did it run, how fast against ORT, how close to ORT's outputs.

    .venv/bin/python benchmarks/real_models.py [--models a,b] [--engines ort,tvm,tflite]
        [--runs 30] [--out benchmarks/results/real_models.json]

Each model (tools/make_real_zoo.py, exported on first use into its cache) goes through
``edgert bench MODEL --backend ort --backend tvm --backend tflite --input ...`` exactly as a
user would type it, one process per model, fed the zoo's seeded inputs. TVM is untuned;
models with If/Loop run on TVM as bundles (bench says so). Per engine the table gives
ran/failed (with edgert's one-line error), the p50 ratio to ORT measured in the same
process, and the max absolute output difference from ORT divided by the largest ORT
output magnitude (``rel``; the acceptance bound is 1e-3).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("ort", "tvm", "tflite")
REL_BOUND = 1e-3


def _zoo() -> Any:
    spec = importlib.util.spec_from_file_location("make_real_zoo", ROOT / "tools" / "make_real_zoo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _reference_scale(model: Path, feeds: dict[str, np.ndarray]) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    outputs = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"]).run(None, feeds)
    return max(float(np.abs(np.asarray(o, dtype=np.float64)).max(initial=0.0)) for o in outputs)


def bench_model(model: Path, feeds: dict[str, np.ndarray], engines: list[str], runs: int,
                timeout_s: float) -> dict[str, Any]:
    """One ``edgert bench`` process over ``engines``; per engine ran/error, p50, agreement."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "edgert", "bench", str(model), "--runs", str(runs), "--quiet",
                "--json", f"{tmp}/r.json"]
        for engine in engines:
            args += ["--backend", engine]
        for name, value in feeds.items():
            np.save(f"{tmp}/{name}.npy", value)
            args += ["--input", f"{name}={tmp}/{name}.npy"]
        for dim, size in _dims(model, feeds).items():  # TVM and LiteRT build for these sizes
            args += ["--shape", f"{dim}={size}"]
        start = time.monotonic()
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
            stderr, code = proc.stderr, proc.returncode
        except subprocess.TimeoutExpired:
            stderr, code = f"edgert: error: timed out after {timeout_s:.0f} s", -1
        wall = time.monotonic() - start
        errors = {}
        for line in stderr.splitlines():
            for engine in engines:
                if line.startswith(f"edgert: error: {engine}: "):
                    errors[engine] = line.split(": ", 3)[-1]
        per: dict[str, Any] = {}
        for engine in engines:
            path = Path(tmp) / (f"r.{engine}.json" if len(engines) > 1 else "r.json")
            if path.is_file():
                res = json.loads(path.read_text())
                per[engine] = {"ran": True, "p50_ms": res["latency_ms"]["p50"],
                               "agreement": res.get("agreement"),
                               "note": res["backend"].get("note")}
            else:
                last = [ln for ln in stderr.splitlines() if ln.startswith("edgert: error:")]
                per[engine] = {"ran": False,
                               "error": errors.get(engine) or (last[-1] if last else f"exit {code}")}
    return {"engines": per, "exit_code": code, "wall_s": round(wall, 1)}


def _dims(model: Path, feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """Sizes of the model's symbolic input dims in ``feeds``: what a user passes as --shape."""
    import onnx

    dims = {}
    for info in onnx.load(str(model), load_external_data=False).graph.input:
        for dim, size in zip(info.type.tensor_type.shape.dim, np.shape(feeds.get(info.name, ()))):
            if dim.dim_param:
                dims[dim.dim_param] = int(size)
    return dims


def _machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
            "load_avg_1m": os.getloadavg()[0], "python": platform.python_version()}


def render(report: dict[str, Any]) -> str:
    engines = report["engines"]
    lines = ["# Real-model zoo on every engine", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
             f"load average {report['machine']['load_avg_1m']:.1f} at the start (shared machine: "
             "ratios are noisy). TVM untuned. `rel` = max |engine - ORT| / max |ORT|; "
             f"bound {REL_BOUND:g}. Reproduce: `{report['command']}`.", "",
             "| model | " + " | ".join(engines) + " | load before/after |",
             "|---" * (len(engines) + 2) + "|"]
    failures = []
    for name, row in report["models"].items():
        cells = []
        for engine in engines:
            cell = row["engines"].get(engine, {})
            if not cell.get("ran"):
                cells.append("**failed**")
                failures.append(f"- {name} / {engine}: {cell.get('error', '?')}")
                continue
            text = "ran"
            if engine != "ort" and "ort" in row["engines"] and row["engines"]["ort"].get("ran"):
                text += f", {cell['p50_ms'] / row['engines']['ort']['p50_ms']:.2f}x ORT"
                if cell.get("rel") is not None:
                    text += f", rel {cell['rel']:.1e}" + ("" if cell["rel"] <= REL_BOUND else " (**over**)")
            else:
                text += f", p50 {cell['p50_ms']:.2f} ms"
            cells.append(text)
        load = "/".join(f"{v:.1f}" for v in row.get("load_avg_1m", [])) or "?"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {load} |")
    if failures:
        lines += ["", "Failures (edgert's one-line error):", ""] + failures
    return "\n".join(lines) + "\n"


def main() -> None:
    zoo = _zoo()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.MODELS))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per model")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_models.json")
    parser.add_argument("--resume", action="store_true",
                        help="keep the models already in --out (same engines) and run the others")
    args = parser.parse_args()
    names, engines = args.models.split(","), args.engines.split(",")
    report: dict[str, Any] = {"machine": _machine(), "engines": engines, "models": {},
                              "command": "python benchmarks/real_models.py " + " ".join(sys.argv[1:])}
    if args.resume and args.out.is_file():
        previous = json.loads(args.out.read_text())
        if previous["engines"] == engines:
            report = previous
            names = [n for n in names if n not in previous["models"]]
    for name in names:
        model = zoo.build([name])[name]
        feeds = zoo.inputs(model)
        load = os.getloadavg()[0]
        row = bench_model(model, feeds, engines, args.runs, args.timeout)
        row["load_avg_1m"] = [round(load, 1), round(os.getloadavg()[0], 1)]  # before, after
        scale = _reference_scale(model, feeds)
        for cell in row["engines"].values():
            agreement = cell.get("agreement") or {}
            cell["rel"] = agreement["max_abs"] / max(scale, 1e-12) if "max_abs" in agreement else None
        report["models"][name] = row
        status = ", ".join(f"{e} {'ran' if c['ran'] else 'FAILED'}" for e, c in row["engines"].items())
        print(f"{name}: {status} ({row['wall_s']} s)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        args.out.with_suffix(".md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
