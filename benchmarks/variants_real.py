"""Every model of the real zoo through ``edgert prune``, against ORT on the original model.

    .venv/bin/python benchmarks/variants_real.py [--models resnet50,vit_tiny,...] [--runs 40]
        [--modes default,...] [--zoo DIR] [--out benchmarks/results/variants_real.json]

Models come from tools/make_real_zoo.py (torchvision and transformers code, seeded random
weights, dynamo exports, its seeded inputs; every model by default, the If/Loop ones too:
what a control-flow body reads stays whole).
ViT's classifier is zero-initialised by torchvision, so its copy gets seeded random
classifier weights (an all-zero output would hide a wrong level). Each model is pruned to
ratios 0, 0.25, 0.5, 0.75; per level: the fraction of the weights removed, whether the
outputs are finite, and level 0's max difference from ORT on the original.
Speed: in one process, ORT on the original model (ORT_ENABLE_ALL, one thread) and level 0
under each runtime mode (the default; ``--modes`` adds ``full_level="shared"``, the old
default, and ``share_weights=False``) run in ``--runs`` paired rounds (each round runs each
once, the order rotating); the printed ratio is the median of the per-round ratios to ORT
(the machine is shared: a block's p50 drifts with the neighbours' load, a round's pair sees
about the same), in wall-clock and in CPU time (one ORT thread: the CPU time is the work,
which waiting for a core does not inflate). Memory: in a fresh process per mode, the RSS growth (anonymous and
file-backed pages) of opening and running every level, next to one plain ORT session of
the original model.
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
# how each level got its weights (edgert/variants/runtime.py): ORT's own copy at ORT_ENABLE_ALL,
# a copy or a view of the shared map, or Slice nodes cutting the shared weights at every run
STRATEGY_MARK = {"private": "", "copy": "c", "view": "v", "slice": "s"}
MODES = {"default": {}, "full level shared (old default)": {"full_level": "shared"},
         "share_weights=False": {"share_weights": False}}


def zoo_tool() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_real_zoo", ROOT / "tools" / "make_real_zoo.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool
    spec.loader.exec_module(tool)
    return tool


def plain_session(model: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def load_feeds(npz: str) -> dict[str, np.ndarray]:
    with np.load(npz) as data:
        return {k: data[k] for k in data.files}


def rss_probe(model: str, aio: str, mode: str, npz: str) -> dict[str, int]:
    """In this fresh process: RSS growth (bytes) of one plain ORT session of ``model`` (mode
    "plain") or of opening and running every level of ``aio``."""
    from variants import rss_growth

    return rss_growth(lambda: plain_session(Path(model)), aio, None if mode == "plain" else MODES[mode],
                      load_feeds(npz))


def _probe(model: Path, aio: Path, mode: str, npz: Path) -> dict[str, int]:
    done = subprocess.run([sys.executable, __file__, "--rss-probe", str(model), str(aio), mode, str(npz)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _paired(runners: dict[str, Any], runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``runs`` rounds, each running every runner once (the order rotates): run i of two
    runners saw about the same load, so the median of their per-round ratios holds up on a
    shared machine where a block's p50 drifts with the neighbours' load. Returns wall-clock
    and CPU milliseconds: with one ORT thread the process's CPU time is the work itself, which
    the neighbours' load (time spent waiting for a core) does not inflate."""
    names = list(runners)
    for run in runners.values():
        for _ in range(3):
            run()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for i in range(runs):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t0, c0 = time.perf_counter_ns(), time.process_time_ns()
            runners[name]()
            cpu[name].append((time.process_time_ns() - c0) / 1e6)
            wall[name].append((time.perf_counter_ns() - t0) / 1e6)
    return wall, cpu


def _p50(run, bench: BenchSettings) -> float:
    raw = measure(run, bench)
    return float(summarize([x / 1e6 for x in raw.samples_ns])["p50"])


def zoo_model(tool: Any, name: str, zoo: Path, work: Path) -> tuple[Path, Path]:
    """The zoo's ``name`` and its inputs (.npz); ViT with seeded random classifier weights."""
    from torch_models import with_random_classifier

    path = tool.build([name], zoo)[name]
    if name.startswith("vit"):
        copy = with_random_classifier(path, work / f"{name}.onnx")
        return copy, path.with_suffix(".npz")
    return path, path.with_suffix(".npz")


