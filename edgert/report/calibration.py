"""``edgert.calibration/1`` files: All-in-One levels x frequencies, and per frequency the
accuracy-latency(-energy) Pareto front of the levels."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgert.errors import UsageError
from edgert.result import is_amount
from edgert.report import plots
from edgert.report.model import Built, Loaded, Note, Plot, Section, Table, file_warnings
from edgert.report.sweep import TO_MHZ, axis

SCHEMA = "edgert.calibration/1"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(cost, accuracy) pairs no other pair beats on both; sorted by cost."""
    front: list[tuple[float, float]] = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((cost, acc))
    return front


def non_dominated(costs: list[tuple[float, ...]], accuracy: list[float]) -> list[bool]:
    """Per level: True unless another level is at least as good on every cost (lower) and on
    accuracy (higher), and better on one of them."""
    keys = [(*c, -a) for c, a in zip(costs, accuracy)]
    return [not any(all(o <= k for o, k in zip(other, key)) and other != key for other in keys)
            for key in keys]


def _grid(item: Loaded, name: str, n_levels: int, n_freqs: int, *,
          positive: bool = False) -> list[list[float]] | None:
    """A levels x frequencies table of finite numbers >= 0 (> 0 when ``positive``: latencies,
    which the report divides by)."""
    table = item.data.get(name)
    if table is None:
        return None
    if not isinstance(table, list) or len(table) != n_levels or any(
            not isinstance(row, list) or len(row) != n_freqs or
            not all(is_amount(v) and (v > 0 or not positive) for v in row) for row in table):
        raise UsageError(f"{item.path}: '{name}' must be a levels x frequencies table of finite numbers "
                         f"{'above 0' if positive else '>= 0'}", path=str(item.path))
    return [[float(v) for v in row] for row in table]


UNITS = {**{u.lower(): u for u in TO_MHZ}, "share": "share", "emulated fraction": "share"}  # as written -> shown


def check_settings(data: dict[str, Any], path: Path) -> None:
    """The unit, frequencies and levels every table of the file is laid out by: a known unit
    (written back in the report's spelling), distinct frequencies above 0, distinct pruning
    ratios in [0, 1). 'GHz' read as MHz, 'bananas' as no unit, two '600 MHz' columns, a -0.001
    MHz clock and a '500% pruned' level were all shown as given."""
    unit = data.get("frequency_unit", "kHz")
    if not isinstance(unit, str) or unit.lower() not in UNITS:
        raise UsageError(f"{path}: frequency_unit {unit!r} is not one of Hz, kHz, MHz, GHz or share",
                         path=str(path))
    data["frequency_unit"] = UNITS[unit.lower()]
    freqs = data.get("frequencies")
    if not isinstance(freqs, list) or not all(is_amount(f) and f > 0 for f in freqs) or len(set(freqs)) != len(freqs):
        raise UsageError(f"{path}: 'frequencies' must be distinct numbers above 0", path=str(path))
    levels = data.get("levels")
    ratios = [lv.get("ratio") if isinstance(lv, dict) else None for lv in levels or []]
    if not ratios or not all(is_amount(r) and r < 1 for r in ratios) or len(set(ratios)) != len(ratios):
        raise UsageError(f"{path}: 'levels' must each have a distinct pruning 'ratio' in [0, 1)", path=str(path))


def measured_energy(data: dict[str, Any]) -> Any:
    """``energy_mj`` when the file's power block says it was measured, else None: an energy
    table without one (or beside a fixture's power) is not known to be a measurement."""
    return data.get("energy_mj") if (data.get("power") or {}).get("measured") is True else None


def _check(item: Loaded) -> tuple[list[dict[str, Any]], list[float], list[list[float]], list[list[float]] | None]:
    d = item.data
    levels, freqs = d.get("levels") or [], d.get("frequencies") or []
    if not levels or not freqs:
        raise UsageError(f"{item.path}: a calibration file needs 'levels', 'frequencies' and "
                         "'latency_ms' as a levels x frequencies table", path=str(item.path))
    lat = _grid(item, "latency_ms", len(levels), len(freqs), positive=True)
    if lat is None:
        raise UsageError(f"{item.path}: a calibration file needs 'latency_ms' as a levels x frequencies "
                         "table", path=str(item.path))
    energy = _grid(item, "energy_mj", len(levels), len(freqs))  # checked even when not shown
    return levels, [float(f) for f in freqs], lat, energy if measured_energy(d) is not None else None


def _freq_axis(item: Loaded) -> tuple[float, str, str]:
    """Scale, axis label and short unit for the frequencies (kHz unless ``frequency_unit``)."""
    scale, label = axis("cpu", item.data.get("frequency_unit", "kHz"))
    short = label.split("(")[-1].rstrip(")")
    label = label.replace("cpu ", "") + (" — fixture clocks, not set" if item.data.get("fixture") else "")
    return scale, label, short + (" (fixture)" if item.data.get("fixture") else "")


def _level_name(level: dict[str, Any]) -> str:
    """``ratio`` is the fraction of channels removed (docs/aio-format.md)."""
    return f"{float(level['ratio']):.0%} pruned"


def _per_frequency(ax: Any, freqs: list[float], scale: float, levels: list[dict[str, Any]],
                   table: list[list[float]], with_accuracy: bool) -> None:
    for i, (level, row) in enumerate(zip(levels, table)):
        acc = f", accuracy {level['accuracy']:.3g}" if with_accuracy else ""
        ax.plot([f * scale for f in freqs], row, marker="o", color=plots.color(i),
                label=f"{_level_name(level)}{acc}")
    ax.set_ylim(bottom=0)


