"""Measure every level at every frequency setting and store the latency table in the file.

A *frequency setting* is a number (in the unit the frequency reader of ``AdaptiveModel``
returns: kHz for cpufreq, a fraction for the emulated domain) and a context manager that
holds the device at it (``dvfs`` pinning, or ``EmulatedDomain.pinned(level)``). The table
goes into the file's ``__metadata__["calibration"]`` (the data section and its checksum are
unchanged), so one file carries its own timing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgert.errors import UsageError
from edgert.settings import BenchSettings
from edgert.stats import summarize
from edgert.timing import measure

from . import aiofile
from .runtime import VariantModel

SCHEMA = "edgert.aio.calibration/1"


@dataclasses.dataclass(frozen=True)
class FrequencySetting:
    frequency: float
    apply: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    label: str = ""


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
        table = {
            "schema": SCHEMA,
            "emulated": emulated,  # True: frequency is an emulated setting, not a real clock
            "frequency_unit": unit,
            "frequencies": [s.frequency for s in order],
            "labels": [s.label for s in order],
            "ratios": [lv.ratio for lv in vm.levels],
            "p50_ms": [[b["p50"] for b in row] for row in blocks],
            "detail": blocks,
            "threads": threads,
            "bench": bench.to_dict(),
            "measured_unix": time.time(),
        }
    if write:
        aiofile.rewrite_metadata(Path(path), {"calibration": json.dumps(table)})
    return table
