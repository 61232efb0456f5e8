"""Numbers for people: a duration in the unit that suits its size, bytes in binary units."""
from __future__ import annotations

import math

_TIME = ((1e3, "s", 1e-3), (1.0, "ms", 1.0), (1e-3, "µs", 1e3), (0.0, "ns", 1e6))


def duration_ms(value: float | None, digits: int = 4) -> str:
    """``0.000412`` -> ``412 ns``; ``12.3456`` -> ``12.35 ms``; ``1520`` -> ``1.52 s`` (never 0.000 ms)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value == 0:
        return "0 ms"
    for floor, unit, scale in _TIME:
        if abs(value) >= floor:
            return f"{value * scale:.{digits}g} {unit}"
    raise AssertionError("unreachable: the last floor is 0")


def unit_for(values: list[float]) -> tuple[str, float]:
    """One unit for a column or axis of durations in ms: the one that suits its smallest value."""
    smallest = min((abs(v) for v in values if v), default=1.0)
    return next((unit, scale) for floor, unit, scale in _TIME if smallest >= floor)


def size_bytes(value: int | None) -> str:
    if value is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":  # a hand-edited 1.5e300 was 300 digits of GiB
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}" if abs(value) < 1e4 \
                else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}/s"
