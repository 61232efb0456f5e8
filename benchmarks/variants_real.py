"""Level 0 of an All-in-One file against ORT on the original model, on real torchvision CNNs.

    .venv/bin/python benchmarks/variants_real.py [--models resnet50,mobilenet_v3_small] [--side 224]
        [--runs 40] [--out benchmarks/results/variants_real.json]

Each model (torchvision code, seeded random weights, tests/torch_models.py) is pruned to
ratios 0, 0.25, 0.5, 0.75. In one process, ORT on the original model (ORT_ENABLE_ALL, one
thread) and level 0 of the file under each runtime mode (the default, ``full_level="shared"``
the old default, ``share_weights=False``) run in ``--runs`` paired rounds (each round runs
each once, the order rotating); the printed ratio is the median of the per-round ratios to
ORT (the machine is shared: a block's p50 drifts with the neighbours' load, a round's pair
sees about the same). Every level's p50 is measured once per
mode. Memory: in a fresh process per mode, the RSS growth (anonymous and file-backed pages) of
opening and running every level, next to one plain ORT session of the original model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgert.settings import BenchSettings
from edgert.stats import summarize
from edgert.timing import measure
from edgert.variants import open as open_variants
from edgert.variants.prune import prune

RATIOS = [0.0, 0.25, 0.5, 0.75]
MODES = {"default": {}, "full level shared (old default)": {"full_level": "shared"},
         "share_weights=False": {"share_weights": False}}


def plain_session(model: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def rss_probe(model: str, aio: str, mode: str, side: int) -> dict[str, int]:
    """In this fresh process: RSS growth (bytes) of one plain ORT session of ``model`` (mode
    "plain") or of opening and running every level of ``aio``."""
    from variants import memory_kb, warm_ort

    warm_ort()
    feeds = {"x": np.zeros((1, 3, side, side), np.float32)}
    before = memory_kb()
    if mode == "plain":
        keep: Any = plain_session(Path(model))
        keep.run(None, feeds)
    else:
        keep = open_variants(aio, threads=1, **MODES[mode])
        for lv in keep.levels:
            keep.select_index(lv.index)
            keep.run(feeds)
    after = memory_kb()
    return {f"{k}_bytes": 1024 * (after[k] - before[k]) for k in after}


def _probe(model: Path, aio: Path, mode: str, side: int) -> dict[str, int]:
    done = subprocess.run([sys.executable, __file__, "--rss-probe", str(model), str(aio), mode, str(side)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _paired(runners: dict[str, Any], runs: int) -> dict[str, list[float]]:
    """``runs`` rounds, each running every runner once (the order rotates): run i of two
    runners saw about the same load, so the median of their per-round ratios holds up on a
    shared machine where a block's p50 drifts with the neighbours' load."""
    names = list(runners)
    for run in runners.values():
        for _ in range(3):
            run()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(runs):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter_ns()
            runners[name]()
            times[name].append((time.perf_counter_ns() - t0) / 1e6)
    return times


def _p50(run, bench: BenchSettings) -> float:
    raw = measure(run, bench)
    return float(summarize([x / 1e6 for x in raw.samples_ns])["p50"])


def bench_model(name: str, work: Path, side: int, runs: int, bench: BenchSettings) -> dict[str, Any]:
    from torch_models import export_cnn

    model = export_cnn(name, work / f"{name}.onnx", side=side)
    aio = work / f"{name}.aio"
    report = prune(model, RATIOS, aio)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, side, side)).astype(np.float32)}
    plain = plain_session(model)
    ref = plain.run(None, feeds)[0]
    opened = {mode: open_variants(aio, threads=1, **opts) for mode, opts in MODES.items()}
    runners = {"ort_original": lambda: plain.run(None, feeds)}
    for mode, vm in opened.items():
        vm.select_index(0)
        runners[f"level0 {mode}"] = lambda vm=vm: vm.run(feeds)
    paired = _paired(runners, runs)
    ort_ms = paired["ort_original"]
    out: dict[str, Any] = {"side": side, "skipped_groups": len(report.skipped), "paired_runs": runs,
                           "ort_original_p50_ms": float(np.median(ort_ms)), "modes": {}}
    for mode, vm in opened.items():
        levels = []
        for lv in vm.levels:
            vm.select_index(lv.index)
            levels.append({"ratio": lv.ratio, "strategy": lv.strategy, "weight_bytes": lv.weight_bytes,
                           "p50_ms": _p50(lambda vm=vm: vm.run(feeds), bench)})
        vm.select_index(0)
        rel = float(np.max(np.abs(vm.run(feeds)[0] - ref)) / np.max(np.abs(ref)))
        mem = vm.memory()
        out["modes"][mode] = {
            "level0_p50_ms": float(np.median(paired[f"level0 {mode}"])),
            "level0_vs_ort": float(np.median(np.array(paired[f"level0 {mode}"]) / np.array(ort_ms))),
            "level0_max_diff_rel_to_max_abs": rel, "levels": levels,
            "resident_weight_bytes": mem["resident_bytes"], "full_weight_bytes": mem["full_weight_bytes"],
            "rss_growth_all_levels": _probe(model, aio, mode, side)}
        vm.close()
    out["plain_ort_session_rss"] = _probe(model, aio, "plain", side)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-probe":
        print(json.dumps(rss_probe(*sys.argv[2:5], int(sys.argv[5]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v3_small")
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument("--runs", type=int, default=40, help="paired rounds of ORT and every mode's level 0")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "variants_real.json")
    args = ap.parse_args()
    bench = BenchSettings(warmup_runs=3, min_runs=15, min_duration_ms=1000.0, max_duration_ms=3000.0)
    results: dict[str, Any] = {"models": {}, "load_average": os.getloadavg()}
    lines: list[str] = []

    def say(line: str) -> None:
        print(line)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            r = results["models"][name] = bench_model(name, Path(tmp), args.side, args.runs, bench)
            plain = r["plain_ort_session_rss"]
            say(f"{name} ({args.side}x{args.side}): ORT on the original p50 {r['ort_original_p50_ms']:.2f} ms; "
                  f"one plain ORT session RSS +{plain['anonymous_bytes'] / 2**20:.1f} MiB anon, "
                  f"+{plain['file_bytes'] / 2**20:.1f} MiB file")
            for mode, m in r["modes"].items():
                rss = m["rss_growth_all_levels"]
                p50s = " ".join(f"{lv['p50_ms']:.2f}" for lv in m["levels"])
                say(f"  {mode:32s} level0/ORT {m['level0_vs_ort']:.3f}  strategies "
                      f"{','.join(lv['strategy'] for lv in m['levels'])}  level p50s {p50s} ms  all levels RSS "
                      f"+{rss['anonymous_bytes'] / 2**20:.1f} MiB anon +{rss['file_bytes'] / 2**20:.1f} MiB file "
                      f"(accounted weights {m['resident_weight_bytes'] / m['full_weight_bytes']:.2f}x full)")
    results["load_average_after"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(
        "# All-in-One level 0 vs ORT on the original (benchmarks/variants_real.py)\n\n"
        f"Load average {results['load_average'][0]:.1f} at start (2 shared cores); p50 ratios are medians "
        f"of {args.runs} paired rounds, one thread, ORT_ENABLE_ALL for the plain session. RSS growth "
        "is measured in a fresh process per mode.\n\n```\n" + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
