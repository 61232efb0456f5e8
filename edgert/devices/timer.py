"""Time candidate bundles on a device for ``compile --backend auto --device`` (host side).

Each candidate is uploaded and timed by one ``bench.run`` request whose runs cycle through
the timing inputs: exactly what ``edgert bench FILE --backend bundle --device ... --cases
FILE.inputs.npz`` sends with ``bench_options(len(inputs))``, so a choice made here can be
checked by benching the kept candidates (``compile --keep-candidates``) and applying
``edgert.dynamic.auto_rule.decide`` to their samples.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgert.devices.client import AgentClient
from edgert.settings import BenchSettings

# Under qemu an engine's first runs in a process also pay for translating its code (TCG);
# with 2 warm-up runs one segment's ranking flipped between compile and bench --device
WARMUP_RUNS = 5  # at least; rounded up to whole passes over the inputs
TIMED_RUNS = 20  # at least; rounded up to whole passes, so every input counts equally


def settings_for(inputs: int) -> BenchSettings:
    """Warm-up and timed run counts for ``inputs`` cycled inputs (whole passes over them)."""
    passes = max(1, inputs)
    return BenchSettings(warmup_runs=passes * math.ceil(WARMUP_RUNS / passes),
                         runs=passes * math.ceil(TIMED_RUNS / passes))


def bench_options(inputs: int) -> list[str]:
    """The ``edgert bench`` options that time like ``DeviceTimer`` on ``inputs`` inputs."""
    settings = settings_for(inputs)
    return ["--warmup", str(settings.warmup_runs), "--runs", str(settings.runs)]


class DeviceTimer:
    """``samples_ms`` for the compiler, measured by the agent at the other end of ``client``."""

    def __init__(self, client: AgentClient, emulated: bool = False) -> None:
        self.client = client
        self.facts: dict[str, Any] = client.device_info()["device"]
        self.facts["emulated"] = bool(self.facts.get("emulated") or emulated)

    def samples_ms(self, bundle: Path, inputs: list[dict[str, np.ndarray]]) -> list[float]:
        """Milliseconds of each timed run, the runs cycling through ``inputs`` in order."""
        from edgert.device_agents.protocol import pack_array

        measured = self.client.bench(bundle, "bundle", {
            "settings": settings_for(len(inputs)).to_dict(),
            "cases": [[f"case{i}", {name: pack_array(np.asarray(v)) for name, v in feeds.items()}]
                      for i, feeds in enumerate(inputs)]})
        return [ns / 1e6 for ns in measured["raw"]["samples_ns"]]
