"""Human-readable summaries of result files (the machine-readable detail is the JSON)."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from edgert.stats import CI_METHOD
from edgert.units import duration_ms, rate, size_bytes


def _agreement(agreement: dict[str, Any]) -> str:
    """The cell of one engine's agreement with the first: its max abs diff, or why there is none."""
    if "shape_mismatch" in agreement:
        ref, out = agreement["shape_mismatch"]
        return f"shapes differ: {ref} vs {out}"
    return f"{agreement['max_abs']:.2e}" if "max_abs" in agreement else "not compared"


def side_by_side(results: list[dict[str, Any]], console: Console) -> None:
    """One column per backend: percentiles, CI, runs and the ratio against the first backend."""
    if not results:
        return
    model = results[0]["model"]
    device = results[0]["device"]
    title = (f"{model['path']} on {device['hostname']} ({device['arch']}, {device['cpu_model']}, "
             f"transport {device['transport']})")
    if any(r.get("emulated") for r in results):
        title += " [EMULATED]"
    table = Table(title=title)
    table.add_column("latency")
    for r in results:
        b = r["backend"]
        table.add_column(f"{b['name']} {b['version']}", justify="right")
    base = results[0]["latency_ms"]["p50"]
    for key in ("p50", "p90", "p99", "mean", "std", "min", "max"):
        table.add_row(key, *(duration_ms(r["latency_ms"][key]) for r in results))
    table.add_row(f"95% CI of p50 ({CI_METHOD})",
                  *(f"{duration_ms(r['latency_ms']['ci95'][0])}..{duration_ms(r['latency_ms']['ci95'][1])}"
                    for r in results))
    table.add_row("runs", *(str(r["latency_ms"]["n"]) for r in results))
    table.add_row(f"p50 vs {results[0]['backend']['name']}",
                  *(f"{r['latency_ms']['p50'] / base:.2f}x" for r in results))
    scenario = results[0].get("scenario") or {"name": "single-stream"}
    table.add_row("scenario", *(_scenario(r.get("scenario") or scenario) for r in results))
    table.add_row("throughput", *(rate(r.get("throughput_ips")) + _samples(r.get("scenario")) for r in results))
    table.add_row("compile (host)", *(duration_ms(r.get("compile_ms")) for r in results))
    table.add_row("load", *(duration_ms(r.get("load_ms")) for r in results))
    table.add_row("first inference", *(duration_ms(r.get("first_inference_ms")) for r in results))
    table.add_row("peak memory", *(size_bytes(r.get("peak_rss_bytes")) for r in results))
    table.add_row("load avg before..after", *(_loadavg(r.get("run_metadata")) for r in results))
    if any((r.get("run_metadata") or {}).get("before", {}).get("governors") for r in results):
        table.add_row("governor, clock", *(_clocks(r.get("run_metadata")) for r in results))
    if any((r.get("run_metadata") or {}).get("before", {}).get("temperatures_c") for r in results):
        table.add_row("max temperature", *(_temps(r.get("run_metadata")) for r in results))
    if len(results) > 1:
        table.add_row("max abs diff", "-", *(_agreement(r.get("agreement") or {}) for r in results[1:]))
    console.print(table)
    for r in results:
        if r.get("paths") or r.get("cases_ms"):
            dynamic_breakdown(r, console)
    for r in results:
        for w in r["warnings"]:
            console.print(f"[yellow]warning[/yellow] ({r['backend']['name']}): {w}")


def dynamic_breakdown(r: dict[str, Any], console: Console) -> None:
    """Latency per control-flow path and per segment call, and the host program's own overhead."""
    overhead = r.get("host_overhead_us")
    table = Table(title=f"dynamic bundle: host overhead p50 {overhead['p50']:.1f} us per run" if overhead
                  else f"{r['backend']['name']}: latency per input case")
    table.add_column("case, path or segment")
    table.add_column("runs or calls", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p99", justify="right")
    blocks = [(f"input {k}", v) for k, v in (r.get("cases_ms") or {}).items()] + \
        list((r.get("paths") or {}).items()) + list((r.get("segments_ms") or {}).items())
    for name, block in blocks:
        table.add_row(name, str(block["n"]), duration_ms(block["p50"]), duration_ms(block["p99"]))
    console.print(table)


def _scenario(s: dict[str, Any]) -> str:
    extra = [f"{s['rate_qps']:g} QPS offered" if s.get("rate_qps") else "",
             f"x{s['concurrency']}" if s.get("concurrency", 1) > 1 else ""]
    return " ".join([s["name"], *filter(None, extra)])


def _loadavg(meta: dict[str, Any] | None) -> str:
    if not meta or not meta["before"].get("loadavg"):
        return "—"
    return f"{meta['before']['loadavg'][0]:g}..{meta['after']['loadavg'][0]:g}"


def _clocks(meta: dict[str, Any] | None) -> str:
    if not meta:
        return "—"
    before = meta["before"]
    return ", ".join(f"{p} {g} {(before['cpu_khz'].get(p) or 0) / 1000:g} MHz"
                     for p, g in before["governors"].items()) or "—"


def _temps(meta: dict[str, Any] | None) -> str:
    temps = (meta or {}).get("after", {}).get("temperatures_c") or {}
    return f"{max(temps.values()):.0f} °C" if temps else "—"


def _samples(s: dict[str, Any] | None) -> str:
    if not s or not s.get("samples_per_query"):
        return ""
    return f" ({s['samples_per_s']:.4g} samples/s, batch {s['samples_per_query']})"
