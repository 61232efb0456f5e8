"""Does ``compile --backend auto --device`` choose what ``bench --device`` would?

    .venv/bin/python benchmarks/auto_on_device.py [--model NAME ...] [--transport tcp|ssh]
        [--out benchmarks/results/auto_on_device.json]

Compiles dynamic zoo models (default: all of them) for aarch64 with auto's candidates timed
on the emulated arm64 board (tools/arm64_board; every number is EMULATED, qemu on this
shared host, and says nothing about a real Cortex-A76), keeping every candidate with the
inputs it was timed on (``--keep-candidates``). Then times each kept candidate again with
``edgert bench CAND --backend bundle --cases CAND.inputs.npz --device BOARD`` and the run
counts of ``edgert.devices.timer.bench_options`` (the request compile sent), and applies
auto's rule (``edgert.dynamic.auto_rule.decide``) to bench's samples. Per model it prints
each decision (each segment's engine, then partitioned vs whole model): the compile-time
and bench medians, the choice each gives, and whether bench reproduced compile's choice.

``--transport tcp`` (default): compile and bench talk to one long-lived emulated agent, as
compile's candidates all meet one agent; ``ssh`` starts an agent per command (about 35 s
each under qemu).
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
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tools")]

from agent_env import private_env, stop  # noqa: E402
from arm64 import board_root, device_args, start_tcp_agent  # noqa: E402
from ports import listening_port  # noqa: E402
from sshd import start_sshd  # noqa: E402

from edgert.devices.timer import bench_options  # noqa: E402
from edgert.dynamic import inspect  # noqa: E402
from edgert.dynamic.auto_rule import ALPHA, MARGIN, decide  # noqa: E402

ZOO = REPO / "edgert" / "zoo" / "dynamic"


def edgert(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "edgert", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"edgert {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def bench_samples(candidate: Path, device: list[str], tmp: Path) -> list[float]:
    """bench --device's raw samples of a kept candidate, timed on its kept inputs."""
    inputs = candidate.with_name(candidate.stem + ".inputs.npz")
    with np.load(inputs) as cases:
        count = len({key.partition("/")[0] for key in cases.files})
    out = tmp / "bench.json"
    edgert("bench", str(candidate), "--backend", "bundle", "--cases", str(inputs),
           *bench_options(count), "--json", str(out), "--quiet", *device)
    result = json.loads(out.read_text())
    assert result["emulated"] is True
    return result["samples_ms"]


def decisions(model: str, device: list[str], tmp: Path) -> tuple[list[dict[str, Any]], dict]:
    """Compile ``model`` auto on the device, then re-time every decision's candidates."""
    kept, bundle = tmp / model / "candidates", tmp / model / "auto.edgert"
    edgert("compile", str(ZOO / f"{model}.onnx"), "-o", str(bundle), "--target", "aarch64",
           "--samples", str(ZOO / f"{model}.npz"), "--keep-candidates", str(kept), *device)
    records = [(seg["id"], seg["choice"], lambda e, s=seg["id"]: kept / f"{s}.{e}.edgert")
               for seg in inspect(kept / "partitioned.edgert")["segments"]
               if "decision" in seg["choice"]]
    manifest = inspect(bundle)
    if "decision" in manifest["auto"]:
        records.append(("partitioned vs whole_model", manifest["auto"],
                        lambda name: kept / f"{name}.edgert"))
    rows = []
    for label, record, path in records:
        compiled = record["samples_ms"]
        benched = {name: bench_samples(path(name), device, tmp) for name in compiled}
        again = decide(record["decision"]["baseline"], benched)
        rows.append({"decision": label, "baseline": record["decision"]["baseline"],
                     "compile_median_ms": record["measured_ms"],
                     "bench_median_ms": {k: statistics.median(v) for k, v in benched.items()},
                     "compile_choice": record["chosen"], "bench_choice": again.chosen,
                     "compile_p": record["decision"]["p_value"], "bench_p": again.p_value,
                     "compile_ratio": record["decision"]["median_ratio"],
                     "bench_ratio": again.median_ratio,
                     "reproduced": record["chosen"] == again.chosen,
                     "compile_samples_ms": compiled, "bench_samples_ms": benched})
    return rows, manifest["timed_on"]


def report(model: str, rows: list[dict[str, Any]]) -> None:
    done = sum(r["reproduced"] for r in rows)
    print(f"{model}: {done}/{len(rows)} decisions reproduced [EMULATED]")
    for r in rows:
        times = ", ".join(f"{k} {r['compile_median_ms'][k]:.2f}/{r['bench_median_ms'][k]:.2f}"
                          for k in sorted(r["compile_median_ms"]))
        print(f"  {r['decision']} (baseline {r['baseline']}): median ms compile/bench {times}; "
              f"compile chose {r['compile_choice']} (ratio {r['compile_ratio']:.2f}, "
              f"p={r['compile_p']:.2g}), bench {r['bench_choice']} (ratio {r['bench_ratio']:.2f}, "
              f"p={r['bench_p']:.2g}): {'reproduced' if r['reproduced'] else 'NOT reproduced'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=sorted(p.stem for p in ZOO.glob("*.onnx")))
    parser.add_argument("--transport", choices=("tcp", "ssh"), default="tcp")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/auto_on_device.json")
    args = parser.parse_args()
    models = args.model or sorted(p.stem for p in ZOO.glob("*.onnx"))
    root, why = board_root()
    if root is None:
        raise SystemExit(why)
    results: dict[str, Any] = {}
    load_before, started = os.getloadavg(), time.time()
    with tempfile.TemporaryDirectory(prefix="edgert-auto-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ.update(private_env(tmp / "home"))  # the agents' and compiles' XDG dirs
        if args.transport == "ssh":
            server = start_sshd(tmp / "sshd")
            device, cleanup = device_args(server, root, tmp / "store"), server.stop
        else:
            token = tmp / "token"
            token.write_text("auto-on-device-benchmark-token\n")
            os.environ["EDGERT_TOKEN_FILE"] = str(token)
            agent = start_tcp_agent(root, tmp / "store", token, tmp / "agent.log")
            device = ["--device", f"tcp://127.0.0.1:{listening_port(agent, timeout=300)}"]
            cleanup = lambda: stop(agent)  # noqa: E731
        try:
            for model in models:  # the file is rewritten after each model: a cut run keeps them
                rows, facts = decisions(model, device, tmp)
                report(model, rows)
                results[model] = rows
                _write(args.out, args.transport, facts, load_before, results, models)
        finally:
            cleanup()
    decided = [r for rows in results.values() for r in rows]
    print(f"{sum(r['reproduced'] for r in decided)}/{len(decided)} decisions reproduced; "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"({(time.time() - started) / 60:.0f} min)")


def _write(out: Path, transport: str, facts: dict, load_before: tuple[float, ...],
           results: dict[str, Any], models: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "label": "EMULATED: qemu-user arm64 board on a shared 2-core x86_64 host; says nothing "
                 "about real hardware",
        "emulated": True, "transport": transport, "timed_on": facts,
        "rule": {"alpha": ALPHA, "margin": MARGIN},
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "models_not_run": [m for m in models if m not in results],
        "models": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
