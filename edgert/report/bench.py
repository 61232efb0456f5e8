"""``edgert.result/2`` files (and /1, upgraded on load): latency distributions, p50 comparison, per-segment/per-path bars."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgert import result
from edgert.report import plots
from edgert.stats import CI_METHOD
from edgert.units import duration_ms, size_bytes
from edgert.report.model import Built, Loaded, Note, Plot, Section, Table, file_warnings

SCHEMA = result.SCHEMA


def labels(items: list[Loaded]) -> list[str]:
    """Short names that tell the configurations apart: only the facts that differ are shown."""
    def facts(d: dict[str, Any]) -> dict[str, str]:
        threads = (d.get("settings") or {}).get("threads")
        return {"model": Path(str((d.get("model") or {}).get("path", "?"))).name,
                "backend": str((d.get("backend") or {}).get("name", "?")),
                "host": str((d.get("device") or {}).get("hostname", "?")),
                "threads": f"{threads} threads" if threads else "default threads"}

    all_facts = [facts(i.data) for i in items]
    varying = [k for k in ("model", "backend", "host", "threads")
               if len({f[k] for f in all_facts}) > 1] or ["backend"]
    out = [" · ".join(f[k] for k in varying) for f in all_facts]
    if len(set(out)) < len(out):  # still ambiguous: the full names from the contents
        out = [i.label for i in items]
    return out


def _distribution(items: list[Loaded], names: list[str]) -> Plot:
    """Per configuration: a histogram with p50/p99 marked, and latency in run order (drift)."""
    fig, axes = plots.figure(11, 1.0 + 1.9 * len(items), rows=len(items), cols=2,
                             width_ratios=[3, 2])
    p99s = [i.data["latency_ms"]["p99"] for i in items]
    share = max(p99s) / max(min(p99s), 1e-12) < 20  # one x scale unless it would hide a config
    top = max(max(i.data["samples_ms"]) for i in items)
    for row, (item, name) in enumerate(zip(items, names)):
        samples = np.asarray(item.data["samples_ms"], dtype=np.float64)
        lat = item.data["latency_ms"]
        hist, order = axes[row]
        hist.hist(samples, bins=min(60, max(10, samples.size // 5)), color=plots.color(row),
                  alpha=0.75)
        for key, col, style in (("p50", plots.P50_COLOR, "-"), ("p99", plots.P99_COLOR, "--")):
            hist.axvline(lat[key], color=col, linestyle=style, linewidth=1.6,
                         label=f"{key} {lat[key]:.3g} ms")
        hist.set_title(f"{name}  (n={samples.size})", loc="left")
        hist.set_ylabel("runs")
        hist.legend(loc="upper right")
        order.plot(np.arange(samples.size), samples, ".", markersize=2.5, color=plots.color(row))
        order.axhline(lat["p50"], color=plots.P50_COLOR, linewidth=1)
        order.set_ylabel("ms")
        order.set_title("in run order", loc="left")
        if share:
            hist.set_xlim(0, top * 1.03)
            order.set_ylim(0, top * 1.03)
        else:
            hist.set_xlim(left=0)
            order.set_ylim(bottom=0)
    axes[-1][0].set_xlabel("latency (ms)")
    axes[-1][1].set_xlabel("run")
    return Plot("latency-distribution", "Latency per run: distribution with p50 (solid) and "
                "p99 (dashed), and the same runs in order (drift and throttling show as slopes "
                "or steps).", plots.to_png(fig))


def _table(items: list[Loaded], names: list[str]) -> Table:
    rows = []
    for item, name in zip(items, names):
        d = item.data
        lat = d["latency_ms"]
        lo, hi = lat.get("ci95") or (float("nan"), float("nan"))
        scenario = (d.get("scenario") or {}).get("name", "single-stream")
        rate = d.get("throughput_ips")
        rows.append((name, scenario, lat["n"], lat["p50"], f"{lo:.4g}..{hi:.4g}", lat["p90"], lat["p99"],
                     lat["max"], "—" if rate is None else f"{rate:.4g}/s", duration_ms(d.get("compile_ms")),
                     duration_ms(d.get("load_ms")), duration_ms(d.get("first_inference_ms")),
                     size_bytes(d.get("peak_rss_bytes")), d.get("stop_reason", "—"),
                     len(d.get("warnings") or [])))
    return Table(("configuration", "scenario", "runs", "p50 ms", f"95% CI of p50 ({CI_METHOD})", "p90 ms",
                  "p99 ms", "max ms", "throughput", "compile", "load", "first inference", "peak memory",
                  "stopped by", "warnings"), tuple(rows))


def _breakdown(item: Loaded, name: str, idx: int) -> Plot | None:
    """A dynamic bundle's per-segment and per-path latency, when the file carries them."""
    parts = [(key, title) for key, title in (("segments_ms", "per segment"), ("paths", "per path"))
             if item.data.get(key)]
    if not parts:
        return None
    height = max(len(item.data[key]) for key, _ in parts)
    fig, axes = plots.figure(11, 1.3 + 0.5 * height, cols=len(parts))
    for ax, (key, title) in zip(axes[0], parts):
        block = item.data[key]
        plots.summary_bars(ax, list(block), list(block.values()))
        ax.set_title(f"{name}: {title}", loc="left")
    return Plot(f"breakdown-{idx}", f"{name}: median latency of each static segment and of each "
                "control-flow path (95% CI; red tick p99).", plots.to_png(fig))


def build(items: list[Loaded]) -> Built:
    """One section for all bench files together, so configurations sit side by side."""
    names = labels(items)
    section = Section("Bench details", [_table(items, names), _distribution(items, names)])
    for idx, (item, name) in enumerate(zip(items, names)):
        plot = _breakdown(item, name, idx)
        if plot is not None:
            section.blocks.append(plot)
    agreement = [(name, i.data["agreement"]) for i, name in zip(items, names)
                 if i.data.get("agreement")]
    if agreement:
        section.blocks.append(Note("Output agreement against the first backend on the same "
                                   "inputs: " + "; ".join(
                                       f"{n}: max abs {a.get('max_abs', float('nan')):.2e} vs "
                                       f"{a.get('against')}" for n, a in agreement)))
    warnings = [w for i in items for w in file_warnings(i)]
    return Built([section], warnings)
