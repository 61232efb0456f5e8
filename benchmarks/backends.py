"""ORT vs TVM vs LiteRT on every static zoo model, measured in one run, as ratios against ORT.

    .venv/bin/python benchmarks/backends.py [--max-time 5] [--out benchmarks/results/backends.json]

Writes the full result files' summaries (not the samples) and prints a table. The ratios
are p50(engine) / p50(ORT): below 1 is faster than ORT.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Run as a script, this file's folder is first on sys.path and its name would shadow the
# `backends` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from edgert.backends import backend_class  # noqa: E402
from edgert import device_facts  # noqa: E402
from edgert.bench import BenchJob, bench  # noqa: E402
from edgert.settings import BenchSettings  # noqa: E402
from edgert.zoo import zoo_models  # noqa: E402

ENGINES = ("ort", "tvm", "tflite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=float, default=5.0, help="seconds per engine and model")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "backends.json")
    args = parser.parse_args()

    engines = [e for e in ENGINES if backend_class(e).available()]
    settings = BenchSettings(min_duration_ms=1000, max_duration_ms=args.max_time * 1000)
    rows = []
    for name, path in zoo_models().items():
        results = bench(BenchJob(model=path, backends=tuple(engines), settings=settings))
        base = results[0]["latency_ms"]["p50"]
        rows.append({
            "model": name,
            "engines": {r["backend"]["name"]: {
                "version": r["backend"]["version"],
                "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
                "ci95_ms": r["latency_ms"]["ci95"], "runs": r["latency_ms"]["n"],
                "ratio_vs_ort": r["latency_ms"]["p50"] / base,
                "max_abs_diff_vs_ort": r.get("agreement", {}).get("max_abs", 0.0),
                "warnings": r["warnings"],
            } for r in results},
        })
    report = {"benchmark": "backends", "device": device_facts.collect("local"),
              "load_average_1_5_15": list(os.getloadavg()),  # other work on the machine skews ratios
              "settings": settings.to_dict(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")

    table = Table(title=f"p50 latency, ratio vs ORT ({report['device']['cpu_model']}, "
                        f"{report['device']['cores_usable']} cores)")
    table.add_column("model")
    for e in engines:
        table.add_column(e, justify="right")
    for row in rows:
        table.add_row(row["model"], *(f"{row['engines'][e]['p50_ms']:.2f} ms "
                                      f"({row['engines'][e]['ratio_vs_ort']:.2f}x)" for e in engines))
    Console().print(table)


if __name__ == "__main__":
    main()
