"""All-in-One variants on the zoo ResNet: per-level latency, switch time, memory, and stability
under an emulated DVFS trace (of the same ResNet at a larger input).

    .venv/bin/python benchmarks/variants.py [--out benchmarks/results/variants.json]

Part 1 prunes edgert/zoo/resnet.onnx to ratios 0, 0.25, 0.5, 0.75 and, for each memory
mode (the default, the full level shared with the 1.3x budget, copies or slicing for every
shared level, ORT's full optimisation; MODES), measures every level (p50 with edgert.timing + edgert.stats), the median
``select`` time, the weight bytes the runtime keeps resident and each level's strategy, and,
in a fresh process per mode, the RSS growth of opening and running every level (anonymous
and file-backed pages, so ORT's own copies and arenas count), next to one plain ORT session
of the original model.

Part 2 replays a frequency trace (1.0 down to 0.5 and back) on the emulated DVFS domain
(``device_agents.emulated``: cgroup CPU bandwidth, *not* a real clock change) on the zoo
ResNet's seeded weights fed a 640x640 input (about 50 ms per run instead of 3 ms) and measures
the p50 latency per step of (a) the full model, fixed, and (b) ``AdaptiveModel`` with a
budget; the adaptive model reads the emulated level through the domain's own reader. Each
step runs one runner's block, pauses so the CFS quota's debt drains, then the other's (the
order alternates by step): alternating run by run, both draw on one CFS quota, so each one's
latency depends on how much the other overdrew it, a coupling a real clock does not have. The coefficient of variation
(std/mean) of the per-level p50s is reported for both. Part 2 uses finer levels (ratios 0 to
0.7 in steps of 0.05) so the selector has levels about 10% apart; the default budget is 5%
above the calibrated full level at full speed (a looser budget lets the adaptive model run
anywhere up to it below full speed while it cannot exceed the full level at full speed,
which the CV counts as instability).

Why the larger input: the quota is enforced per 4 ms scheduler tick, so a run stalls in
whole ticks. Measured (p50 at levels 1.0..0.5, 4/8/20 ms periods, three interleaved repeats,
load average 0.1-0.9 on 2 CPUs): a 3 ms run slowed 1.04, 1.17, 1.11, 1.57, 2.61x at 0.9..0.5
(non-monotone, repeats 64% apart); 10 ms runs were monotone but spread 20-30% run to run;
25 and 50 ms runs slowed like a clock (within 4% of 1/level at a 4 ms period, repeats 5% and
2% apart). The adaptive model runs levels of budget/2 to budget at full speed, so a 50 ms
full level keeps every run it makes at 25 ms of work or more. Longer periods were no better.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgert import device_facts  # noqa: E402
from edgert.settings import BenchSettings  # noqa: E402
from edgert.stats import summarize  # noqa: E402
from edgert.timing import measure  # noqa: E402
from edgert.variants import AdaptiveModel, Policy, open as open_variants  # noqa: E402
from edgert.variants.calibrate import calibrate  # noqa: E402
from edgert.variants.frequency import FrequencySetting  # noqa: E402
from edgert.variants.prune import prune  # noqa: E402

RESNET = ROOT / "edgert" / "zoo" / "resnet.onnx"
RATIOS = [0.0, 0.25, 0.5, 0.75]
FINE_RATIOS = [round(0.05 * i, 2) for i in range(15)]
TRACE = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
CALIBRATION_LEVELS = sorted(set(TRACE), reverse=True)  # the emulation is not linear in 1/level
# One scheduler tick at CONFIG_HZ=250: the kernel enforces the quota at tick granularity, so a
# shorter period does not make throttling finer (measured at 2 ms, load average about 1: the
# full model ran 1.5-1.9x slower at level 0.9, and some pruned levels slower at 0.8 than at 0.7);
# 8 and 20 ms periods spread 25 and 50 ms runs more than 4 ms did (module docstring).
PERIOD_US = 4000
STABILITY_SIDE = 640  # input side of the stability subject: about 50 ms per run at full speed
DRAIN_S = 0.05  # pause between blocks: lets the quota debt of the last block drain
MODES = {"default (levels private while they fit the 1.3x budget)": {},
         "shared, budget 1.3x": {"full_level": "shared"},
         "shared, copy every level": {"full_level": "shared", "memory_budget": None},
         "shared, slice every level": {"full_level": "shared", "memory_budget": 1.0},
         "ort_full_optimisation": {"share_weights": False}}


def memory_kb() -> dict[str, int]:
    """Anonymous and total resident kB of this process (/proc/self/smaps_rollup)."""
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return {"anonymous": fields["Anonymous"], "file": fields["Rss"] - fields["Anonymous"]}


def warm_ort() -> None:
    """ORT's one-time state, from a one-conv model: warming up with the measured model itself
    would leave freed heap that the measured sessions then reuse unseen."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "warm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.ones(108, np.float32))])
    warm = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    ort.InferenceSession(warm.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.ones((1, 3, 8, 8), np.float32)})


