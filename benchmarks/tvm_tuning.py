"""ORT vs TVM untuned vs TVM tuned with MetaSchedule, on the zoo CNNs, measured in one run.

    .venv/bin/python benchmarks/tvm_tuning.py [--budgets 1,5,15] [--models resnet,mobilenet_v2]
        [--out benchmarks/results/tvm_tuning.json]

Budgets are cumulative checkpoints of one tuning database per model: the run tunes for the
first budget, compiles and measures, then resumes tuning (same database, records kept) up
to the next budget, and so on. At every checkpoint ORT and TVM are measured back to back,
so each ratio p50(TVM) / p50(ORT) compares numbers taken under the same machine load.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder is first on sys.path and its name would shadow the
# `backends` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from backends.tvm_target import resolve_target  # noqa: E402
from backends.tvm_tune import tune_model  # noqa: E402
from edgert import device_facts  # noqa: E402
from edgert.bench import BenchJob, bench  # noqa: E402
from edgert.settings import BenchSettings  # noqa: E402
from edgert.zoo import zoo_models  # noqa: E402


def _measure(model: Path, settings: BenchSettings, cache: Path, db: Path | None) -> dict:
    started = time.monotonic()
    ort, tvm = bench(BenchJob(model=model, backends=("ort", "tvm"), settings=settings,
                              cache_dir=cache, tuning_db=db))
    return {"ort_p50_ms": ort["latency_ms"]["p50"], "tvm_p50_ms": tvm["latency_ms"]["p50"],
            "ratio_vs_ort": tvm["latency_ms"]["p50"] / ort["latency_ms"]["p50"],
            "max_abs_diff_vs_ort": tvm.get("agreement", {}).get("max_abs"),
            "ort_runs": ort["latency_ms"]["n"], "tvm_runs": tvm["latency_ms"]["n"],
            "warnings": ort["warnings"] + tvm["warnings"],
            "compile_and_bench_s": round(time.monotonic() - started, 1)}


def _write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


def _markdown(report: dict) -> str:
    dev = report["device"]
    lines = [f"# TVM MetaSchedule tuning vs ONNX Runtime ({dev.get('cpu_model')}, "
             f"{dev.get('cores_usable')} cores, target {report['target']})", "",
             "Measured (not emulated), p50 of one inference, batch 1, float32. "
             + report["note"], "",
             "| model | stage | tuning min (cumulative) | trials | ORT p50 ms | TVM p50 ms | TVM/ORT |",
             "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        for stage in row["stages"]:
            lines.append(f"| {row['model']} | {stage['stage']} | {stage.get('budget_min', 0)} | "
                         f"{stage.get('trials_total', 0)} | {stage['ort_p50_ms']:.2f} | "
                         f"{stage['tvm_p50_ms']:.2f} | {stage['ratio_vs_ort']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="1,5,15", help="cumulative tuning minutes")
    parser.add_argument("--models", default="resnet,mobilenet_v2")
    parser.add_argument("--target", default="host")
    parser.add_argument("--max-time", type=float, default=10.0, help="seconds per engine and checkpoint")
    parser.add_argument("--work", type=Path, default=None, help="where databases and libraries go")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tvm_tuning.json")
    args = parser.parse_args()

    budgets = [float(b) for b in args.budgets.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="edgert-tvm-tuning-"))
    target = resolve_target(args.target)
    settings = BenchSettings(min_duration_ms=2000, max_duration_ms=args.max_time * 1000)
    load = os.getloadavg()
    report = {"benchmark": "tvm_tuning", "schema": 1, "measured": True, "emulated": False,
              "device": device_facts.collect("local"), "target": args.target,
              "settings": settings.to_dict(), "budgets_min": budgets, "work": str(work),
              "note": ("Tuning budgets are cumulative checkpoints of one database (resumed runs). "
                       "The machine is a shared 2-core VM with other jobs running; ORT is "
                       "re-measured at every checkpoint and the ratio uses that run."),
              "loadavg_start": load, "rows": []}
    models = zoo_models()
    for name in args.models.split(","):
        model = models[name]
        db = work / f"{name}-db"
        row = {"model": name, "stages": []}
        report["rows"].append(row)
        row["stages"].append({"stage": "untuned", **_measure(model, settings, work / "cache", None)})
        _write(args.out, report)
        spent = 0.0
        for budget in budgets:
            summary = tune_model(model, db, target, time_budget_s=(budget - spent) * 60)
            spent = budget
            stage = {"stage": "tuned", "budget_min": budget, "tune_s": round(summary.elapsed_s, 1),
                     "trials_run": summary.trials, "tasks": len(summary.tasks),
                     "tasks_measured": sum(t.best_us is not None for t in summary.tasks),
                     "loadavg": os.getloadavg()}
            previous = [s for s in row["stages"] if s["stage"] == "tuned"]
            stage["trials_total"] = stage["trials_run"] + (previous[-1]["trials_total"] if previous else 0)
            stage.update(_measure(model, settings, work / "cache", db))
            row["stages"].append(stage)
            _write(args.out, report)
            print(name, stage, flush=True)
    report["loadavg_end"] = os.getloadavg()
    _write(args.out, report)
    args.out.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
