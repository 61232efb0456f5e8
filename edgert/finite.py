"""Is a value a real, finite number? The one test behind every check of a number a user or a
file gives: ``True`` is not 1, NaN and infinity compare false and slip past range checks, and
numpy scalars (a callable's ``np.float32`` accuracy, ``np.int64`` from an array) are numbers
too. Core: stdlib only (numpy registers its scalars as ``numbers.Real``)."""
from __future__ import annotations

import math
import numbers
from typing import Any


def is_finite_number(value: Any) -> bool:
    """A real number that is not a bool (nor numpy's) and neither NaN nor infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        type(value).__name__ != "bool_" and math.isfinite(value)
