"""Does ``compile --backend auto --device`` choose what ``bench --device`` would?

    .venv/bin/python benchmarks/auto_on_device.py [--model early_exit_cnn] [--runs 15]
        [--out benchmarks/results/auto_on_device.json]

Compiles a dynamic zoo model for aarch64 with auto's candidates timed on the emulated arm64
board (tools/arm64_board behind a real sshd; every number is EMULATED, qemu on this host,
and says nothing about a real Cortex-A76), keeping every candidate with the inputs it was
timed on (``--keep-candidates``). Then times each kept candidate again, in a separate
``edgert bench FILE --backend bundle --device BOARD --input ...`` per input, and prints the
compile-time and bench-time milliseconds side by side and whether each decision (each
segment's engine, then partitioned vs whole model) comes out the same. A decision whose two
candidates are within the timing noise of the emulator can flip; the ratio column says how
far apart they were.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tools")]

from arm64 import board_root, device_args  # noqa: E402
from sshd import start_sshd  # noqa: E402

from edgert.devices.timer import WARMUP_RUNS  # noqa: E402
from edgert.dynamic import inspect  # noqa: E402

MARGIN = 0.05  # whole.MARGIN: the partitioned bundle must win by this much


def edgert(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "edgert", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"edgert {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def bench_ms(candidate: Path, device: list[str], runs: int, tmp: Path) -> float:
    """Mean over the candidate's inputs of bench --device's median (as auto computes it)."""
    medians = []
    with np.load(candidate.with_name(candidate.stem + ".inputs.npz")) as cases:
        grouped: dict[str, dict[str, np.ndarray]] = {}
        for key in cases.files:
            case, _, name = key.partition("/")
            grouped.setdefault(case, {})[name] = cases[key]
    for case, feeds in sorted(grouped.items()):
        inputs = []
        for name, value in feeds.items():
            path = tmp / f"{case}.{name}.npy"
            np.save(path, value)
            inputs += ["--input", f"{name}={path}"]
        out = tmp / "r.json"
        edgert("bench", str(candidate), "--backend", "bundle", "--runs", str(runs), "--warmup", str(WARMUP_RUNS),
               *inputs, "--json", str(out), "--quiet", *device)
        result = json.loads(out.read_text())
        assert result["emulated"] is True
        medians.append(result["latency_ms"]["p50"])
    return statistics.fmean(medians)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="early_exit_cnn")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/auto_on_device.json")
    args = parser.parse_args()
    root, why = board_root()
    if root is None:
        raise SystemExit(why)
    zoo = REPO / "edgert" / "zoo" / "dynamic"
    with tempfile.TemporaryDirectory(prefix="edgert-auto-bench-") as tmp_name:
        tmp = Path(tmp_name)
        server = start_sshd(tmp / "sshd")
        try:
            device = device_args(server, root, tmp / "store")
            kept, bundle = tmp / "candidates", tmp / "auto.edgert"
            edgert("compile", str(zoo / f"{args.model}.onnx"), "-o", str(bundle), "--target",
                   "aarch64", "--samples", str(zoo / f"{args.model}.npz"),
                   "--keep-candidates", str(kept), *device)
            rows = []
            partitioned = inspect(kept / "partitioned.edgert")
            for seg in partitioned["segments"]:
                recorded = seg["choice"].get("measured_ms", {})
                if len(recorded) < 2:
                    continue
                again = {e: bench_ms(kept / f"{seg['id']}.{e}.edgert", device, args.runs, tmp)
                         for e in recorded}
                rows.append({"decision": seg["id"], "compile_ms": recorded, "bench_ms": again,
                             "compile_choice": min(recorded, key=recorded.get),
                             "bench_choice": min(again, key=again.get)})
            auto = inspect(bundle)["auto"]
            recorded = auto["measured_ms"]
            again = {n: bench_ms(kept / f"{n}.edgert", device, args.runs, tmp) for n in recorded}

            def pick(t: dict[str, float]) -> str:
                return ("partitioned" if t["partitioned"] < (1 - MARGIN) * t["whole_model"]
                        else "whole_model")
            rows.append({"decision": "partitioned vs whole_model", "compile_ms": recorded,
                         "bench_ms": again, "compile_choice": auto["chosen"],
                         "bench_choice": pick(again)})
            facts = inspect(bundle)["timed_on"]
        finally:
            server.stop()
    print(f"{args.model}: candidates timed on {facts['hostname']} ({facts['arch']}, "
          f"{facts['cpu_model']}) [EMULATED]")
    for row in rows:
        times = ", ".join(f"{k} {row['compile_ms'][k]:.3f}/{row['bench_ms'][k]:.3f}"
                          for k in sorted(row["compile_ms"]))
        low, high = sorted(row["bench_ms"].values())[:2]
        same = "same" if row["compile_choice"] == row["bench_choice"] else "DIFFERENT"
        print(f"  {row['decision']}: compile/bench ms {times}; compile chose "
              f"{row['compile_choice']}, bench {row['bench_choice']} ({same}; "
              f"bench ratio {high / low:.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "emulated": True, "timed_on": facts,
                                    "decisions": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
