"""ORT vs TVM untuned vs TVM tuned with MetaSchedule, on the zoo CNNs, measured in one run.

    .venv/bin/python benchmarks/tvm_tuning.py [--budgets 1,5,15] [--models resnet,mobilenet_v2]
        [--out benchmarks/results/tvm_tuning.json]
        [--device SPEC [--ssh-key K --known-hosts F --agent-cmd C] | --arm64-board] [--target aarch64]

Budgets are cumulative checkpoints of one tuning database per model: the run tunes for the
first budget, compiles and measures, then resumes tuning (same database, records kept) up
to the next budget, and so on. At every checkpoint ORT and TVM are measured back to back,
so each ratio p50(TVM) / p50(ORT) compares numbers taken under the same machine load.

On a device (``--device``, or ``--arm64-board`` for tools/arm64-board behind a throwaway
sshd, as the tests reach it) the host compiles bundles for ``--target`` (all on TVM),
the agent times tuning candidates and runs ORT and the bundles; outputs are checked
against ORT on the host. An emulated device's numbers are labelled EMULATED throughout.
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

import contextlib  # noqa: E402
from typing import Iterator  # noqa: E402

import numpy as np  # noqa: E402

from edgert.compilers.tvm_target import resolve_target  # noqa: E402
from edgert.compilers.tvm_tune import agent_timer, tune_model  # noqa: E402
from edgert import device_facts  # noqa: E402
from edgert.bench import BenchJob, bench  # noqa: E402
from edgert.devices.address import DeviceAddress, inventory_path, resolve  # noqa: E402
from edgert.devices.connect import open_client  # noqa: E402
from edgert.dynamic import compile as compile_bundle  # noqa: E402
from edgert.dynamic.tune import tune_bundle  # noqa: E402
from edgert.settings import BenchSettings  # noqa: E402
from edgert.zoo import zoo_models  # noqa: E402

EMULATED_NOTE = ("EMULATED: qemu-aarch64 user mode translates every arm64 instruction on the "
                 "host's x86 cores; these are not arm64 hardware speeds and the ratios between "
                 "engines or tuning stages are not predictive of a real board.")


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


def _measure_on_device(model: Path, bundle: Path, settings: BenchSettings,
                       addr: DeviceAddress) -> dict:
    """ORT on the ONNX and TVM on the bundle, both run by the device's agent; the bundle's
    outputs on seeded inputs are compared with ORT on this host."""
    import onnxruntime

    started = time.monotonic()
    [ort] = bench(BenchJob(model=model, backends=("ort",), settings=settings), addr)
    [tvm] = bench(BenchJob(model=bundle, backends=("bundle",), settings=settings), addr)
    reference = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)  # the zoo CNNs have static float32 inputs
    feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in reference.get_inputs()}
    want = reference.run(None, feeds)
    with open_client(addr) as client:
        got = client.run_model(bundle, "bundle", feeds)
    diff = max(float(np.max(np.abs(np.asarray(g, np.float64) - w))) for g, w in zip(got, want))
    return {"ort_p50_ms": ort["latency_ms"]["p50"], "tvm_p50_ms": tvm["latency_ms"]["p50"],
            "ratio_vs_ort": tvm["latency_ms"]["p50"] / ort["latency_ms"]["p50"],
            "max_abs_diff_vs_host_ort": diff,
            "ort_runs": ort["latency_ms"]["n"], "tvm_runs": tvm["latency_ms"]["n"],
            "emulated": bool(ort["emulated"] and tvm["emulated"]),
            "device": tvm["device"], "warnings": ort["warnings"] + tvm["warnings"],
            "compile_and_bench_s": round(time.monotonic() - started, 1)}


@contextlib.contextmanager
def _arm64_board(work: Path) -> Iterator[DeviceAddress]:
    """tools/arm64-board behind a throwaway sshd on 127.0.0.1, reached as the tests reach it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from arm64 import address, board_root  # tests/arm64.py: board build + ssh address
    from sshd import start_sshd

    root, why = board_root()
    if root is None:
        raise SystemExit(why)
    server = start_sshd(work / "sshd")
    try:
        yield address(server, root, work / "store").replace(emulated=True)
    finally:
        server.stop()


def _on_device(args: argparse.Namespace, addr: DeviceAddress, budgets: list[float], work: Path,
               settings: BenchSettings, report: dict) -> None:
    """Every model: untuned bundle, then tuning (candidates timed by the agent) to each budget."""
    models = zoo_models()
    with open_client(addr) as client:
        emulated = addr.emulated or client.capabilities.emulated
        report["emulated"] = emulated  # the results say so too, each from the agent
        if emulated:
            report["warnings"] = [EMULATED_NOTE]
        timer = agent_timer(client)
        for name in args.models.split(","):
            model = models[name]
            db = work / f"{name}-db"
            row = {"model": name, "stages": []}
            report["rows"].append(row)
            untuned = compile_bundle(model, backend="tvm", target=args.target,
                                     out=work / f"{name}.untuned.edgert", cache_dir=work / "cache")
            stage = {"stage": "untuned", "loadavg": os.getloadavg(),
                     **_measure_on_device(model, untuned, settings, addr)}
            report["device"] = stage.pop("device")
            row["stages"].append(stage)
            _write(args.out, report)
            print(name, stage, flush=True)
            spent = 0.0
            for budget in budgets:
                summary = tune_bundle(untuned, db, time_budget_s=(budget - spent) * 60, timer=timer,
                                      emulated=emulated)
                spent = budget
                tuned = compile_bundle(model, backend="tvm", target=args.target, tuning_db=db,
                                       out=work / f"{name}.{budget:g}min.edgert", cache_dir=work / "cache")
                stage = {"stage": "tuned", "budget_min": budget, "tune_s": round(summary.elapsed_s, 1),
                         "trials_run": summary.trials, "tasks": len(summary.tasks),
                         "tasks_measured": sum(t.best_us is not None for t in summary.tasks),
                         "tuning_emulated": summary.emulated, "loadavg": os.getloadavg()}
                previous = [s for s in row["stages"] if s["stage"] == "tuned"]
                stage["trials_total"] = stage["trials_run"] + (previous[-1]["trials_total"] if previous else 0)
                stage.update(_measure_on_device(model, tuned, settings, addr))
                stage.pop("device")
                row["stages"].append(stage)
                _write(args.out, report)
                print(name, stage, flush=True)


