"""Does ``compile --backend auto --device`` choose what ``bench --device`` would?

    .venv/bin/python benchmarks/auto_on_device.py [--model NAME ...] [--transport tcp|ssh]
        [--out benchmarks/results/auto_on_device.json]

Compiles dynamic zoo models (default: all of them) for aarch64 with auto's candidates timed
on the emulated arm64 board (tools/arm64_board; every number is EMULATED, qemu on this
shared host, and says nothing about a real Cortex-A76), keeping every candidate with the
inputs it was timed on (``--keep-candidates``). Compile times the candidates of each
decision interleaved (``edgert.devices.timer``: one ``bench.interleaved`` request, ABBA
blocks, more requests near the rule's boundary). Then each decision's kept candidates are
timed again together with ``edgert bench A B --backend bundle --cases A.inputs.npz
--device BOARD`` and the options of ``edgert.devices.timer.request_options`` (the same
request, and the same extra requests while ``auto_rule.unsettled``), and auto's rule
(``auto_rule.decide``) is applied to bench's samples.

A decision is *reproduced* when the rule on bench's samples gives compile's choice. A miss
is *contradicted* when bench finds the candidate compile did not keep significantly faster
(one-sided Mann-Whitney U, p < ALPHA), else *inconclusive* (``auto_rule.agreement``).

The rule favours its baseline, so a reproduced "keep the baseline" is the easy case. As a
check that clear wins reproduce too, each decision is also judged with the roles swapped
(the other candidate as baseline) on the same stored compile and bench samples
(``swapped_baseline``; post hoc: the extra requests followed the real baseline).
``--reanalyse FILE`` recomputes that from a results file without running anything.

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

from edgert.devices.timer import compare, request_options  # noqa: E402
from edgert.dynamic import inspect  # noqa: E402
from edgert.dynamic.auto_rule import ALPHA, MARGIN, agreement, decide  # noqa: E402

ZOO = REPO / "edgert" / "zoo" / "dynamic"


def edgert(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "edgert", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"edgert {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def bench_again(candidates: dict[str, Path], baseline: str, device: list[str],
                tmp: Path) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """bench --device's samples of a decision's kept candidates, timed interleaved on their
    kept inputs with the request (and extra requests) compile used; and how they were taken."""
    inputs = next(iter(candidates.values()))
    inputs = inputs.with_name(inputs.stem + ".inputs.npz")
    with np.load(inputs) as cases:
        count = len({key.partition("/")[0] for key in cases.files})
    names = {path.stem: name for name, path in candidates.items()}

    def request(order: list[str]) -> dict[str, Any]:
        first = list(dict.fromkeys(order))  # this request's first round, as bench orders it
        out = tmp / "bench.json"
        edgert("bench", *(str(candidates[n]) for n in first), "--backend", "bundle",
               "--cases", str(inputs), *request_options(count), "--json", str(out), "--quiet", *device)
        results = {names[stem]: json.loads(out.with_name(f"bench.{stem}.json").read_text())
                   for stem in names}
        assert all(r["emulated"] is True for r in results.values())
        got = next(iter(results.values()))["interleaved"]
        return {"order": [names[stem] for stem in got["order"]], "failed": {},
                "raw": {name: {"samples_ns": [ms * 1e6 for ms in r["samples_ms"]]}
                        for name, r in results.items()}}

    timed = compare(list(candidates), count, baseline, request)
    return timed.samples_ms, timed.to_dict()


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
        baseline = record["decision"]["baseline"]
        first_round = list(dict.fromkeys(record["timing"]["order"]))
        benched, timing = bench_again({name: path(name) for name in first_round}, baseline,
                                      device, tmp)
        again = decide(baseline, benched)
        rows.append({"decision": label, "baseline": baseline,
                     "compile_median_ms": record["measured_ms"],
                     "bench_median_ms": {k: statistics.median(v) for k, v in benched.items()},
                     "compile_choice": record["chosen"], "bench_choice": again.chosen,
                     "compile_p": record["decision"]["p_value"], "bench_p": again.p_value,
                     "compile_ratio": record["decision"]["median_ratio"],
                     "bench_ratio": again.median_ratio,
                     "reproduced": record["chosen"] == again.chosen,
                     "outcome": agreement(record["chosen"], again, benched),
                     "compile_timing": record["timing"], "bench_timing": timing,
                     "compile_samples_ms": compiled, "bench_samples_ms": benched})
        rows[-1]["swapped_baseline"] = swapped(rows[-1])
    return rows, manifest["timed_on"]


def swapped(row: dict[str, Any]) -> dict[str, Any]:
    """The rule with the other candidate as baseline, on the row's compile and bench samples."""
    other = next(name for name in row["compile_samples_ms"] if name != row["baseline"])
    first, again = decide(other, row["compile_samples_ms"]), decide(other, row["bench_samples_ms"])
    return {"baseline": other, "compile_choice": first.chosen, "bench_choice": again.chosen,
            "compile_p": first.p_value, "bench_p": again.p_value,
            "outcome": agreement(first.chosen, again, row["bench_samples_ms"])}


