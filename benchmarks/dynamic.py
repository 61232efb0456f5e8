"""Dynamic zoo, batch 1: PyTorch eager vs ORT (whole model) vs TVM direct vs edgert bundles.

    .venv/bin/python benchmarks/dynamic.py [--reps 300] [--out benchmarks/results/dynamic.json]

Every engine runs the zoo model's path-covering cases (the .npz beside the model), each
engine in its own process started by this one (OpenMP, ORT and TVM thread pools left in
one process spin against each other on a small machine, and that measured contention,
not the engines). The bundles are compiled once, up front. A model's
latency is the mean over its cases of each case's median: the same mix of paths for
every engine. Each engine is measured in ``--rounds`` processes, interleaved with the
others', and keeps its best process: where the OS puts an engine's threads on a 2-core
machine is bimodal per process (one ORT session on a 9 us model measured 9 us in one
process and 15 us in the next), and that is placement luck, not the engine. Every
round's latency is kept in the JSON. Outputs are checked against ONNX Runtime on the whole model first. The
bundles are compiled with those cases as ``samples`` (``edgert compile --samples``), as a
user would pass inputs representative of their workload: ``auto`` times its candidates on
them instead of on random inputs, whose mix of paths can differ.

* ``torch``: tools/dynamic_torch.py (Python control flow, the ONNX file's weights)
* ``ort``: onnxruntime on the whole ONNX model
* ``tvm_direct``: TVM's own ONNX import of the whole model (n/a where it cannot: Loop)
* ``bundle_tvm`` / ``bundle_auto``: edgert bundles (TVM tensors kept between segments);
  ``auto`` may keep the whole model as one ORT call, and the table says when it did
* ``bundle_tvm_numpy``: the tvm bundle copying every value through numpy (keep_tensors=False)

Host time per segment call, two ways, on the auto bundle (medians over runs):

* ``dispatch``: the host program alone (MLPerf's null system under test): the same
  program replayed with each segment call returning the outputs recorded for that case,
  so no engine runs and nothing is allocated; run wall time / segment calls in the run.
* ``in_situ``: (interpreter wall time - time inside engine calls) / segment calls, in the
  real runs; this also pays for freeing the engines' output tensors and cache misses.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this directory comes first on sys.path and benchmarks/backends.py
# would shadow the ``backends`` package; tools/ is not a package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT / "tools"))

import dynamic_torch  # noqa: E402  (tools/ is not a package)

from edgert.backends import BackendOptions, get_backend  # noqa: E402
from edgert import device_facts  # noqa: E402
import edgert.dynamic as dyn  # noqa: E402

SCHEMA = "edgert.bench.dynamic/1"
ENGINES = ("torch", "ort", "tvm_direct", "bundle_tvm", "bundle_tvm_numpy", "bundle_auto")
TARGETS = {"auto_vs_torch_speedup_geomean_min": 2.0, "auto_vs_ort_slowdown_max": 1.10,
           "dispatch_us_per_segment_call_max": 15.0}

PAUSE_S = 0.5
WARMUP = 20
BUNDLES = {"bundle_tvm": ("tvm", True), "bundle_tvm_numpy": ("tvm", False),
           "bundle_auto": ("auto", True)}
Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def _runner(name: str, engine: str, work: Path, cache: Path) -> tuple[Runner, Any]:
    """One engine's run function (and the bundle runtime, for bundles)."""
    model = dynamic_torch.ZOO / f"{name}.onnx"
    if engine == "torch":
        module = dynamic_torch.load(name)
        return (lambda feeds: dynamic_torch.run(module, feeds)), None
    if engine == "ort":
        import onnxruntime as ort

        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        return (lambda feeds: session.run(None, feeds)), None
    if engine == "tvm_direct":
        return get_backend("tvm", BackendOptions(cache_dir=cache)).load(model).run, None
    backend, keep = BUNDLES[engine]
    runtime = dyn.load(work / f"{name}.{backend}.edgert", keep_tensors=keep)
    return runtime.run, runtime