def _fronts(ax: Any, freqs: list[float], scale: float, unit: str, noun: str,
            levels: list[dict[str, Any]], table: list[list[float]]) -> None:
    """Per frequency: every level as a faint dot, the levels on the front joined as steps.
    Frequencies take the colours after the levels' (a colour means one thing per figure)."""
    for j, f in enumerate(freqs):
        pts = [(table[i][j], float(levels[i]["accuracy"])) for i in range(len(levels))]
        col = plots.color(len(levels) + j)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=col, alpha=0.35)
        front = pareto_front(pts)
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", marker="o",
                color=col, label=f"{f * scale:g} {unit}")
    ax.legend(title=noun)


def _plot(item: Loaded, idx: int) -> Plot:
    levels, freqs, lat, energy = _check(item)
    scale, xlabel, unit = _freq_axis(item)
    noun = "emulated speed" if item.data.get("frequency_unit") == "share" else "frequency"
    with_accuracy = all(lv.get("accuracy") is not None for lv in levels)
    # Latency (and energy) against frequency on top; with accuracy, the fronts below them
    # (side by side when there is no energy).
    top = ["latency", "energy"] if energy is not None else ["latency"]
    grid = [top] if not with_accuracy else [top, ["front-latency", "front-energy"]] if energy is not None \
        else [["latency", "front-latency"]]
    fig, axes = plots.figure(11, 3.8 * len(grid), rows=len(grid), cols=len(grid[0]))
    ax = {name: axes[r][c] for r, row in enumerate(grid) for c, name in enumerate(row)}
    _per_frequency(ax["latency"], freqs, scale, levels, lat, with_accuracy)
    ax["latency"].set(xlabel=xlabel, ylabel="latency (ms)", title="latency of each level")
    ax["latency"].legend()
    if energy is not None:
        _per_frequency(ax["energy"], freqs, scale, levels, energy, with_accuracy)
        ax["energy"].set(xlabel=xlabel, ylabel="energy per inference (mJ)", title="energy of each level")
    if with_accuracy:
        _fronts(ax["front-latency"], freqs, scale, unit, noun, levels, lat)
        ax["front-latency"].set(xlabel="latency (ms)", ylabel="accuracy",
                                title=f"accuracy-latency front per {noun}")
        if energy is not None:
            _fronts(ax["front-energy"], freqs, scale, unit, noun, levels, energy)
            ax["front-energy"].set(xlabel="energy per inference (mJ)", ylabel="accuracy",
                                   title=f"accuracy-energy front per {noun}")
    fig.suptitle(item.label, x=0.01, ha="left", fontweight="bold")
    source = item.data.get("power_source")
    what = "latency" + ("" if energy is None else " and energy per inference" + (f" (power from {source})"
                                                                                  if source else ""))
    caption = f"{item.label}: {what} of each All-in-One level against {noun}"
    if not with_accuracy:
        caption += " (no accuracy recorded for the levels, so no Pareto front)."
    elif energy is None:
        caption += (f"; right, per {noun}, the Pareto front: the levels no other level beats on both "
                    "latency and accuracy, drawn as steps (faint dots: the other levels).")
    else:
        caption += (f"; below, per {noun}, the Pareto fronts: the levels no other level beats on both "
                    "latency and accuracy (left) and on both energy and accuracy (right), drawn as steps "
                    "(faint dots: the other levels).")
    if energy is None:
        caption += " No power was measured, so no energy."
    return Plot(f"calibration-{idx}", caption, plots.to_png(fig))


def _table(item: Loaded) -> Table:
    levels, freqs, lat, energy = _check(item)
    scale, _, unit = _freq_axis(item)
    with_accuracy = all(lv.get("accuracy") is not None for lv in levels)
    at = [f"{f * scale:g} {unit}" for f in freqs]
    header = ["channels removed", "accuracy", *(f"ms at {a}" for a in at)]
    columns: list[list[Any]] = [[f"{float(lv['ratio']):.0%}" for lv in levels],
                                ["—" if lv.get("accuracy") is None else lv["accuracy"] for lv in levels],
                                *([row[j] for row in lat] for j in range(len(freqs)))]
    if energy is not None:
        header += [f"mJ at {a}" for a in at]
        columns += [[row[j] for row in energy] for j in range(len(freqs))]
    caption = ""
    if with_accuracy:
        objectives = "latency, energy and accuracy" if energy is not None else "latency and accuracy"
        fronts = [non_dominated([(lat[i][j], *((energy[i][j],) if energy else ())) for i in range(len(levels))],
                                [float(lv["accuracy"]) for lv in levels]) for j in range(len(freqs))]
        header.append("Pareto-optimal at")
        columns.append([", ".join(a for a, front in zip(at, fronts) if front[i]) or "none"
                        for i in range(len(levels))])
        caption = f"Pareto-optimal: no other level at that setting is at least as good on {objectives}."
    return Table(tuple(header), tuple(zip(*columns)), caption)


def build(items: list[Loaded]) -> Built:
    built = Built()
    for idx, item in enumerate(items):
        blocks: list[Any] = [_plot(item, idx), _table(item)]
        power = item.data.get("power") or {}
        if power and not power.get("measured"):
            blocks.insert(0, Note(f"Power and energy: not measured ({power.get('status')}). "
                                  f"{power.get('reason', '')}"))
        elif not power and "energy_mj" in item.data:
            blocks.insert(0, Note("Energy: not shown. The file has an energy table but no power block saying "
                                  "it was measured (edgert calibrate writes one)."))
        built.sections.append(Section(f"All-in-One calibration — {item.label}", blocks))
        built.warnings += file_warnings(item)
    return built
