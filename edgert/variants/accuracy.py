"""Accuracy per level of an All-in-One file, kept in its ``aio`` metadata as ``accuracy``.

The report draws the accuracy-latency(-energy) Pareto fronts from it. The numbers come from
whoever evaluated the levels (``tools/train_digits_aio.py``, or ``edgert calibrate FILE
--accuracy ACC.json``); edgert does not measure accuracy itself. Keys are the levels'
ratios as written by ``str(float(ratio))``, values any finite score where higher is better.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgert.errors import UsageError
from edgert.finite import is_finite_number

from . import aiofile


def store_accuracy(path: str | Path, accuracy: Mapping[float | str, float]) -> dict[str, float]:
    """Check ``accuracy`` ({ratio: score}, one per level of ``path``) and write it into the file."""
    path = Path(path)
    meta = aiofile.read_meta(path, verify=False)
    ratios = [float(lv["ratio"]) for lv in meta["levels"]]
    table: dict[str, float] = {}
    for key, value in accuracy.items():
        try:
            ratio = float(key)
        except (TypeError, ValueError):
            raise UsageError(f"accuracy key {key!r} is not a pruning ratio") from None
        match = [r for r in ratios if abs(r - ratio) < 1e-9]
        if not match:
            raise UsageError(f"{path} has no level with ratio {ratio:g} (its ratios: "
                             f"{', '.join(f'{r:g}' for r in ratios)})", path=str(path), ratio=ratio)
        if not is_finite_number(value):
            raise UsageError(f"accuracy of ratio {ratio:g} must be a finite number, got {value!r}")
        if str(match[0]) in table and table[str(match[0])] != float(value):  # "0" and "0.0": the last won
            raise UsageError(f"accuracy gives ratio {ratio:g} twice ({table[str(match[0])]:g} and {float(value):g})")
        table[str(match[0])] = float(value)
    missing = [r for r in ratios if str(r) not in table]
    if missing:
        raise UsageError(f"accuracy is missing for ratio(s) {', '.join(f'{r:g}' for r in missing)} of "
                         f"{path} (give one number per level)", path=str(path))
    aiofile.rewrite_metadata(path, {"aio": json.dumps({**meta, "accuracy": table}, separators=(",", ":"))})
    return table


def read_accuracy_json(path: str | Path) -> dict[str, float]:
    """``{"0.0": 0.97, "0.5": 0.95}`` from a JSON file, with a clear error when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read accuracy file {path}: {exc.strerror}", path=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"accuracy file {path} is not JSON ({exc.msg} at line {exc.lineno})",
                         path=str(path)) from exc
    if not isinstance(data, dict):
        raise UsageError(f"accuracy file {path} must hold an object {{ratio: accuracy}}", path=str(path))
    return data


def accuracy_of(meta: Mapping[str, object], ratio: float) -> float | None:
    """The stored accuracy of the level with ``ratio`` (None when none was stored)."""
    table: Any = meta.get("accuracy") or {}
    return next((float(v) for k, v in table.items() if abs(float(k) - ratio) < 1e-9), None)