def _agree(run: Runner, name: str, cases: list[dict[str, np.ndarray]]) -> float:
    """Max abs difference from ORT on the whole model over all cases; raises if wrong."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(dynamic_torch.ZOO / f"{name}.onnx"),
                                   providers=["CPUExecutionProvider"])
    diff = 0.0
    for feeds in cases:
        for got, want in zip(run(feeds), session.run(None, feeds)):
            got = np.asarray(got)
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-4):
                raise AssertionError(f"{name}: outputs disagree with ORT")
            if got.size:
                diff = max(diff, float(np.max(np.abs(got.astype(np.float64) - want))))
    return diff


def _measure(run: Runner, cases: list[dict[str, np.ndarray]], reps: int,
             runtime: Any) -> tuple[dict[str, float], dict[str, float]]:
    """Latency (ms; mean over cases of the median and of the fastest run) and, for a
    bundle, the median over runs of host time per segment call."""
    samples: list[list[int]] = [[] for _ in cases]
    per_call: list[float] = []
    time.sleep(PAUSE_S)  # let the reference session's threads go idle
    for _ in range(WARMUP):
        for feeds in cases:
            run(feeds)
    for _ in range(reps):
        for index, feeds in enumerate(cases):
            start = time.perf_counter_ns()
            run(feeds)
            samples[index].append(time.perf_counter_ns() - start)
            if runtime is not None and runtime.last_path.segments:
                path = runtime.last_path
                per_call.append(path.host_overhead_ns / len(path.segments))
    latency = {"median": statistics.fmean(statistics.median(s) for s in samples) / 1e6,
               "min": statistics.fmean(min(s) for s in samples) / 1e6}
    host = {"in_situ_us_per_segment_call": statistics.median(per_call) / 1e3} if per_call else {}
    return latency, host


def worker(name: str, engine: str, work: Path, cache: Path, reps: int) -> dict[str, Any]:
    """Measure one engine on one model; runs in its own process (see ``main``)."""
    cases = dynamic_torch.cases(name)
    try:
        run, runtime = _runner(name, engine, work, cache)
    except Exception as exc:  # TVM's importer limits (Loop): reported, not fatal
        return {"not_available": str(exc).splitlines()[0][:160]}
    result: dict[str, Any] = {"max_abs_diff_vs_ort": _agree(run, name, cases)}
    latency, host = _measure(run, cases, reps, runtime)
    result["latency_ms"], result["fastest_ms"] = latency["median"], latency["min"]
    if runtime is not None:
        result["engines"] = sorted({s["engine"] for s in runtime.manifest["segments"]})
        result["auto_chosen"] = runtime.manifest.get("auto", {}).get("chosen", "partitioned")
        result["host"] = host
        if engine == "bundle_auto":
            host["dispatch_us_per_segment_call"] = _null_dispatch(
                work / f"{name}.auto.edgert", runtime, cases, reps)
    return result


def _null_dispatch(bundle: Path, runtime: Any, cases: list[dict[str, np.ndarray]],
                   reps: int) -> float:
    """Microseconds of host program per segment call with engines replaced by a replay."""
    from edgert.dynamic.bundle import Bundle
    from edgert.dynamic.program import Interpreter, to_numpy

    opened = Bundle(bundle)
    consts = {cid: opened.array(member) for cid, member in opened.manifest["consts"].items()}
    program = opened.manifest["program"]
    recorded: list[list[list[Any]]] = []
    for feeds in cases:
        calls: list[list[Any]] = []

        def record(seg: str, seg_feeds: dict[str, Any], calls: list = calls) -> list[Any]:
            outs = [to_numpy(v) for v in runtime._run_segment(seg, seg_feeds)]
            calls.append(outs)
            return outs

        Interpreter(program, record, consts).run(feeds)
        recorded.append(calls)
    per_call = []
    for _ in range(reps):
        for feeds, calls in zip(cases, recorded):
            if not calls:
                continue
            replay = iter(calls)
            interp = Interpreter(program, lambda seg, seg_feeds: next(replay), consts)
            start = time.perf_counter_ns()
            interp.run(feeds)
            per_call.append((time.perf_counter_ns() - start) / len(calls))
    return statistics.median(per_call) / 1e3  # median: one preemption must not move it


def _geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300, help="timed runs of every case per engine")
    parser.add_argument("--rounds", type=int, default=3,
                        help="processes per engine and model (the best one is kept)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="TVM compile cache")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dynamic.json")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "ENGINE", "WORKDIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, engine, work = args.worker
        print(json.dumps(worker(name, engine, Path(work), args.cache_dir, args.reps)))
        return

    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edgert-dynbench-") as tmp:
        cache = args.cache_dir or Path(tmp) / "tvm-cache"
        for name in dynamic_torch.MODULES:
            for backend in ("tvm", "auto"):
                dyn.compile(dynamic_torch.ZOO / f"{name}.onnx", backend=backend,
                            out=Path(tmp) / f"{name}.{backend}.edgert", cache_dir=cache,
                            samples=dynamic_torch.cases(name))
        for name in dynamic_torch.MODULES:
            # One process per engine: thread pools (OpenMP, ORT, TVM) that share a process
            # spin against each other on a small machine, which measured contention.
            runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
            for round_ in range(args.rounds):
                for engine in ENGINES[round_ % len(ENGINES):] + ENGINES[:round_ % len(ENGINES)]:
                    if runs[engine] and "not_available" in runs[engine][0]:
                        continue
                    done = subprocess.run([sys.executable, __file__, "--worker", name, engine, tmp,
                                           "--cache-dir", str(cache), "--reps", str(args.reps)],
                                          capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        raise SystemExit(f"{name} {engine} failed:\n{done.stderr[-2000:]}")
                    runs[engine].append(json.loads(done.stdout.strip().splitlines()[-1]))
            found = {engine: _best(results) for engine, results in runs.items()}
            rows.append(_row(name, found))
            print(f"{name}: " + ", ".join(f"{e} {v * 1e3:.0f} us"
                                          for e, v in rows[-1]["latency_ms"].items()), flush=True)
    summary = _summary(rows)
    import onnxruntime
    import torch
    import tvm

    device = device_facts.collect("local")
    load = {"before": load_before, "after": os.getloadavg()[0]}
    report = {"schema": SCHEMA, "measured": True, "device": device, "load_average_1min": load,
              "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                           "tvm": tvm.__version__},
              "reps": args.reps, "rounds": args.rounds, "rows": rows, "summary": summary, "targets": TARGETS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(report))
    print(render(report))


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios over the zoo; a target counts as met only if the medians and the fastest
    runs both meet it (on a busy machine one engine's medians can suffer more)."""
    summary = {
        "speedup_auto_vs_torch_geomean": _geomean([r["speedup_auto_vs_torch"] for r in rows]),
        "auto_vs_ort_worst": max(r["auto_vs_ort"] for r in rows),
        "fastest_run_speedup_auto_vs_torch_geomean": _geomean([r["fastest_auto_vs_torch"]
                                                               for r in rows]),
        "fastest_run_auto_vs_ort_worst": max(r["fastest_auto_vs_ort"] for r in rows),
        "dispatch_us_per_segment_call_worst": max(r["host_dispatch"]["dispatch_us_per_segment_call"]
                                                  for r in rows),
        "in_situ_host_us_per_segment_call_worst": max(
            r["host_dispatch"]["in_situ_us_per_segment_call"] for r in rows),
    }
    speedup = min(summary["speedup_auto_vs_torch_geomean"],
                  summary["fastest_run_speedup_auto_vs_torch_geomean"])
    slowdown = max(summary["auto_vs_ort_worst"], summary["fastest_run_auto_vs_ort_worst"])
    summary["targets_met"] = {
        "auto >= 2x faster than torch (geomean)":
            speedup >= TARGETS["auto_vs_torch_speedup_geomean_min"],
        "auto never > 10% slower than ORT": slowdown <= TARGETS["auto_vs_ort_slowdown_max"],
        "dispatch < 15 us per segment call":
            summary["dispatch_us_per_segment_call_worst"] < TARGETS["dispatch_us_per_segment_call_max"],
    }
    return summary


