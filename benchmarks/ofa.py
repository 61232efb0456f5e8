"""Once-for-All from one file: block-table prediction error, searched vs uniform accuracy, switch time.

    .venv/bin/python tools/train_digits_aio.py --work /tmp/edgert-digits   # the trained digits file
    .venv/bin/python benchmarks/ofa.py --digits /tmp/edgert-digits/digits-aio.aio

For the trained digits CNN (``tools/train_digits_aio.py``: levels 0, 0.25, 0.5, 0.75 of one
fine-tuned weight set) and the zoo ResNet (pruned here to the same ratios, seeded weights):

1. ``edgert lut`` on this machine, unpinned ("local"), and on the emulated DVFS domain
   (cgroup CPU-quota levels: EMULATED, not clocks), each into its own copy of the file; the
   table's own whole-network checks (uniform levels + random configurations) give the
   error of the sum of block times, raw and after the leave-one-out linear correction.
2. Digits only: ``edgert search --accuracy digits`` (held-out split) on each table; then per
   setting the uniform levels and the stored set's configurations are timed interleaved
   (``--rounds`` rounds, timed as the table's checks: the fastest window, or paired at an
   emulated level) and their
   held-out accuracy taken from running the file. At each budget T (every measured latency
   among them) the most accurate uniform level measured within T is set against the most
   accurate searched configuration measured within T. The stored sets hold every uniform level
   (``search.stored_set``), so the searched choice can tie a level at a budget but not lose.
3. Switching between two cached configurations (``select_config``) next to switching levels.

The machine is shared: load averages are recorded before and after each part.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgert import device_facts  # noqa: E402
from edgert.device_agents.emulated import EmulatedDomain  # noqa: E402
from edgert.variants import config as C  # noqa: E402
from edgert.variants import config_graph, evaluate, lut, lut_run, search, tables  # noqa: E402
from edgert.variants.frequency import FrequencySetting  # noqa: E402
from edgert.variants.frequency import emulated_settings  # noqa: E402
from edgert.variants.prune import prune  # noqa: E402
from edgert.variants.runtime import VariantModel  # noqa: E402

RESNET = ROOT / "edgert" / "zoo" / "resnet.onnx"
RATIOS = [0.0, 0.25, 0.5, 0.75]


def tables_for(src: Path, work: Path, stem: str, emulated: tuple[float, ...], settings: lut.LutSettings,
               local: tuple[str, ...] = ("wall", "cpu")) -> dict[str, Path]:
    """Copies of ``src``: measured locally (unpinned) with each clock in ``local``, and on the
    emulated domain (wall clock)."""
    out = {}
    for clock in local:
        here = work / f"{stem}-local-{clock}.aio"
        shutil.copy(src, here)
        label = "local (unpinned)" if clock == "wall" else "local (unpinned), CPU time"
        lut.measure(here, [FrequencySetting(1.0, label=label)], dataclasses.replace(settings, clock=clock),
                    unit="none", progress=print)
        out[f"local-{clock}"] = here
    if emulated:
        emu = work / f"{stem}-emulated.aio"
        shutil.copy(src, emu)
        domain = EmulatedDomain(levels=emulated, cpus=1)
        lut.measure(emu, emulated_settings(domain), settings, unit="emulated fraction", emulated=True,
                    progress=print)
        out["emulated"] = emu
    return out


def prediction_rows(path: Path) -> list[dict[str, Any]]:
    table = lut.read(path)
    return [{"setting": table["labels"][j], "emulated": table["emulated"],
             "checks": len(table["checks"]), "blocks": len(table["blocks"]),
             "entries": sum(len(b["latency_ms"]) for b in table["blocks"]),
             "sum_of_blocks": table["prediction_error"][j]["sum_of_blocks"],
             "corrected_leave_one_out": table["prediction_error"][j]["corrected_leave_one_out"],
             "correction": table["correction"][j],
             "measured_ms": [c["measured_ms"][j] for c in table["checks"]],
             "predicted_raw_ms": [lut.predict(table, lut._decode_free(c["config"]), j, corrected=False)
                                  for c in table["checks"]]}
            for j in range(len(table["frequencies"]))]


def _interleaved_ms(vm: VariantModel, configs: list[C.Config], feeds: dict[str, np.ndarray],
                    settings: lut.LutSettings, rounds: int) -> list[float]:
    """Each configuration's time over ``rounds`` rounds taken in turn, by the method of the
    table's whole-network checks (``lut_run.interleaved``: the fastest window; at an emulated
    level, paired with the costliest configuration, ``lut_run.paired``)."""
    def run(c: C.Config) -> Any:
        def once() -> object:
            vm.select_config(c)  # cached: ~1 us
            return vm.run(feeds)
        return once

    timed = lut_run.interleaved([run(c) for c in configs], dataclasses.replace(settings, repeats=rounds))
    return [ms for ms, _ in timed]


def compare(path: Path, settings: lut.LutSettings, rounds: int, domain: EmulatedDomain | None,
            search_settings: search.SearchSettings) -> list[dict[str, Any]]:
    """At every setting of ``path``'s table, time the uniform levels and the searched Pareto
    configurations interleaved; then, at each budget T (every measured latency among them), set
    the most accurate uniform level measured within T against the most accurate Pareto
    configuration measured within T (OFA's comparison: the same measured latency budget)."""
    pareto = tables.read(path, tables.PARETO)
    if pareto is None or pareto.get("accuracy", "").split(":")[-1] != "_digits_memo":
        table = lut.read(path)
        pareto = search.search(path, latency_ms=1e9, frequency=table["frequencies"][0], accuracy=_digits_memo,
                               settings=search_settings)
    table = lut.read(path)
    rows = []
    with VariantModel(path, threads=settings.threads, config_budget=None, graph_builder=config_graph.build) as vm:
        meta = vm._file.meta
        feeds = {"x": np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)}
        levels = [C.of_level(meta, i) for i in range(len(meta["levels"]))]
        for j, f in enumerate(table["frequencies"]):
            front = [C.decode(meta, e["config"]) for e in pareto["pareto"][j]]
            configs = list(dict.fromkeys(levels + front))
            hold = domain.pinned(f) if domain is not None else _nothing()
            timing = (lut_run.at_setting(settings, FrequencySetting(f, period_ms=domain.period_for(f) / 1e3))
                      if domain is not None else settings)
            with hold:
                measured = dict(zip(configs, _interleaved_ms(vm, configs, feeds, timing, rounds)))
            acc = {}
            for c in configs:
                vm.select_config(c)
                acc[c] = _digits_memo(vm)
            for budget in sorted(set(measured.values())):
                uniform = [c for c in levels if measured[c] <= budget]
                searched = [c for c in front if measured[c] <= budget]
                best_u = max(uniform, key=lambda c: acc[c]) if uniform else None
                best_s = max(searched, key=lambda c: (acc[c], -measured[c])) if searched else None
                rows.append({
                    "setting": table["labels"][j], "emulated": table["emulated"], "budget_ms": budget,
                    "uniform": None if best_u is None else {
                        "ratio": meta["levels"][levels.index(best_u)]["ratio"], "accuracy": acc[best_u],
                        "measured_ms": measured[best_u]},
                    "searched": None if best_s is None else {
                        "config": best_s.encode(), "accuracy": acc[best_s], "measured_ms": measured[best_s],
                        "predicted_ms": lut.predict(table, best_s, j), "is_level": best_s in levels}})
    return rows