def _write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


def _markdown(report: dict) -> str:
    dev = report["device"]
    label = " EMULATED" if report["emulated"] else ""
    lines = [f"# TVM MetaSchedule tuning vs ONNX Runtime ({dev.get('arch')}, {dev.get('cpu_model')}, "
             f"{dev.get('cores_usable')} cores, target {report['target']}){label}", "",
             (f"**{EMULATED_NOTE}**" if report["emulated"] else "Measured (not emulated).")
             + " p50 of one inference, batch 1, float32. " + report["note"], "",
             f"Command: `{report['command']}`", "",
             "| model | stage | tuning min (cumulative) | trials | tasks measured | ORT p50 ms | "
             "TVM p50 ms | TVM/ORT | max abs diff vs ORT |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        for stage in row["stages"]:
            diff = stage.get("max_abs_diff_vs_host_ort", stage.get("max_abs_diff_vs_ort"))
            diff_text = f"{diff:.1e}" if diff is not None else "-"
            measured = f"{stage['tasks_measured']}/{stage['tasks']}" if "tasks" in stage else "-"
            lines.append(f"| {row['model']} | {stage['stage']} | {stage.get('budget_min', 0)} | "
                         f"{stage.get('trials_total', 0)} | {measured} | {stage['ort_p50_ms']:.2f}{label} | "
                         f"{stage['tvm_p50_ms']:.2f}{label} | {stage['ratio_vs_ort']:.2f}x{label} | "
                         f"{diff_text} |")
    load = ", ".join(f"{a:.1f}" for a in report["loadavg_start"])
    lines += ["", f"Machine load average (1/5/15 min) at the start: {load}; per stage in the JSON "
              "(`loadavg`). Other jobs shared the machine."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="1,5,15", help="cumulative tuning minutes")
    parser.add_argument("--models", default="resnet,mobilenet_v2")
    parser.add_argument("--target", default=None,
                        help="TVM target [default: aarch64 with --arm64-board, else host]")
    parser.add_argument("--max-time", type=float, default=10.0, help="seconds per engine and checkpoint")
    parser.add_argument("--work", type=Path, default=None, help="where databases and libraries go")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tvm_tuning.json")
    parser.add_argument("--device", default="local",
                        help="where to measure: local, a device URL or an edgert.toml name")
    parser.add_argument("--inventory", type=Path, default=None, help="edgert.toml (see README)")
    parser.add_argument("--ssh-key", type=Path, default=None)
    parser.add_argument("--known-hosts", type=Path, default=None)
    parser.add_argument("--agent-cmd", default=None)
    parser.add_argument("--arm64-board", action="store_true",
                        help="measure on tools/arm64-board (EMULATED) behind a throwaway sshd")
    args = parser.parse_args()

    args.target = args.target or ("aarch64" if args.arm64_board else "host")
    budgets = [float(b) for b in args.budgets.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="edgert-tvm-tuning-"))
    settings = BenchSettings(min_duration_ms=2000, max_duration_ms=args.max_time * 1000)
    report = {"benchmark": "tvm_tuning", "schema": 1, "measured": True, "emulated": False,
              "command": " ".join([".venv/bin/python", "benchmarks/tvm_tuning.py", *sys.argv[1:]]),
              "device": device_facts.collect("local"), "target": args.target,
              "settings": settings.to_dict(), "budgets_min": budgets, "work": str(work),
              "note": ("Tuning budgets are cumulative checkpoints of one database (resumed runs). "
                       "The machine is a shared 2-core VM with other jobs running; ORT is "
                       "re-measured at every checkpoint and the ratio uses that run."),
              "loadavg_start": os.getloadavg(), "rows": []}
    with contextlib.ExitStack() as stack:
        if args.arm64_board:
            addr = stack.enter_context(_arm64_board(work))
        else:
            addr = resolve(args.device, inventory_path(args.inventory)).replace(
                ssh_key=args.ssh_key, known_hosts=args.known_hosts, agent_cmd=args.agent_cmd)
        if addr.scheme == "local":
            _on_host(args, budgets, work, settings, report)
        else:
            report["host"] = report["device"]
            _on_device(args, addr, budgets, work, settings, report)
    report["loadavg_end"] = os.getloadavg()
    _write(args.out, report)
    args.out.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))


def _on_host(args: argparse.Namespace, budgets: list[float], work: Path, settings: BenchSettings,
             report: dict) -> None:
    """Every model on this machine: ORT and TVM (compiled here) after each tuning budget."""
    target = resolve_target(args.target)
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


if __name__ == "__main__":
    main()
