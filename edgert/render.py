"""Human-readable summaries of result files (the machine-readable detail is the JSON)."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


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
    table.add_column("latency (ms)")
    for r in results:
        b = r["backend"]
        table.add_column(f"{b['name']} {b['version']}", justify="right")
    base = results[0]["latency_ms"]["p50"]
    rows = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("mean", "mean"), ("std", "std"),
            ("min", "min"), ("max", "max")]
    for label, key in rows:
        table.add_row(label, *(f"{r['latency_ms'][key]:.3f}" for r in results))
    table.add_row("95% CI of p50", *(f"{r['latency_ms']['ci95'][0]:.3f}..{r['latency_ms']['ci95'][1]:.3f}"
                                     for r in results))
    table.add_row("runs", *(str(r["latency_ms"]["n"]) for r in results))
    table.add_row(f"p50 vs {results[0]['backend']['name']}",
                  *(f"{r['latency_ms']['p50'] / base:.2f}x" for r in results))
    if len(results) > 1:
        table.add_row("max abs diff", "-", *(f"{r['agreement'].get('max_abs', float('nan')):.2e}"
                                              for r in results[1:]))
    console.print(table)
    for r in results:
        if r.get("paths"):
            dynamic_breakdown(r, console)
    for r in results:
        for w in r["warnings"]:
            console.print(f"[yellow]warning[/yellow] ({r['backend']['name']}): {w}")


def dynamic_breakdown(r: dict[str, Any], console: Console) -> None:
    """Latency per control-flow path and per segment call, and the host program's own overhead."""
    table = Table(title=f"dynamic bundle: host overhead p50 {r['host_overhead_us']['p50']:.1f} us per run")
    table.add_column("path or segment")
    table.add_column("runs or calls", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    for name, block in list(r["paths"].items()) + list(r["segments_ms"].items()):
        table.add_row(name, str(block["n"]), f"{block['p50']:.3f}", f"{block['p99']:.3f}")
    console.print(table)