_SCORES: dict[str, float] = {}


def _digits_memo(vm: VariantModel) -> float:
    """``evaluate.digits``, remembered per configuration across the searches of this run (the
    accuracy does not depend on the table the search reads)."""
    key = vm.config.encode()
    if key not in _SCORES:
        _SCORES[key] = evaluate.digits(vm)
    return _SCORES[key]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def switch_times(path: Path, n: int = 2000) -> dict[str, float]:
    with VariantModel(path, threads=1, config_budget=None, graph_builder=config_graph.build) as vm:
        meta = vm._file.meta
        widths = C.candidate_widths(meta)
        a = C.make(meta, {g: ws[-1] for g, ws in widths.items()})
        b = C.make(meta, {g: ws[len(ws) // 2] for g, ws in widths.items()})
        feeds = {s.name: np.zeros([d if isinstance(d, int) else 1 for d in s.shape], np.float32) for s in vm.inputs}
        for c in (a, b):
            vm.select_config(c)
            vm.run(feeds)

        def timed(select: Any) -> list[int]:
            out = []
            for k in range(n):
                t0 = time.perf_counter_ns()
                select(k)
                out.append(time.perf_counter_ns() - t0)
            return out

        configs = timed(lambda k: vm.select_config(a if k % 2 else b))
        levels = timed(lambda k: vm.select_index(k % 2))
    return {"config_switch_p50_us": float(np.median(configs)) / 1e3,
            "config_switch_p99_us": float(np.percentile(configs, 99)) / 1e3,
            "config_switch_max_us": float(np.max(configs)) / 1e3,
            "level_switch_p50_us": float(np.median(levels)) / 1e3,
            "level_switch_p99_us": float(np.percentile(levels, 99)) / 1e3}


def merge(result: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Fold one run into the results file: its rows replace rows of the same model and setting,
    other rows (earlier runs, other parts) stay; each run's command and load are kept."""
    out = {"benchmark": "ofa", "schema": "edgert.bench.ofa/1", "device": device_facts.collect("local"),
           "runs": result.get("runs", []) + [{k: run[k] for k in ("command", "lut_settings", "load_average_before",
                                                                 "load_average_after", "seconds")}],
           "prediction": dict(result.get("prediction", {}))}
    for model, rows in run["prediction"].items():
        fresh = {r["setting"] for r in rows}
        out["prediction"][model] = [r for r in out["prediction"].get(model, []) if r["setting"] not in fresh] + rows
    if "switch" in run or "switch" in result:
        out["switch"] = run.get("switch", result.get("switch"))
    if "digits_compare" in run or "digits_compare" in result:  # rows of other files and settings stay
        def key(r: dict[str, Any]) -> tuple[str, str]:
            return r.get("model", "digits"), r["setting"]
        fresh = {key(r) for r in run.get("digits_compare", [])}
        out["digits_compare"] = [r for r in result.get("digits_compare", []) if key(r) not in fresh] \
            + run.get("digits_compare", [])
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Once-for-All from one file: per-layer widths from block latency tables", "",
             f"Machine: {result['device'].get('cpu_model') or 'local'}, {result['device'].get('cores')} cores "
             "shared with other jobs. Rows marked EMULATED ran on cgroup CPU-quota levels, not clock "
             "frequencies; 'CPU time' rows count the measuring thread's CPU time (the work without "
             "the waits other processes cause; no latency). Runs (1-minute load average before -> after):", ""]
    lines += [f"- `{r['command']}`: {r['load_average_before'][0]:.1f} -> {r['load_average_after'][0]:.1f}, "
              f"{r['seconds']:.0f} s" for r in result["runs"]]
    lines += ["",
             "## Block-table prediction of whole-network latency", "",
             "Error = |predicted - measured| / measured over the table's whole-network checks (uniform "
             "levels + random configurations). Raw: sum of block entries + one call's fixed cost. "
             "Corrected: a x sum + b fitted per setting, each check predicted by the line fitted to the others.", "",
             "| model | setting | blocks / entries | checks | raw p50 | raw p90 | corrected p50 | corrected p90 |",
             "|---|---|---|---|---|---|---|---|"]
    for model, rows in result["prediction"].items():
        for r in rows:
            label = f"EMULATED {r['setting']}" if r["emulated"] else r["setting"]
            s, c = r["sum_of_blocks"], r["corrected_leave_one_out"]
            lines.append(f"| {model} | {label} | {r['blocks']} / {r['entries']} | {r['checks']} | {s['p50']:.1%} | "
                         f"{s['p90']:.1%} | {c['p50']:.1%} | {c['p90']:.1%} |")
    title = "## Digits: searched configuration vs best uniform level at the same measured latency budget"
    lines += [] if "digits_compare" not in result else [
        "", title, "",
        "Per setting: the uniform levels and the searched Pareto configurations (held-out accuracy) timed "
        "interleaved; at each budget T (each measured latency among them) the most accurate uniform level "
        "measured within T against the most accurate searched configuration measured within T.", "",
        "| setting | budget ms | best uniform (ratio: acc @ ms) | searched (acc @ ms) | searched config | verdict |",
        "|---|---|---|---|---|---|"]
    for r in result.get("digits_compare", []):
        label = (f"EMULATED {r['setting']}" if r["emulated"] else r["setting"]) + f" ({r.get('model', 'digits')})"
        u, c = r["uniform"], r["searched"]
        cell_u = "none fits" if u is None else f"{u['ratio']:g}: {u['accuracy']:.4f} @ {u['measured_ms']:.4f}"
        cell_c = "none fits" if c is None else f"{c['accuracy']:.4f} @ {c['measured_ms']:.4f}"
        what = "-" if c is None else ("a uniform level" if c["is_level"] else f"`{c['config']}`")
        ua = -1.0 if u is None else u["accuracy"]
        ca = -1.0 if c is None else c["accuracy"]
        verdict = "better" if ca > ua else "equal" if ca == ua else "WORSE"
        lines.append(f"| {label} | {r['budget_ms']:.4f} | {cell_u} | {cell_c} | {what} | {verdict} |")
    s = result.get("switch")
    lines += [] if s is None else ["", "## Switching", "",
              f"Between two cached configurations of the zoo ResNet: p50 {s['config_switch_p50_us']:.2f} us, "
              f"p99 {s['config_switch_p99_us']:.2f} us, max {s['config_switch_max_us']:.1f} us; between two levels: "
              f"p50 {s['level_switch_p50_us']:.2f} us, p99 {s['level_switch_p99_us']:.2f} us."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=Path, help="digits-aio.aio from tools/train_digits_aio.py")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgert-ofa"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ofa.json")
    parser.add_argument("--digits-name", default="digits",
                        help="the digits file's name in the results (several files: one run each)")
    parser.add_argument("--emulated", default="1.0,0.5,0.25", help="emulated levels (digits)")
    parser.add_argument("--resnet-emulated", default="1.0,0.5", help="emulated levels (zoo ResNet)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--part", choices=("all", "digits", "resnet", "compare"), default="all",
                        help="run one part; the other's results already in --out are kept")
    parser.add_argument("--local-clocks", default="wall,cpu",
                        help="local tables to measure: wall (latency) and/or cpu (thread CPU time); '' for none")
    parser.add_argument("--window-ms", type=float, default=40.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checks", type=int, default=8)
    parser.add_argument("--population", type=int, default=24)
    parser.add_argument("--generations", type=int, default=8)
    args = parser.parse_args()
    if args.part in ("all", "digits") and args.digits is None:
        parser.error("--digits FILE is needed (tools/train_digits_aio.py writes digits-aio.aio)")
    args.work.mkdir(parents=True, exist_ok=True)
    settings = lut.LutSettings(window_ms=args.window_ms, repeats=args.repeats, checks=args.checks)
    levels = tuple(float(x) for x in args.emulated.split(",") if x)
    clocks = tuple(c for c in args.local_clocks.split(",") if c)
    run = {"command": " ".join(["python benchmarks/ofa.py", *sys.argv[1:]]), "lut_settings": settings.__dict__,
           "load_average_before": os.getloadavg(), "prediction": {}}
    t0 = time.time()
    if args.part in ("all", "digits"):
        digits = tables_for(args.digits, args.work, "digits", levels, settings, clocks)
        run["prediction"][args.digits_name] = [r for p in digits.values() for r in prediction_rows(p)]
        search_settings = search.SearchSettings(population=args.population, generations=args.generations)
        run["digits_compare"] = []
        for clock in clocks:
            run["digits_compare"] += compare(digits[f"local-{clock}"], dataclasses.replace(settings, clock=clock),
                                             args.rounds, None, search_settings)
        if "emulated" in digits:
            domain = EmulatedDomain(levels=levels, cpus=1)
            run["digits_compare"] += compare(digits["emulated"], settings, args.rounds, domain, search_settings)
        for row in run["digits_compare"]:
            row["model"] = args.digits_name
    if args.part == "compare":  # only the comparison, on the digits tables already in --work
        found = {p.stem.split("-", 1)[1]: p for p in sorted(args.work.glob("digits-*.aio"))}
        run["digits_compare"] = []
        for key, path in found.items():
            clock = "cpu" if key == "local-cpu" else "wall"
            domain = EmulatedDomain(levels=tuple(lut.read(path)["frequencies"]), cpus=1) if key == "emulated" else None
            run["digits_compare"] += compare(path, dataclasses.replace(settings, clock=clock), args.rounds, domain,
                                             search.SearchSettings(population=args.population,
                                                                   generations=args.generations))
    if args.part in ("all", "resnet"):
        resnet_aio = args.work / "resnet.aio"
        prune(RESNET, RATIOS, resnet_aio)
        resnet_levels = tuple(float(x) for x in args.resnet_emulated.split(",") if x)
        resnet = tables_for(resnet_aio, args.work, "resnet", resnet_levels, settings, local=clocks)
        run["prediction"]["zoo:resnet"] = [r for p in resnet.values() for r in prediction_rows(p)]
        run["switch"] = switch_times(resnet_aio)
    run["load_average_after"] = os.getloadavg()
    run["seconds"] = round(time.time() - t0, 1)
    result = merge(json.loads(args.out.read_text()) if args.part != "all" and args.out.exists() else {}, run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = markdown(result)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
