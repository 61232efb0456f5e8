"""``edgert.sweep/1`` files: latency, power and energy per inference against clock setting."""
from __future__ import annotations

from typing import Any

from edgert import power_status
from edgert.errors import UsageError
from edgert.report import plots
from edgert.report.model import Built, Finding, Loaded, Note, Plot, Section, Table, file_warnings

SCHEMA = "edgert.sweep/1"


TO_MHZ = {"Hz": 1e-6, "kHz": 1e-3, "MHz": 1.0, "GHz": 1e3}  # frequencies are shown in MHz


def axis(domain: str, unit: str | None) -> tuple[float, str]:
    """Scale and label for a domain's settings: CPU policies are in kHz (sysfs), plotted in MHz."""
    unit = unit or ("kHz" if domain.startswith("cpu") else "share" if domain == "emulated" else "")
    if unit in TO_MHZ:
        return TO_MHZ[unit], f"{domain} frequency (MHz)"
    if unit == "share":
        return 1.0, "emulated speed (share of full CPU)"
    return 1.0, f"{domain} setting{f' ({unit})' if unit else ''}"


def _x(point: dict[str, Any]) -> float:
    s = point["setting"]
    return float(s["readback"] if s.get("readback") is not None else s["requested"])


def _domain_plot(label: str, domain: str, points: list[dict[str, Any]], idx: int, *,
                 fixture: bool, power_shown: bool) -> Plot:
    scale, xlabel = axis(domain, points[0]["setting"].get("unit"))
    xlabel += " — fixture clocks, not set" if fixture else ""  # the model ran at the host's own clock
    points = sorted(points, key=_x)
    x = [_x(p) * scale for p in points]
    has_power = power_shown and any(p.get("power_w") is not None for p in points)
    fig, axes = plots.figure(11 if has_power else 5.5, 3.4, cols=3 if has_power else 1)
    lat = axes[0][0]
    p50 = [p["latency_ms"]["p50"] for p in points]
    err = [[p["latency_ms"]["p50"] - p["latency_ms"]["ci95"][0] for p in points],
           [p["latency_ms"]["ci95"][1] - p["latency_ms"]["p50"] for p in points]]
    lat.errorbar(x, p50, yerr=err, marker="o", capsize=4, color=plots.color(0), label="p50 (95% CI)")
    lat.plot(x, [p["latency_ms"]["p99"] for p in points], "--", marker="v",
             color=plots.P99_COLOR, label="p99")
    for xi, yi, p in zip(x, p50, points):
        if p.get("emulated"):
            lat.annotate("emulated", (xi, yi), xytext=(5, 5), textcoords="offset points",
                         color=plots.P99_COLOR, fontsize=9)
    lat.set(xlabel=xlabel, ylabel="latency (ms)", title="latency")
    lat.set_ylim(bottom=0)
    lat.legend()
    if has_power:
        measured = [(xi, p) for xi, p in zip(x, points) if p.get("power_w") is not None]
        power, energy = axes[0][1], axes[0][2]
        power.plot([m[0] for m in measured], [m[1]["power_w"] for m in measured], marker="o",
                   color=plots.color(1))
        power.set(xlabel=xlabel, ylabel="power (W)", title="average power while running")
        power.set_ylim(bottom=0)
        for key, name, col in (("energy_per_inference_mj", "total", plots.color(2)),
                               ("energy_above_idle_mj", "above idle", plots.color(4))):
            pts = [(xi, p[key]) for xi, p in measured if p.get(key) is not None]
            if pts:
                energy.plot([a for a, _ in pts], [b for _, b in pts], marker="o", color=col,
                            label=name)
        energy.set(xlabel=xlabel, ylabel="energy per inference (mJ)", title="energy per inference")
        energy.set_ylim(bottom=0)
        energy.legend()
    fig.suptitle(f"{label}: {domain}", x=0.01, ha="left", fontweight="bold")
    return Plot(f"sweep-{idx}-{domain}", f"{label}, domain {domain}: latency (p50 with 95% CI, "
                "p99 dashed)" + (", average power and energy per inference" if has_power else "")
                + " against the clock setting as read back.", plots.to_png(fig))


