"""Time candidate bundles on a device for ``compile --backend auto --device`` (host side).

Each candidate is uploaded and timed by the agent's ``bench.run``: the same loop, clock and
statistic (the median of raw samples) that ``edgert bench --device`` uses, so a choice made
here can be checked by benching the kept candidates (``compile --keep-candidates``).
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from edgert.devices.client import AgentClient
from edgert.settings import BenchSettings

# Under qemu an engine's first runs in a process also pay for translating its code (TCG);
# with 2 warm-up runs one segment's ranking flipped between compile and bench --device
WARMUP_RUNS = 5
TIMED_RUNS = 15  # per input; under qemu a TVM segment run takes milliseconds, so this stays short


class DeviceTimer:
    """``bundle_ms`` for the compiler, measured by the agent at the other end of ``client``."""

    def __init__(self, client: AgentClient, emulated: bool = False,
                 settings: BenchSettings | None = None) -> None:
        self.client = client
        self.settings = settings or BenchSettings(warmup_runs=WARMUP_RUNS, runs=TIMED_RUNS)
        self.facts: dict[str, Any] = client.device_info()["device"]
        self.facts["emulated"] = bool(self.facts.get("emulated") or emulated)

    def bundle_ms(self, bundle: Path, inputs: list[dict[str, np.ndarray]]) -> float:
        """Mean over ``inputs`` of the median milliseconds per run the device measured."""
        from edgert.device_agents.protocol import pack_array

        medians = []
        for feeds in inputs:
            measured = self.client.bench(bundle, "bundle", {
                "settings": self.settings.to_dict(),
                "feeds": {name: pack_array(np.asarray(v)) for name, v in feeds.items()}})
            medians.append(statistics.median(measured["raw"]["samples_ns"]))
        return statistics.fmean(medians) / 1e6
