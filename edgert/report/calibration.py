"""``edgert.calibration/1`` files: All-in-One levels x frequencies, and the accuracy-latency front."""
from __future__ import annotations

from typing import Any

from edgert.errors import UsageError
from edgert.report import plots
from edgert.report.model import Built, Loaded, Plot, Section, Table, file_warnings
from edgert.report.sweep import axis

SCHEMA = "edgert.calibration/1"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(latency, accuracy) pairs no other pair beats on both; sorted by latency."""
    front: list[tuple[float, float]] = []
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((lat, acc))
    return front


def _check(item: Loaded) -> tuple[list[dict[str, Any]], list[float], list[list[float]]]:
    d = item.data
    levels, freqs, lat = d.get("levels") or [], d.get("frequencies") or [], d.get("latency_ms")
    if not levels or not freqs or not isinstance(lat, list) or len(lat) != len(levels) \
            or any(len(row) != len(freqs) for row in lat):
        raise UsageError(f"{item.path}: a calibration file needs 'levels', 'frequencies' and "
                         "'latency_ms' as a levels x frequencies table")
    return levels, [float(f) for f in freqs], lat


def _freq_axis(item: Loaded) -> tuple[float, str, str]:
    """Scale, axis label and short unit for the frequencies (kHz unless ``frequency_unit``)."""
    scale, label = axis("cpu", item.data.get("frequency_unit", "kHz"))
    return scale, label.replace("cpu ", ""), label.split("(")[-1].rstrip(")")


def _plot(item: Loaded, idx: int) -> Plot:
    levels, freqs, lat = _check(item)
    scale, xlabel, unit = _freq_axis(item)
    with_accuracy = all(lv.get("accuracy") is not None for lv in levels)
    fig, axes = plots.figure(11, 4.0, cols=2 if with_accuracy else 1)
    left = axes[0][0]
    for i, (level, row) in enumerate(zip(levels, lat)):
        acc = f" (accuracy {level['accuracy']:.3g})" if with_accuracy else ""
        left.plot([f * scale for f in freqs], row, marker="o", color=plots.color(i),
                  label=f"ratio {level['ratio']:g}{acc}")
    left.set(xlabel=xlabel, ylabel="latency (ms)", title="latency per pruning level")
    left.set_ylim(bottom=0)
    left.legend()
    fig.suptitle(item.label, x=0.01, ha="left", fontweight="bold")
    if not with_accuracy:
        return Plot(f"calibration-{idx}", f"{item.label}: latency of each All-in-One level against "
                    "frequency (no accuracy recorded for the levels, so no Pareto front).",
                    plots.to_png(fig))
    right = axes[0][1]
    for j, f in enumerate(freqs):
        pts = [(lat[i][j], float(levels[i]["accuracy"])) for i in range(len(levels))]
        col = plots.color(j)
        right.scatter([p[0] for p in pts], [p[1] for p in pts], color=col, alpha=0.5)
        front = pareto_front(pts)
        right.step([p[0] for p in front], [p[1] for p in front], where="post", marker="o",
                   color=col, label=f"{f * scale:g} {unit}")
    right.set(xlabel="latency (ms)", ylabel="accuracy", title="accuracy-latency front per frequency")
    right.legend(title="frequency")
    return Plot(f"calibration-{idx}", f"{item.label}: latency of each All-in-One level against "
                "frequency, and per frequency the levels no other level beats on both latency "
                "and accuracy (the Pareto front, drawn as steps).", plots.to_png(fig))


def _table(item: Loaded) -> Table:
    levels, freqs, lat = _check(item)
    scale, _, unit = _freq_axis(item)
    header = ("ratio", "accuracy", *(f"ms at {f * scale:g} {unit}" for f in freqs))
    rows = tuple((lv["ratio"], "-" if lv.get("accuracy") is None else lv["accuracy"], *row)
                 for lv, row in zip(levels, lat))
    return Table(header, rows)


def build(items: list[Loaded]) -> Built:
    built = Built()
    for idx, item in enumerate(items):
        built.sections.append(Section(f"All-in-One calibration — {item.label}",
                                      [_plot(item, idx), _table(item)]))
        built.warnings += file_warnings(item)
    return built