def _fmt(value: Any, digits: str = ".4g") -> Any:
    return "—" if value is None else format(value, digits) if isinstance(value, float) else value


def _clock(value: Any, unit: str, mark: str) -> str:
    return "—" if value is None else f"{value} {unit}{mark}"


def _table(points: list[dict[str, Any]], fixture: bool, file_word: str) -> Table:
    """One row per point; a clock carries its unit (kHz for cpufreq, Hz for devfreq), and a
    fixture tree's read-back clocks and temperatures say so."""
    rows = []
    mark = " (fixture)" if fixture else ""
    for p in points:
        s = p["setting"]
        unit = s.get("unit") or ("kHz" if str(s["domain"]).startswith(("cpu", "policy")) else
                                 "share" if s["domain"] == "emulated" else "Hz")
        temps = ", ".join(f"{k} {v:.0f}°C" for k, v in (p.get("temperatures_c") or {}).items())
        unmeasured = file_word or power_status.label(p)
        rows.append((s["domain"], _clock(s.get("requested"), unit, ""), _clock(s.get("readback"), unit, mark),
                     p["latency_ms"]["p50"],
                     p["latency_ms"]["p99"], unmeasured or _fmt(p.get("power_w")),
                     unmeasured or _fmt(p.get("energy_per_inference_mj")),
                     unmeasured or _fmt(p.get("energy_above_idle_mj")),
                     (temps + mark) if temps else "—", "yes" if p.get("emulated") else "no"))
    return Table(("domain", "requested", "read back", "p50 ms", "p99 ms", "power W",
                  "energy/inf mJ", "above idle mJ", "temperatures", "emulated"), tuple(rows))


def _warnings(item: Loaded) -> list[Finding]:
    out = file_warnings(item)
    points = item.data["points"]
    emulated = [p for p in points if p.get("emulated")]
    if emulated:
        out.insert(0, Finding(item.label, f"{len(emulated)} of {len(points)} sweep points are "
                                          "emulated: their latency is not a hardware measurement",
                              emulated=True))
    for p in points:
        s = p["setting"]
        req, got = s.get("requested"), s.get("readback")
        if p.get("error"):
            out.append(Finding(item.label, f"{s['domain']} = {req}: not measured: {p['error']}"))
        elif req and got is not None and abs(got - req) > 0.01 * abs(req):
            out.append(Finding(item.label, f"{s['domain']}: asked for {req}, read back {got}: the "
                                           "clock did not take (governor, thermal or power cap?)"))
    return out


def build(items: list[Loaded]) -> Built:
    built = Built()
    for idx, item in enumerate(items):
        points = item.data.get("points")
        if not points:
            raise UsageError(f"{item.path}: a sweep file needs a non-empty 'points' list")
        measured = [p for p in points if not p.get("error")]  # errors are listed as warnings
        if not measured:
            raise UsageError(f"{item.path}: no point of this sweep was measured")
        domains: dict[str, list[dict[str, Any]]] = {}
        for p in measured:
            domains.setdefault(str(p["setting"]["domain"]), []).append(p)
        section = Section(f"Clock sweep — {item.label}")
        file_word = power_status.file_label(item.data)
        fixture = bool(item.data.get("fixture"))
        section.blocks += [_domain_plot(item.label, d, pts, idx, fixture=fixture, power_shown=not file_word)
                           for d, pts in domains.items()]
        power = item.data.get("power") or {}
        if power and not power.get("measured"):
            section.blocks.append(Note(f"Power and energy: not measured ({power.get('status')}). "
                                       f"{power.get('reason', '')}"))
        elif not any(p.get("power_w") is not None for p in measured):
            section.blocks.append(Note("No power was measured in this sweep."))
        section.blocks.append(_table(measured, fixture, file_word))
        built.sections.append(section)
        built.warnings += _warnings(item)
    return built
