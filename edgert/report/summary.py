"""The answer first: per model, every measured configuration ranked by median latency.

A configuration is what a person would choose between — engine, device, pruning level, clock
setting — so one bench file gives one, a sweep one per measured point and a calibration one
per level and setting. Each is named from its contents, never from the file it came from.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgert import power_status
from edgert.report import plots
from edgert.report.calibration import measured_energy
from edgert.report.model import Loaded, Plot
from edgert.report.sweep import axis
from edgert.result import is_emulated
from edgert.units import duration_ms, unit_for

LOG_SPAN = 10.0  # a plot whose values span more than this factor gets a log axis


@dataclasses.dataclass(frozen=True)
class Config:
    """One row of the summary."""

    model: str
    backend: str
    device: str
    level: str
    frequency: str
    p50_ms: float
    p99_ms: float | None
    ci95: tuple[float, float] | None
    energy_mj: float | None
    energy_note: str  # why there is no energy: "not measured", "fixture, not measured", ...
    throughput_ips: float | None
    emulated: bool
    kind: str  # bench | sweep | calibration

    @property
    def name(self) -> str:
        return " · ".join(p for p in (self.backend, self.device, self.level, self.frequency) if p != "—")


def model_name(data: dict[str, Any], fallback: Path) -> str:
    path = (data.get("model") or {}).get("path")
    return Path(str(path)).stem if path else fallback.stem


def _host(data: dict[str, Any]) -> str:
    device = data.get("device") or {}
    return str(device.get("hostname") or "?") + (" (emulated)" if is_emulated(data) else "")


def _backend(data: dict[str, Any], default: str = "?") -> str:
    backend = data.get("backend") or {}
    return str(backend.get("name") or default)


def _setting(setting: dict[str, Any]) -> str:
    domain, unit = str(setting.get("domain", "?")), setting.get("unit")
    value = setting.get("readback") if setting.get("readback") is not None else setting.get("requested")
    scale, label = axis(domain, unit)
    if (unit or ("share" if domain == "emulated" else "")) == "share":
        return f"emulated {float(value):g}x CPU"
    return f"{domain} {float(value) * scale:g} MHz" if "MHz" in label else f"{domain} {value}"


def _bench(item: Loaded) -> list[Config]:
    d = item.data
    scenario = d.get("scenario") or {"name": "single-stream"}
    backend = _backend(d)
    if scenario["name"] != "single-stream":
        backend += f" ({scenario['name']}" + (f" {scenario['rate_qps']:g} QPS" if scenario.get("rate_qps") else "") \
            + (f" x{scenario['concurrency']}" if scenario.get("concurrency", 1) > 1 else "") + ")"
    threads = (d.get("settings") or {}).get("threads")
    lat = d["latency_ms"]
    return [Config(model_name(d, item.path), backend + (f" {threads} thread{'s' if threads > 1 else ''}" if threads else ""), _host(d), "—", "—",
                   lat["p50"], lat.get("p99"), tuple(lat["ci95"]) if lat.get("ci95") else None, None,
                   "no power source", d.get("throughput_ips"), is_emulated(d), "bench")]


def _sweep(item: Loaded) -> list[Config]:
    d = item.data
    out = []
    for p in d.get("points") or []:
        if p.get("error") or not p.get("latency_ms"):
            continue
        lat = p["latency_ms"]
        unmeasured = power_status.file_label(d) or (power_status.label(p) if "power_status" in p else "")
        energy = None if unmeasured else p.get("energy_per_inference_mj")
        note = unmeasured or (power_status.label(p) if energy is None else "")
        runs, window = p.get("runs"), p.get("duration_s")
        setting = _setting(p["setting"]) + (" (fixture clock)" if d.get("fixture") else "")
        out.append(Config(model_name(d, item.path), _backend(d, "ort"), _host(d), "—", setting,
                          lat["p50"], lat.get("p99"), tuple(lat["ci95"]) if lat.get("ci95") else None,
                          energy, note or "not measured", runs / window if runs and window else None,
                          bool(p.get("emulated")) or is_emulated(d), "sweep"))
    return out


def _calibration(item: Loaded) -> list[Config]:
    d = item.data
    unit = d.get("frequency_unit", "kHz")
    scale, label = axis("cpu", unit)
    power = d.get("power") or {}
    energy = measured_energy(d)
    note = "not measured" if not power else power_status.label({"power_status": power.get("status")}) \
        or "not measured"
    out = []
    for i, level in enumerate(d["levels"]):
        for j, f in enumerate(d["frequencies"]):
            freq = f"emulated {float(f):g}x CPU" if unit == "share" else f"{float(f) * scale:g} MHz"
            freq += " (fixture clock)" if d.get("fixture") else ""
            out.append(Config(model_name(d, item.path), "ort (All-in-One)", _host(d),
                              f"{float(level['ratio']):.0%} pruned", freq, float(d["latency_ms"][i][j]), None,
                              None, float(energy[i][j]) if energy else None, "" if energy else note, None,
                              is_emulated(d) or unit == "share", "calibration"))
    return out


BUILDERS = {"bench": _bench, "sweep": _sweep, "calibration": _calibration}


def configurations(items: list[tuple[str, Loaded]]) -> dict[str, list[Config]]:
    """``{model: configurations in file order}`` from (kind, file) pairs."""
    out: dict[str, list[Config]] = {}
    for kind, item in items:
        for config in BUILDERS[kind](item):
            out.setdefault(config.model, []).append(config)
    return out


def baseline(configs: list[Config]) -> Config:
    """The reference for "x baseline": the first ONNX Runtime bench, else the first configuration."""
    return next((c for c in configs if c.kind == "bench" and c.backend.startswith("ort")), configs[0])


@dataclasses.dataclass(frozen=True)
class Ranked:
    configs: list[Config]  # fastest first
    base: Config
    unit: str
    scale: float
    least_energy: Config | None
    most_throughput: Config | None


def rank(configs: list[Config]) -> Ranked:
    ordered = sorted(configs, key=lambda c: c.p50_ms)
    unit, scale = unit_for([c.p50_ms for c in configs])
    with_energy = [c for c in configs if c.energy_mj is not None]
    with_rate = [c for c in configs if c.throughput_ips is not None]
    return Ranked(ordered, baseline(configs), unit, scale,
                  min(with_energy, key=lambda c: c.energy_mj) if with_energy else None,  # type: ignore[arg-type,return-value]
                  max(with_rate, key=lambda c: c.throughput_ips) if with_rate else None)  # type: ignore[arg-type,return-value]


def plot(model: str, ranked: Ranked, idx: int) -> Plot:
    """p50 bars (95% CI) with p99 ticks, fastest at the top; log axis when values span >10x."""
    configs = ranked.configs
    values = [c.p50_ms for c in configs] + [c.p99_ms for c in configs if c.p99_ms]
    log = max(values) / max(min(values), 1e-12) > LOG_SPAN
    fig, axes = plots.figure(9.5, 0.9 + 0.36 * len(configs))
    ax = axes[0][0]
    y = list(range(len(configs)))
    s = ranked.scale
    lo = [(c.p50_ms - c.ci95[0]) * s if c.ci95 else 0.0 for c in configs]
    hi = [(c.ci95[1] - c.p50_ms) * s if c.ci95 else 0.0 for c in configs]
    colors = [plots.color(["bench", "sweep", "calibration"].index(c.kind)) for c in configs]
    ax.barh(y, [c.p50_ms * s for c in configs], color=colors, alpha=0.85, xerr=[lo, hi], capsize=3,
            error_kw={"elinewidth": 1, "ecolor": plots.P50_COLOR})
    p99 = [(yi, c.p99_ms * s) for yi, c in zip(y, configs) if c.p99_ms]
    if p99:
        ax.scatter([v for _, v in p99], [yi for yi, _ in p99], marker="|", s=160, color=plots.P99_COLOR,
                   linewidths=2, zorder=3)  # no legend box over the bars: the axis label says it
    ax.set_yticks(y, [c.name for c in configs], fontsize=8)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    if log:
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel(f"latency ({ranked.unit}{', log scale' if log else ''}): bar p50 with 95% CI, red tick p99")
    return Plot(f"summary-{idx}", f"{model}: median latency per configuration, fastest first "
                f"(blue: bench, orange: clock sweep point, green: All-in-One level){'; log axis: the values span more than 10x' if log else ''}.",
                plots.to_svg(fig), "image/svg+xml")


def cells(ranked: Ranked) -> tuple[tuple[str, ...], list[tuple[Any, ...]], list[str]]:
    """Header, rows and a CSS class per row (``best`` for the fastest) of the ranked table; each
    latency in the unit that suits it (a 0.6 ms level beside a 1 s engine)."""
    fastest = ranked.configs[0].p50_ms
    header = ("#", "configuration", "p50", "p99", "× fastest",
              "× baseline", "energy / inference", "throughput", "notes")
    rows, classes = [], []
    for n, c in enumerate(ranked.configs, 1):
        marks = []
        if n == 1:
            marks.append("★ fastest")
        if c is ranked.least_energy:
            marks.append("★ least energy")
        if c is ranked.most_throughput and len(ranked.configs) > 1:
            marks.append("★ most throughput")
        if c is ranked.base:
            marks.append("baseline")
        if c.emulated:
            marks.append("EMULATED")
        energy = f"{c.energy_mj:.4g} mJ" if c.energy_mj is not None else c.energy_note
        rows.append((n, c.name, duration_ms(c.p50_ms), duration_ms(c.p99_ms),  # each in its own unit
                     f"{c.p50_ms / fastest:.2f}×", f"{c.p50_ms / ranked.base.p50_ms:.2f}×", energy,
                     "—" if c.throughput_ips is None else f"{c.throughput_ips:.4g}/s", ", ".join(marks)))
        classes.append("best" if n == 1 else "emulated" if c.emulated else "")
    return header, rows, classes
