"""What the machine was doing around a measurement (pyperf keeps the same kind of metadata):
load average, CPU governors and clocks, temperatures. Read on the device, before and after."""
from __future__ import annotations

import os
from typing import Any, Callable

from edgert.device_agents.discovery import read_cpufreq, read_thermal


def snapshot(sysfs_root: str = "/") -> dict[str, Any]:
    """``{"loadavg": [1, 5, 15 min], "governors": {policy: name}, "cpu_khz": {policy: kHz},
    "temperatures_c": {zone type: °C}}``; missing sources give empty maps (no cpufreq here)."""
    policies = read_cpufreq(sysfs_root)
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"loadavg": load,
            "governors": {p["policy"]: p.get("governor") for p in policies},
            "cpu_khz": {p["policy"]: p.get("cur_khz") for p in policies},
            "temperatures_c": {t["type"] or t["zone"]: t["celsius"] for t in read_thermal(sysfs_root)}}


def around(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()``'s dict with ``run_metadata`` ``{"before", "after"}`` added."""
    before = snapshot()
    measured = measure()
    measured["run_metadata"] = {"before": before, "after": snapshot()}
    return measured


def warnings(before: dict[str, Any], after: dict[str, Any], cores: int | None) -> list[str]:
    """Plain-language reasons the machine state may have skewed the numbers."""
    out = []
    load = (before.get("loadavg") or [0.0])[0]
    if cores and load > 0.5 * cores:
        out.append(f"the machine was busy before the run (1-minute load average {load:g} on {cores} "
                   "cores): other work competed for the CPU")
    rises = {z: after["temperatures_c"][z] - t for z, t in before.get("temperatures_c", {}).items()
             if z in after.get("temperatures_c", {})}
    hot = {z: r for z, r in rises.items() if r >= 10}
    if hot:
        z, r = max(hot.items(), key=lambda kv: kv[1])
        out.append(f"{z} warmed by {r:.0f} °C during the run: later runs may be throttled")
    changed = [p for p, khz in before.get("cpu_khz", {}).items() if after.get("cpu_khz", {}).get(p) != khz]
    if changed:
        out.append(f"the CPU clock of {', '.join(changed)} changed during the run (governor "
                   f"{before['governors'].get(changed[0])}): pin it for stable numbers")
    return out