def rss_growth(open_plain: Callable[[], Any], aio: str, options: dict[str, Any] | None,
               feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """RSS growth (bytes) in this fresh process of opening and running every level of ``aio``
    with ``options``, or (``options`` None) of the one plain ORT session ``open_plain`` makes.
    Shared with variants_real.py, so both benchmarks count memory the same way."""
    warm_ort()
    before = memory_kb()
    if options is None:
        keep: Any = open_plain()
        keep.run(None, feeds)
    else:
        keep = open_variants(aio, threads=1, **options)
        for lv in keep.levels:
            keep.select_index(lv.index)
            keep.run(feeds)
    after = memory_kb()
    return {f"{k}_bytes": 1024 * (after[k] - before[k]) for k in after}


def rss_probe(aio: str, mode: str) -> dict[str, int]:
    """In this fresh process: RSS growth of every level of ``aio`` in ``mode``, or of one plain
    ORT session of the original model (mode "plain")."""
    import onnxruntime as ort

    def plain() -> Any:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        return ort.InferenceSession(str(RESNET), sess_options=opts, providers=["CPUExecutionProvider"])

    feeds = {"input": np.zeros((1, 3, 160, 160), np.float32)}
    return rss_growth(plain, aio, None if mode == "plain" else MODES[mode], feeds)


def _probe(aio: Path, mode: str) -> dict[str, int]:
    done = subprocess.run([sys.executable, __file__, "--rss-probe", str(aio), mode], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def part_levels(work: Path, bench: BenchSettings, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    aio = work / "resnet.aio"
    report = prune(RESNET, RATIOS, aio)
    out: dict[str, Any] = {"model_file_bytes": RESNET.stat().st_size, "aio_file_bytes": report.file_bytes,
                           "skipped_groups": report.skipped, "modes": {}}
    import onnxruntime as ort

    ref = ort.InferenceSession(str(RESNET), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    out["plain_ort_session_rss"] = _probe(aio, "plain")
    for mode, options in MODES.items():
        with open_variants(aio, threads=1, **options) as vm:
            diff = float(np.max(np.abs(vm.run(feeds)[0] - ref)))
            levels = []
            for lv in vm.levels:
                vm.select_index(lv.index)
                raw = measure(lambda: vm.run(feeds), bench)
                s = summarize([x / 1e6 for x in raw.samples_ns])
                levels.append({"ratio": lv.ratio, "weight_bytes": lv.weight_bytes, "strategy": lv.strategy,
                               "p50_ms": s["p50"], "min_ms": s["min"], "ci95_ms": s["ci95"], "runs": s["n"]})
            for row in levels:
                row["vs_full"] = row["p50_ms"] / levels[0]["p50_ms"]
            switch = []
            for i in range(1000):
                t0 = time.perf_counter_ns()
                vm.select_index(i % len(vm.levels))
                switch.append(time.perf_counter_ns() - t0)
            mem = vm.memory()
            out["modes"][mode] = {
                "options": options, "levels": levels, "level0_max_abs_diff_vs_original": diff,
                "switch_us": {"p50": float(np.median(switch)) / 1e3, "p99": float(np.percentile(switch, 99)) / 1e3},
                "memory": {**mem, "resident_vs_full": mem["resident_bytes"] / vm.full_weight_bytes,
                           "rss_growth_all_levels": _probe(aio, mode)},
            }
    return out


def _replay(runners: dict[str, Any], domain, trace: list[float], runs: int) -> dict[str, list[dict[str, Any]]]:
    """Each trace step: pin the emulated level, then run each runner's block (3 warm-up runs,
    ``runs`` timed), pausing before each block so it starts with a full quota; the order of the
    blocks alternates from step to step so slow drifts in background load hit both alike."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in runners}
    for step, level in enumerate(trace):
        order = list(runners) if step % 2 == 0 else list(runners)[::-1]
        with domain.pinned(level):
            for name in order:
                time.sleep(DRAIN_S)
                run = runners[name]
                for _ in range(3):
                    run()
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter_ns()
                    run()
                    times.append((time.perf_counter_ns() - t0) / 1e6)
                rows[name].append({"emulated_level": level, "p50_ms": float(np.median(times)),
                                   "min_ms": float(np.min(times)), "runs": runs})
    return rows


def _cv_by_frequency(rows: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    by: dict[float, list[float]] = {}
    for r in rows:
        by.setdefault(r["emulated_level"], []).append(r["p50_ms"])
    p50 = {f: float(np.median(v)) for f, v in by.items()}
    values = np.array(list(p50.values()))
    return float(values.std(ddof=0) / values.mean()), {str(k): v for k, v in sorted(p50.items())}


def stability_subject(work: Path, side: int) -> Path:
    """The zoo ResNet (make_zoo's seed 1 weights) with a ``side`` x ``side`` input: it is
    convolutional up to a global average pool, so only the declared input shape changes, and
    the run time grows with the square of the side until a run spans many quota ticks."""
    import onnx

    model = onnx.load(str(RESNET))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = side
    onnx.checker.check_model(model, full_check=True)
    path = work / f"resnet-{side}.onnx"
    onnx.save(model, str(path))
    return path


def part_stability(work: Path, runs: int, budget_ms: float | None, period_us: int, side: int) -> dict[str, Any]:
    from edgert.device_agents.emulated import EmulatedDomain

    # the period measured best for these runs, at every level (no stretching of low levels')
    domain = EmulatedDomain(levels=tuple(TRACE), period_us=period_us, cpus=1, min_read_interval_s=0.02,
                            min_quota_us=0)
    if not domain.available():
        return {"skipped": "no writable cgroup CPU bandwidth controller on this machine"}
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, side, side)).astype(np.float32)}
    aio = work / f"resnet-{side}-fine.aio"
    prune(stability_subject(work, side), FINE_RATIOS, aio)
    bench = BenchSettings(warmup_runs=3, min_runs=20, min_duration_ms=400, max_duration_ms=3000,
                          target_ci_fraction=0.02)
    load_before = os.getloadavg()
    table = calibrate(aio, [FrequencySetting(lv, lambda lv=lv: domain.pinned(lv), f"emulated {lv}")
                            for lv in CALIBRATION_LEVELS], bench, feeds=feeds, unit="emulated fraction",
                      emulated=True, threads=1)
    budget = budget_ms or 1.05 * table["p50_ms"][0][-1]  # the full level at full speed, +5%
    adaptive = AdaptiveModel(aio, budget_ms=budget, frequency_source=domain.current_level,
                             policy=Policy(hysteresis=0.05, min_dwell_runs=5), threads=1)
    with open_variants(aio, threads=1) as vm:
        rows = _replay({"fixed": lambda: vm.run(feeds), "adaptive": lambda: adaptive.run(feeds)},
                       domain, TRACE, runs)
    fixed, adaptive_rows = rows["fixed"], rows["adaptive"]
    log = adaptive.log()
    adaptive.close()
    per_step = len(log) // len(TRACE)
    for i, row in enumerate(adaptive_rows):
        chosen = [d["ratio"] for d in log[i * per_step + 3:(i + 1) * per_step]]  # after the warm-up runs
        row["ratio_median"] = float(np.median(chosen))
        row["ratios_used"] = sorted(set(chosen))
    cv_fixed, p50_fixed = _cv_by_frequency(fixed)
    cv_adaptive, p50_adaptive = _cv_by_frequency(adaptive_rows)
    return {
        "emulated": True,
        "subject": {"model": f"edgert/zoo/resnet.onnx (tools/make_zoo.py resnet, seed 1) with a 1x3x{side}x{side} "
                             "input", "input_side": side,
                    "full_speed_p50_ms": table["p50_ms"][0][-1]},
        "domain": domain.describe(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "trace": TRACE, "runs_per_step": runs, "ratios": FINE_RATIOS,
        "calibration_p50_ms": {"frequencies": table["frequencies"], "ratios": table["ratios"],
                               "p50_ms": table["p50_ms"]},
        "budget_ms": budget,
        "fixed_full": {"steps": fixed, "p50_by_level": p50_fixed, "cv": cv_fixed,
                       "growth": max(p50_fixed.values()) / min(p50_fixed.values())},
        "adaptive": {"steps": adaptive_rows, "p50_by_level": p50_adaptive, "cv": cv_adaptive,
                     "switches": sum(d["switched"] for d in log),
                     "over_budget_fraction": float(np.mean([d["observed_ms"] > budget for d in log]))},
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _levels_markdown(lv: dict[str, Any]) -> list[str]:
    plain = lv["plain_ort_session_rss"]
    lines = [f"File: {lv['aio_file_bytes']} bytes for a {lv['model_file_bytes']}-byte model "
             f"({lv['aio_file_bytes'] / lv['model_file_bytes']:.3f}x). One plain ORT session of the original "
             f"model grows RSS by {_mib(plain['anonymous_bytes'])} anonymous + {_mib(plain['file_bytes'])} "
             "file-backed (measured like the modes below).", ""]
    for mode, m in lv["modes"].items():
        call = ", ".join(f"{k}={v}" for k, v in m["options"].items()) or "defaults"
        mem = m["memory"]
        rss = mem["rss_growth_all_levels"]
        lines += [f"## Mode `{mode}` (open: {call})", "",
                  f"Level 0 vs original: max abs diff {m['level0_max_abs_diff_vs_original']:.2e}. "
                  f"Switch: p50 {m['switch_us']['p50']:.2f} us, p99 {m['switch_us']['p99']:.2f} us. "
                  f"Weights kept with all levels open (runtime's accounting): {mem['resident_bytes']} bytes = "
                  f"{mem['resident_vs_full']:.2f}x the full level ({mem['copied_bytes']} of them copies). "
                  f"Measured RSS growth opening and running every level, in a fresh process: "
                  f"{_mib(rss['anonymous_bytes'])} anonymous + {_mib(rss['file_bytes'])} file-backed "
                  "(the map, ORT's arena and copies included).", "",
                  "| ratio | strategy | weight bytes | p50 ms | min ms | 95% CI | vs full |",
                  "|---|---|---|---|---|---|---|"]
        for row in m["levels"]:
            lines.append(f"| {row['ratio']:g} | {row['strategy']} | {row['weight_bytes']} | {row['p50_ms']:.3f} | "
                         f"{row['min_ms']:.3f} | {row['ci95_ms'][0]:.3f}..{row['ci95_ms'][1]:.3f} | "
                         f"{row['vs_full']:.3f} |")
        lines.append("")
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = ["# All-in-One variants on edgert/zoo/resnet.onnx", "",
             f"Command: `{result['command']}`. CPU: {result['device'].get('cpu_model')}, 1 thread. "
             f"All latencies measured. Load average (1 min) before/after the whole run: "
             f"{result['load_average_before'][0]:.2f} / {result['load_average_after'][0]:.2f} on "
             f"{os.cpu_count()} CPUs; above about 0.5 other work shared the machine and the numbers are noisy.",
             ""]
    if result["levels"]:
        lines += _levels_markdown(result["levels"])
    st = result["stability"]
    lines += ["## Stability under an emulated DVFS trace", ""]
    if "skipped" in st:
        return "\n".join(lines + [f"Skipped: {st['skipped']}.", ""])
    sub = st["subject"]
    lines += [f"EMULATED: cgroup CPU bandwidth (period {st['domain']['period_us']} us), not a real clock; "
              "every number in this section is from the emulated domain. "
              f"Subject: {sub['model']}, pruned to the levels below; full level "
              f"{sub['full_speed_p50_ms']:.2f} ms at full speed (calibrated p50): runs span many quota "
              "periods, where the emulated levels slow a run much like a clock would (benchmarks/variants.py "
              "docstring). "
              f"Load average (1 min) before/after this part: {st['load_average_before'][0]:.2f} / "
              f"{st['load_average_after'][0]:.2f}. "
              f"Trace {st['trace']}, {st['runs_per_step']} runs per step; adaptive budget "
              f"{st['budget_ms']:.2f} ms; levels {st['ratios']}.", ""]
    cal = st["calibration_p50_ms"]
    lines += ["Calibration (p50 ms, emulated) the adaptive model selects from:", "",
              "| ratio | " + " | ".join(f"emulated {f:g}" for f in cal["frequencies"]) + " |",
              "|---|" + "---|" * len(cal["frequencies"])]
    lines += [f"| {r:g} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for r, row in zip(cal["ratios"], cal["p50_ms"])]
    lines += ["", "| emulated level | fixed full p50 ms (emulated) | adaptive p50 ms (emulated) | "
              "adaptive ratio (median) | ratios used |",
              "|---|---|---|---|---|"]
    for f, a in zip(st["fixed_full"]["steps"], st["adaptive"]["steps"]):
        lines.append(f"| {f['emulated_level']:g} | {f['p50_ms']:.3f} | {a['p50_ms']:.3f} | {a['ratio_median']:g} | "
                     f"{', '.join(f'{r:g}' for r in a['ratios_used'])} |")
    lines += ["", f"Coefficient of variation of p50 across levels: fixed {100 * st['fixed_full']['cv']:.1f}% "
              f"(slowest/fastest {st['fixed_full']['growth']:.2f}x), adaptive {100 * st['adaptive']['cv']:.1f}% "
              f"({st['adaptive']['switches']} switches, {100 * st['adaptive']['over_budget_fraction']:.1f}% "
              "of runs over budget).", "",
              f"Targets: fixed model slows by >= 1.8x over the trace: "
              f"{'met' if st['fixed_full']['growth'] >= 1.8 else 'NOT met'}; adaptive CV <= 5%: "
              f"{'met' if st['adaptive']['cv'] <= 0.05 else 'NOT met'}.", ""]
    if st["fixed_full"]["growth"] < 1.8:
        lines += [f"The emulated domain slowed the fixed model by only {st['fixed_full']['growth']:.2f}x: "
                  "when other processes already hold the CPUs the CFS quota does not bind, so this run "
                  "does not test the stability claim; rerun on an idle machine.", ""]
    accuracy = ROOT / "benchmarks" / "results" / "variants_accuracy.json"
    if accuracy.exists():
        acc = json.loads(accuracy.read_text())
        tuned = acc["accuracy"]["All-in-One fine-tuned (shared weights)"]
        pairs = ", ".join(f"{r:g}: {a:.4f}" for r, a in zip(acc["ratios"], tuned))
        lines += ["Accuracy cost: the zoo ResNet has seeded random weights, so it has no accuracy of its "
                  "own. On the trained digits CNN (variants_accuracy.md) the All-in-One fine-tuned "
                  f"accuracy per ratio is {pairs}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "variants.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgert-variants-bench"))
    parser.add_argument("--runs-per-step", type=int, default=60)
    parser.add_argument("--max-time", type=float, default=3.0, help="seconds per level in part 1")
    parser.add_argument("--budget-ms", type=float, default=None,
                        help="adaptive budget (default: 1.05x the calibrated full level at full speed)")
    parser.add_argument("--period-us", type=int, default=PERIOD_US, help="CFS period of the emulated domain")
    parser.add_argument("--side", type=int, default=STABILITY_SIDE,
                        help="input side of the stability subject (the zoo ResNet's weights)")
    parser.add_argument("--skip-levels", action="store_true", help="only part 2 (stability)")
    parser.add_argument("--rss-probe", nargs=2, metavar=("AIO", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_probe:  # internal: one memory measurement in a fresh process
        print(json.dumps(rss_probe(*args.rss_probe)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 160, 160)).astype(np.float32)}
    bench = BenchSettings(min_duration_ms=1000, max_duration_ms=args.max_time * 1000)
    result = {
        "benchmark": "variants", "schema": "edgert.bench.variants/1",
        "command": " ".join(["python benchmarks/variants.py", *sys.argv[1:]]),
        "device": device_facts.collect("local"), "settings": bench.to_dict(),
        "load_average_before": os.getloadavg(),
        "levels": None if args.skip_levels else part_levels(args.work, bench, feeds),
        "stability": part_stability(args.work, args.runs_per_step, args.budget_ms, args.period_us, args.side),
        "load_average_after": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
