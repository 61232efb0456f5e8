"""Checks of the values a caller passes to the embedded runtime's API.

A budget of NaN, a level index of -1 or a frequency reader that returns 0 would otherwise
surface far from the call as a numpy, ONNX Runtime or ZeroDivisionError traceback, or not at
all (NaN compares false, so a NaN budget switched eviction off). Each check raises one
``UsageError`` line naming the argument.

Device-side: stdlib and numpy (numpy scalars are numbers too).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgert.errors import UsageError
from edgert.finite import is_finite_number


def number(value: Any, what: str, *, low: float = 0.0, low_ok: bool = False) -> float:
    """``value`` as a float: a real, finite number above ``low`` (or equal, with ``low_ok``)."""
    if not is_finite_number(value):
        raise UsageError(f"{what} must be a finite number, got {value!r}")
    if value < low or (value == low and not low_ok):
        raise UsageError(f"{what} must be {'at least' if low_ok else 'above'} {low:g}, got {value!r}")
    return float(value)


def whole(value: Any, what: str, low: int = 0) -> int:
    """``value`` as a whole number >= ``low`` (a count of runs: 2.5 or NaN failed later as a
    bare TypeError)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise UsageError(f"{what} must be a whole number >= {low}, got {value!r}")
    return int(value)


def index(value: Any, count: int, what: str) -> int:
    """``value`` as an index into ``count`` items: an int in 0..count-1 (no negative indexing)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < count:
        raise UsageError(f"{what} must be an integer 0..{count - 1}, got {value!r}")
    return int(value)