def _with_if_conditions(graph: bytes) -> bytes | None:
    """``graph`` with the conditions of its top-level If nodes as extra outputs; None without If."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(graph)
    conds = [n.input[0] for n in model.graph.node if n.op_type == "If"]
    if not conds:
        return None
    for cond in conds:
        model.graph.output.append(onnx.helper.make_tensor_value_info(cond, onnx.TensorProto.BOOL, None))
    return model.SerializeToString()


def branches_taken(model: Path, aio: Path, feeds: dict[str, np.ndarray], work: Path) -> dict[str, Any] | None:
    """Which branch ("then"/"else") every top-level If takes, on the original model and at each
    level: a pruned level's weights change the values an If's condition is computed from, so
    a level may take another exit than the full model (and run more or less of it). None for a
    model without If."""
    import onnxruntime as ort

    from edgert.variants import aiofile

    original = _with_if_conditions(model.read_bytes())
    if original is None:
        return None

    def names(flags: list[np.ndarray]) -> list[str]:
        return ["then" if bool(np.asarray(f).reshape(-1)[0]) else "else" for f in flags]

    outputs = len(ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_outputs())
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the probe graph's unused-initializer notes
    session = ort.InferenceSession(original, options, providers=["CPUExecutionProvider"])
    taken: dict[str, Any] = {"original": names(session.run(None, feeds)[outputs:])}
    f = aiofile.read(aio)
    try:
        tensors, meta = {k: np.array(v) for k, v in f.tensors.items()}, f.meta
    finally:
        f.close()
    for lv in meta["levels"]:
        for key in (lv["graph"], lv["sliced_graph"]):
            tensors[key] = np.frombuffer(_with_if_conditions(tensors[key].tobytes()), np.uint8)
    probe = work / f"{aio.stem}.if.aio"
    aiofile.write(probe, tensors, meta)
    with open_variants(probe, threads=1) as vm:
        taken["levels"] = []
        for lv in vm.levels:
            vm.select_index(lv.index)
            taken["levels"].append(names(vm.run(feeds)[outputs:]))
    probe.unlink()
    return taken


def bench_model(model: Path, npz: Path, work: Path, runs: int, modes: list[str], bench: BenchSettings
                ) -> dict[str, Any]:
    aio = work / f"{model.stem}.aio"
    report = prune(model, RATIOS, aio)
    feeds = load_feeds(str(npz))
    plain = plain_session(model)
    ref = plain.run(None, feeds)[0]
    scale = float(np.max(np.abs(ref)))
    full_bytes = report.levels[0]["weight_bytes"]
    opened = {mode: open_variants(aio, threads=1, **MODES[mode]) for mode in modes}
    levels = []
    vm = opened[modes[0]]
    for lv, rep in zip(vm.levels, report.levels):
        vm.select_index(lv.index)
        out = vm.run(feeds)[0]
        levels.append({"ratio": lv.ratio, "removed_weight_fraction": 1 - rep["weight_bytes"] / full_bytes,
                       "finite": bool(np.isfinite(out).all()), "shape_ok": out.shape == ref.shape})
    vm.select_index(0)
    diff = float(np.max(np.abs(vm.run(feeds)[0] - ref)))
    runners = {"ort_original": lambda: plain.run(None, feeds)}
    for mode, vm in opened.items():
        vm.select_index(0)
        runners[f"level0 {mode}"] = lambda vm=vm: vm.run(feeds)
    paired, cpu = _paired(runners, runs)
    ort_ms, ort_cpu = paired["ort_original"], cpu["ort_original"]
    out: dict[str, Any] = {
        "inputs": {k: list(v.shape) for k, v in feeds.items()}, "skipped_groups": len(report.skipped),
        "levels": levels, "level0_max_abs_diff": diff, "level0_max_diff_rel_to_max_abs": diff / scale,
        "paired_runs": runs, "ort_original_p50_ms": float(np.median(ort_ms)), "modes": {},
        "if_branches": branches_taken(model, aio, feeds, work)}
    for mode, vm in opened.items():
        p50s = []
        for lv in vm.levels:
            vm.select_index(lv.index)
            p50s.append({"ratio": lv.ratio, "strategy": lv.strategy, "p50_ms": _p50(lambda vm=vm: vm.run(feeds), bench)})
        mem = vm.memory()
        out["modes"][mode] = {
            "level0_p50_ms": float(np.median(paired[f"level0 {mode}"])),
            "level0_vs_ort": float(np.median(np.array(paired[f"level0 {mode}"]) / np.array(ort_ms))),
            "level0_vs_ort_cpu_time": float(np.median(np.array(cpu[f"level0 {mode}"]) / np.array(ort_cpu))),
            "levels": p50s, "resident_weight_bytes": mem["resident_bytes"], "full_weight_bytes": mem["full_weight_bytes"],
            "rss_growth_all_levels": _probe(model, aio, mode, npz)}
        vm.close()
    out["plain_ort_session_rss"] = _probe(model, aio, "plain", npz)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-probe":
        print(json.dumps(rss_probe(*sys.argv[2:6])))
        return
    tool = zoo_tool()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(tool.MODELS), help="zoo models (default: all)")
    ap.add_argument("--runs", type=int, default=40, help="paired rounds of ORT and every mode's level 0")
    ap.add_argument("--modes", default="default", help=f"runtime modes: {', '.join(MODES)}")
    ap.add_argument("--zoo", type=Path, default=None, help="zoo directory (default: make_real_zoo's cache)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "variants_real.json")
    args = ap.parse_args()
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES] + [m for m in args.models.split(",") if m not in tool.MODELS]
    if unknown:
        ap.error(f"unknown mode(s) or model(s): {', '.join(unknown)}")
    bench = BenchSettings(warmup_runs=3, min_runs=15, min_duration_ms=1000.0, max_duration_ms=3000.0)
    results: dict[str, Any] = {"models": {}, "load_average": os.getloadavg(), "ratios": RATIOS,
                               "measured_on": "shared 2-core host, other jobs running (see load_average)"}
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model, npz = zoo_model(tool, name, args.zoo or tool.default_dir(), Path(tmp))
            r = results["models"][name] = bench_model(model, npz, Path(tmp), args.runs, modes, bench)
            r["load_average_after"] = os.getloadavg()
            plain = r["plain_ort_session_rss"]
            removed = " ".join(f"{lv['removed_weight_fraction']:.2f}" for lv in r["levels"])
            say(f"{name} {r['inputs']}: removed {removed} of the weights at ratios {RATIOS}; finite "
                f"{all(lv['finite'] and lv['shape_ok'] for lv in r['levels'])}; level 0 max diff "
                f"{r['level0_max_abs_diff']:.1e} ({r['level0_max_diff_rel_to_max_abs']:.1e} of max |out|); "
                f"{r['skipped_groups']} groups kept whole")
            say(f"  ORT on the original p50 {r['ort_original_p50_ms']:.2f} ms; one plain ORT session RSS "
                f"+{plain['anonymous_bytes'] / 2**20:.1f} MiB anon +{plain['file_bytes'] / 2**20:.1f} MiB file "
                f"(load {r['load_average_after'][0]:.1f})")
            for mode, m in r["modes"].items():
                rss = m["rss_growth_all_levels"]
                p50s = " ".join(f"{lv['p50_ms']:.2f}{STRATEGY_MARK[lv['strategy']]}" for lv in m["levels"])
                say(f"  {mode:12s} level0/ORT {m['level0_vs_ort']:.3f} (CPU time {m['level0_vs_ort_cpu_time']:.3f})  "
                    f"level p50s {p50s} ms  all levels RSS "
                    f"+{rss['anonymous_bytes'] / 2**20:.1f} MiB anon +{rss['file_bytes'] / 2**20:.1f} MiB file "
                    f"(accounted weights {m['resident_weight_bytes'] / m['full_weight_bytes']:.2f}x full)")
            if r["if_branches"]:
                original, levels = r["if_branches"]["original"], r["if_branches"]["levels"]
                changed = any(branches != original for branches in levels)
                say(f"  If branches taken: original {'/'.join(original)}, levels "
                    f"{' '.join('/'.join(b) for b in levels)}"
                    + (" (a pruned level's weights change the If condition: another exit, other work)"
                       if changed else " (the same at every level)"))
    results["load_average_after"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(
        "# `edgert prune` on the real zoo, level 0 against ORT (benchmarks/variants_real.py)\n\n"
        f"Measured on a shared 2-core host with other jobs running: load average "
        f"{results['load_average'][0]:.1f} at the start, {results['load_average_after'][0]:.1f} at the end "
        f"(per model in the JSON). p50 ratios are medians of {args.runs} paired rounds (ORT and level 0 "
        "interleaved), one thread, ORT_ENABLE_ALL for the plain session; the CPU-time ratio is the same "
        "pairing on the process's CPU time (the work, without the time spent waiting for a core). "
        "Per-level p50s are wall clock, measured one level after the other; a suffix says how the level got "
        "its weights (none: ORT's own copy, ORT_ENABLE_ALL; c: a compact copy, v: a view of the shared map, "
        "s: Slice nodes at every run; edgert/variants/runtime.py). RSS growth is measured in a fresh "
        "process per mode. Inputs are the zoo's (64x64 images, 16 tokens).\n\n```\n"
        + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