def _best(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The process with the lowest latency, with every process's latency beside it."""
    timed = [r for r in results if "latency_ms" in r]
    if not timed:
        return results[0]
    return {**min(timed, key=lambda r: r["latency_ms"]),
            "rounds_latency_ms": [r["latency_ms"] for r in timed]}


def _row(name: str, found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    latency = {e: r["latency_ms"] for e, r in found.items() if "latency_ms" in r}
    fastest = {e: r["fastest_ms"] for e, r in found.items() if "fastest_ms" in r}
    return {"model": name, "cases": len(dynamic_torch.cases(name)), "latency_ms": latency,
            "fastest_ms": fastest,
            "rounds_latency_ms": {e: r["rounds_latency_ms"] for e, r in found.items()
                                  if "rounds_latency_ms" in r},
            "fastest_auto_vs_torch": fastest["torch"] / fastest["bundle_auto"],
            "fastest_auto_vs_ort": fastest["bundle_auto"] / fastest["ort"],
            "not_available": {e: r["not_available"] for e, r in found.items()
                              if "not_available" in r},
            "max_abs_diff_vs_ort": {e: r["max_abs_diff_vs_ort"] for e, r in found.items()
                                    if "max_abs_diff_vs_ort" in r},
            "auto_engines": found["bundle_auto"]["engines"],
            "auto_chosen": found["bundle_auto"]["auto_chosen"],
            "segment_engines_tvm_bundle": found["bundle_tvm"]["engines"],
            "host_dispatch": found["bundle_auto"]["host"],
            "speedup_auto_vs_torch": latency["torch"] / latency["bundle_auto"],
            "auto_vs_ort": latency["bundle_auto"] / latency["ort"],
            "keep_tensors_gain": latency["bundle_tvm_numpy"] / latency["bundle_tvm"]}


def render(report: dict[str, Any]) -> str:
    device = report["device"]
    lines = [f"# Dynamic zoo, batch 1 ({device.get('cpu_model', '?')}, "
             f"{device.get('cores_usable', '?')} cores; measured, {report['reps']} runs per case)", "",
             "Latency: mean over the model's path-covering cases of each case's median; each "
             f"engine's best of {report['rounds']} processes (thread placement differs per "
             "process; every process's number is in the JSON).", "",
             "| model | torch | ort | tvm direct | bundle tvm | bundle tvm (numpy copies) | bundle auto "
             "| auto speedup vs torch | auto / ort | dispatch us/call | in-situ host us/call |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lat = r["latency_ms"]
        cell = {e: f"{lat[e] * 1e3:.0f} us" if e in lat else "n/a" for e in ENGINES}
        if r["auto_chosen"] == "whole_model":
            cell["bundle_auto"] += " (whole model)"
        lines.append(f"| {r['model']} | {cell['torch']} | {cell['ort']} | {cell['tvm_direct']} | "
                     f"{cell['bundle_tvm']} | {cell['bundle_tvm_numpy']} | {cell['bundle_auto']} | "
                     f"{r['speedup_auto_vs_torch']:.2f}x | {r['auto_vs_ort']:.2f} | "
                     f"{r['host_dispatch']['dispatch_us_per_segment_call']:.1f} | "
                     f"{r['host_dispatch']['in_situ_us_per_segment_call']:.1f} |")
    s = report["summary"]
    load, cores = report["load_average_1min"], device.get("cores_usable") or 1
    if max(load.values()) > 0.5 * cores:
        lines += ["", f"**Warning: the machine was busy** (1-minute load average "
                      f"{load['before']:.1f} before, {load['after']:.1f} after, on {cores} cores): other "
                      f"processes competed for the CPU, so these numbers are noisy and pessimistic. "
                      f"Re-run on an idle machine before drawing conclusions."]
    lines += ["", f"* auto vs torch speedup, geometric mean: {s['speedup_auto_vs_torch_geomean']:.2f}x",
              f"* auto / ort, worst model: {s['auto_vs_ort_worst']:.2f}",
              f"* the same two from each case's fastest run (less sensitive to other load): "
              f"{s['fastest_run_speedup_auto_vs_torch_geomean']:.2f}x and "
              f"{s['fastest_run_auto_vs_ort_worst']:.2f}",
              f"* host dispatch per segment call, worst model: "
              f"{s['dispatch_us_per_segment_call_worst']:.1f} us (null engines); in situ "
              f"{s['in_situ_host_us_per_segment_call_worst']:.1f} us", ""]
    lines += [f"* target {k}: {'met' if v else 'MISSED'}" for k, v in s["targets_met"].items()]
    na = {r["model"]: r["not_available"] for r in report["rows"] if r["not_available"]}
    if na:
        lines += ["", "Not available:"] + [f"* {m} {e}: {why}" for m, d in na.items() for e, why in d.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