def summary(results: dict[str, Any]) -> str:
    decided = [r for model in results.values() for r in model["decisions"]]
    outcomes = [r["outcome"] for r in decided]
    flipped = [r["swapped_baseline"] for r in decided]
    wins = [f for f in flipped if f["compile_choice"] != f["baseline"]]
    return (f"{outcomes.count('reproduced')}/{len(decided)} decisions reproduced, "
            f"{outcomes.count('contradicted')} contradicted, {outcomes.count('inconclusive')} "
            f"inconclusive; with the baselines swapped {sum(f['outcome'] == 'reproduced' for f in flipped)}"
            f"/{len(flipped)} (of which {len(wins)} challenger wins, "
            f"{sum(f['outcome'] == 'reproduced' for f in wins)} reproduced)")


def report(model: str, rows: list[dict[str, Any]]) -> None:
    done = sum(r["reproduced"] for r in rows)
    print(f"{model}: {done}/{len(rows)} decisions reproduced [EMULATED]")
    for r in rows:
        times = ", ".join(f"{k} {r['compile_median_ms'][k]:.2f}/{r['bench_median_ms'][k]:.2f}"
                          for k in sorted(r["compile_median_ms"]))
        print(f"  {r['decision']} (baseline {r['baseline']}): median ms compile/bench {times}; "
              f"compile chose {r['compile_choice']} (ratio {r['compile_ratio']:.2f}, "
              f"p={r['compile_p']:.2g}), bench {r['bench_choice']} (ratio {r['bench_ratio']:.2f}, "
              f"p={r['bench_p']:.2g}), requests {r['compile_timing']['requests']}/"
              f"{r['bench_timing']['requests']}: {r['outcome']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=sorted(p.stem for p in ZOO.glob("*.onnx")))
    parser.add_argument("--transport", choices=("tcp", "ssh"), default="tcp")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/auto_on_device.json")
    parser.add_argument("--reanalyse", type=Path, metavar="FILE",
                        help="recompute the swapped-baseline analysis of a results file, run nothing")
    args = parser.parse_args()
    if args.reanalyse:
        return reanalyse(args.reanalyse)
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
                before = os.getloadavg()[0]
                rows, facts = decisions(model, device, tmp)
                report(model, rows)
                results[model] = {"load_average_1min": {"before": before, "after": os.getloadavg()[0]},
                                  "decisions": rows}
                _write(args.out, args.transport, facts, load_before, results, models)
        finally:
            cleanup()
    print(f"{summary(results)}; load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after ({(time.time() - started) / 60:.0f} min)")


def reanalyse(path: Path) -> None:
    """Recompute every row's ``swapped_baseline`` from its stored samples; rewrite ``path``."""
    data = json.loads(path.read_text())
    for model in data["models"].values():
        for row in model["decisions"]:
            row["swapped_baseline"] = swapped(row)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(summary(data["models"]))


def _write(out: Path, transport: str, facts: dict, load_before: tuple[float, ...],
           results: dict[str, Any], models: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "label": "EMULATED: qemu-user arm64 board on a shared 2-core x86_64 host; says nothing "
                 "about real hardware",
        "emulated": True, "transport": transport, "timed_on": facts,
        "rule": {"alpha": ALPHA, "margin": MARGIN},
        "timing": "interleaved: each decision's candidates in one bench.interleaved request "
                  "(ABBA blocks), at compile time and again with edgert bench A B --device",
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "models_not_run": [m for m in models if m not in results],
        "models": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
