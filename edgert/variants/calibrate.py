"""Measure every level at every frequency setting and store the latency table in the file.

Two ways in, one table (docs/aio-format.md):

* ``calibrate_device``: what ``edgert calibrate`` runs. The sweep machinery (``edgert.sweep``,
  ``device_agents.sweep`` with ``all_levels``) pins each cpufreq clock or emulated level on
  this machine or on a device through its agent, times every level there and samples power
  when the device has a sensor; statistics, power and energy are computed here on the host.
* ``calibrate``: in this process, at settings given as context managers (a *frequency
  setting* is a number in the unit the frequency reader of ``AdaptiveModel`` returns: kHz
  for cpufreq, a fraction for the emulated domain, and a context manager holding the device
  at it), for programs that drive the clocks themselves. No power.

The table goes into the file's ``__metadata__["calibration"]`` (the data section and its
checksum are unchanged), so one file carries its own timing.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgert.errors import SysfsError, UsageError
from edgert.settings import BenchSettings, SweepRequest
from edgert.stats import summarize
from edgert import power_status
from edgert.sweep import Progress, SweepJob, build_point, fixture_warning, power_of, run_raw, sysfs_root_of
from edgert.timing import measure

from . import aiofile, tables
from .frequency import FrequencySetting
from .runtime import VariantModel

SCHEMA = "edgert.aio.calibration/1"


def calibrate(path: str | Path, settings: Sequence[FrequencySetting], bench: BenchSettings | None = None, *,
              feeds: dict[str, np.ndarray] | None = None, unit: str = "khz", emulated: bool = False,
              threads: int | None = None, write: bool = True) -> dict[str, Any]:
    """Return (and by default store in ``path``) the table ``latency_ms[level][setting]``."""
    if not settings:
        raise UsageError("calibration needs at least one frequency setting")
    bench = bench or BenchSettings(warmup_runs=3, min_runs=10, min_duration_ms=300, max_duration_ms=2000,
                                   target_ci_fraction=0.02)
    order = sorted(settings, key=lambda s: s.frequency)
    with VariantModel(path, threads=threads) as vm:
        if feeds is None:
            from edgert.tensors import random_feeds

            feeds = random_feeds(vm.inputs, {}, bench.seed)
        blocks: list[list[dict[str, Any]]] = [[] for _ in vm.levels]
        for setting in order:
            with setting.apply():
                for lv in vm.levels:
                    vm.select_index(lv.index)
                    raw = measure(lambda: vm.run(feeds), bench)
                    block = summarize([s / 1e6 for s in raw.samples_ns], seed=bench.seed)
                    block["stop_reason"] = raw.stop_reason
                    blocks[lv.index].append(block)
        table = _table(emulated=emulated, unit=unit, frequencies=[s.frequency for s in order],
                       labels=[s.label for s in order], ratios=[lv.ratio for lv in vm.levels],
                       blocks=blocks, threads=threads, bench=bench)
    if write:
        store(path, table)
    return table


def calibration_request(cpu_freqs: str | tuple[int, ...] | None, emulated_levels: tuple[float, ...], *,
                        cpu_policies: tuple[str, ...] = (), power: str = "auto", idle_s: float = 1.0,
                        sysfs_root: str | None = None, threads: int | None = None,
                        max_time_s: float = 2.0, dims: dict[str, int] | None = None) -> SweepRequest:
    """The sweep ``edgert calibrate`` runs: one kind of setting (cpufreq clocks or emulated
    levels), each level timed for at most ``max_time_s`` after 3 warm-up runs."""
    if bool(cpu_freqs) == bool(emulated_levels):
        raise UsageError("choose one of --cpu-freqs all|LIST and --emulated LEVELS")
    bench = BenchSettings(warmup_runs=3, min_duration_ms=min(300.0, max_time_s * 1000),
                          max_duration_ms=max_time_s * 1000, threads=threads)
    return SweepRequest(settings=bench, cpu_freqs=cpu_freqs, cpu_policies=cpu_policies,
                        emulated_levels=emulated_levels, power=power, idle_s=idle_s,
                        sysfs_root=sysfs_root, all_levels=True, dims=dims or {})


def calibrate_device(job: SweepJob, device: Any = None, *, progress: Progress | None = None,
                     write: bool = True) -> dict[str, Any]:
    """Calibrate the All-in-One file ``job.model`` on ``device`` (None/local: here) at the job's
    cpufreq clocks, devfreq clocks or emulated levels (one kind); return and by default store
    the table.

    A setting whose clock did not take is left out with a warning in the table; none left
    is an error.
    """
    request = job.request
    kinds = [bool(request.cpu_freqs), bool(request.gpu_freqs), bool(request.emulated_levels)]
    if sum(kinds) != 1:
        raise UsageError("calibrate at one kind of setting: --cpu-freqs all|LIST or --emulated LEVELS")
    if write:
        tables.check_writable(job.model)
    all_levels = dataclasses.replace(request, all_levels=True)
    raw, facts = run_raw(dataclasses.replace(job, request=all_levels), device, progress)
    warnings = list(raw.get("warnings") or [])
    source = raw.get("power_source")
    source_name = f"{source['name']} ({source['kind']})" if source else None
    root = sysfs_root_of(job, raw)
    emulated = bool(facts.get("emulated")) or bool(request.emulated_levels)
    points = []
    for raw_point in raw["points"]:
        said: list[str] = []
        points.append(dict(build_point(raw_point, source_name, emulated, job.settings.seed, said, root),
                           level=raw_point["level"]))
        warnings += [f"{raw_point['level']['ratio']:.0%} pruned level at {w}" for w in said]
    by_setting: dict[float, list[dict[str, Any]]] = {}
    for point in points:
        by_setting.setdefault(float(point["setting"]["requested"]), []).append(point)
    labels = {f: _setting_label(ps[0]["setting"]) for f, ps in by_setting.items()}
    failed = {labels[f]: ps[0]["error"] for f, ps in by_setting.items() if any(p["error"] for p in ps)}
    freqs = sorted(f for f in by_setting if labels[f] not in failed)
    if not freqs:
        raise SysfsError("calibration measured no setting: " + "; ".join(f"{k}: {e}" for k, e in failed.items()))
    ratios = sorted({p["level"]["index"]: p["level"]["ratio"] for p in points}.items())
    grid = [[next(p for p in by_setting[f] if p["level"]["index"] == i) for f in freqs] for i, _ in ratios]
    blocks = [[{**p["latency_ms"], "stop_reason": p["stop_reason"]} for p in row] for row in grid]
    unit = "emulated fraction" if request.emulated_levels else "khz" if request.cpu_freqs else "hz"
    table = _table(emulated=emulated, unit=unit, frequencies=freqs,
                   labels=[labels[f] for f in freqs],
                   ratios=[r for _, r in ratios], blocks=blocks, threads=job.settings.threads,
                   bench=job.settings)
    power = power_of([p for row in grid for p in row], source_name, root)
    table["power"] = power
    table["fixture"] = power_status.is_fixture_root(root)  # its clocks are a fixture's, not set
    if source is None:
        warnings.append("no power source: no power or energy per level (--power RAIL or a meter URL)")
    elif not power["measured"]:
        warnings.insert(0, power["reason"] + ": no power or energy per level")
        if all(p.get("power_reading") for row in grid for p in row):  # kept for the record, labelled
            table["power_reading"] = {key: [[p["power_reading"][name] for p in row] for row in grid]
                                      for key, name in (("power_w", "power_w"), ("idle_power_w", "idle_power_w"),
                                                        ("energy_mj", "energy_per_inference_mj"))}
    if power_status.is_fixture_root(root):
        warnings.insert(0, fixture_warning(root))
    elif source is None:
        pass  # said above; nothing was sampled
    elif any(p["energy_per_inference_mj"] is None for row in grid for p in row):
        warnings.append("power was sampled but too sparsely to give every level an energy: no energy "
                        "table (a faster sensor or longer --max-time)")
    else:  # power sampled while each level ran: mean power and energy per inference
        table.update(power_source=source_name,
                     power_w=[[p["power_w"] for p in row] for row in grid],
                     idle_power_w=[[p["idle_power_w"] for p in row] for row in grid],
                     energy_mj=[[p["energy_per_inference_mj"] for p in row] for row in grid])
    table.update(device={k: facts.get(k) for k in ("hostname", "arch", "transport", "emulated")},
                 readback=[grid[0][j]["setting"].get("readback") for j in range(len(freqs))],
                 throttled=[[p["throttled"] for p in row] for row in grid],
                 warnings=warnings + [f"left out {k}: {e}" for k, e in failed.items()])
    if write:
        store(job.model, table)
    return table


def _setting_label(setting: dict[str, Any]) -> str:
    unit = setting["unit"]
    return f"emulated {setting['requested']:g}" if unit == "share" else \
        f"{setting['domain']} {setting['requested']} {unit}"


def _table(*, emulated: bool, unit: str, frequencies: list[float], labels: list[str], ratios: list[float],
           blocks: list[list[dict[str, Any]]], threads: int | None, bench: BenchSettings) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "emulated": emulated,  # True: frequency is an emulated setting, not a real clock
        "frequency_unit": unit,
        "frequencies": frequencies,
        "labels": labels,
        "ratios": ratios,
        "p50_ms": [[b["p50"] for b in row] for row in blocks],
        "detail": blocks,
        "threads": threads,
        "bench": bench.to_dict(),
        "measured_unix": time.time(),
    }


def store(path: str | Path, table: dict[str, Any]) -> None:
    """Write ``table`` into the file's ``__metadata__["calibration"]``."""
    aiofile.rewrite_metadata(Path(path), {"calibration": json.dumps(table)})
