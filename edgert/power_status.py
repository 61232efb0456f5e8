"""Is a power reading a measurement of this run? Labels for power that is not.

A power source can read numbers that say nothing about the model: a sysfs root that is a copy
of another board (a fixture: the host ran the model, the fixture's files gave the watts), or a
rail whose reading never changes between idle and load (a static file, a stuck sensor). Such
power is recorded as a *reading*, labelled, and never turned into energy (docs/sweep-schema.md).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

MEASURED = "measured"
FIXTURE = "fixture"
STATIC = "static"
NONE = "none"

REASONS = {
    FIXTURE: "power read from a sysfs fixture ({root}), not from the machine that ran the model: "
             "not measured",
    STATIC: "the power reading never changed between idle and load: a static value, not measured",
    NONE: "no power source: power and energy not measured",
}


def is_fixture_root(sysfs_root: str | None) -> bool:
    """A sysfs root other than ``/`` is a copy of some board's files, not this machine's."""
    return sysfs_root not in (None, "", "/")


def source_status(source_name: str | None, sysfs_root: str | None) -> str:
    """Status known before any sample: no source, or a sysfs source under a fixture root.
    External meters (``meter+...``) are read on the device itself and never come from sysfs."""
    if not source_name:
        return NONE
    if is_fixture_root(sysfs_root) and not source_name.startswith("meter+"):
        return FIXTURE
    return MEASURED


def is_static(power: Mapping[str, Any] | None, idle: Mapping[str, Any] | None) -> bool:
    """True when idle and load samples together show no change at all (watts: one value;
    joules: a counter that never advanced). Fewer than two samples cannot tell: False."""
    values = np.concatenate([np.asarray(b["values"], dtype=np.float64)
                             for b in (power, idle) if b and len(b["values"])] or [np.zeros(0)])
    return values.size >= 2 and float(np.ptp(values)) == 0.0


def block(status: str, source_name: str | None, sysfs_root: str | None) -> dict[str, Any]:
    """The top-level ``power`` block of a sweep or calibration result."""
    out: dict[str, Any] = {"source": source_name, "measured": status == MEASURED, "status": status}
    if status != MEASURED:
        out["reason"] = REASONS[status].format(root=sysfs_root)
    return out


def file_label(result: Mapping[str, Any]) -> str:
    """The label of a result's own ``power`` block when it says not measured, else '': it wins
    over its points (one point edited to 'measured' in a fixture file was ranked least energy)."""
    block = result.get("power")
    status = block.get("status") if isinstance(block, Mapping) else None
    return label({"power_status": status}) if status in (FIXTURE, STATIC, NONE) else ""


def label(point: Mapping[str, Any]) -> str:
    """A short table cell for a point's power status: '' when measured."""
    status = point.get("power_status", MEASURED if point.get("power_w") is not None else NONE)
    return {MEASURED: "", FIXTURE: "fixture, not measured", STATIC: "static, not measured",
            NONE: "not measured"}[status]
