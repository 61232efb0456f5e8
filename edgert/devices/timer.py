"""Time auto's candidates on a device for ``compile --backend auto --device`` (host side).

The candidates of one decision are uploaded and timed together by one ``bench.interleaved``
request: every candidate loaded and warmed up, then blocks of ``BLOCK_RUNS`` runs in ABBA
rounds (``device_agents.interleave``), each candidate's runs cycling through the timing
inputs, so load drift on the device costs every candidate alike. When ``auto_rule`` finds
the result near its boundary (``auto_rule.unsettled``) up to ``EXTRA_REQUESTS`` more such
requests follow, continuing the rounds, as long as they fit ``EXTRA_BUDGET_S`` of device
time. ``edgert bench A B ... --device`` sends the same request (``request_options`` gives
its run counts), so a choice made here can be re-timed from ``compile --keep-candidates``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgert.device_agents.interleave import block_order
from edgert.devices.client import AgentClient
from edgert.dynamic import auto_rule
from edgert.dynamic.candidates import TimedCandidates
from edgert.settings import BenchSettings

# Under qemu an engine's first runs in a process also pay for translating its code (TCG);
# with 2 warm-up runs one segment's ranking flipped between compile and bench --device
WARMUP_RUNS = 5  # at least; rounded up to whole passes over the inputs
TIMED_RUNS = 20  # per candidate and request, at least; whole passes and whole blocks
BLOCK_RUNS = 2  # runs of one candidate before the next one's turn
EXTRA_REQUESTS = 2  # at most, while the decision is near auto_rule's boundary ...
EXTRA_BUDGET_S = 120.0  # ... and the next request's expected device time fits in this


def settings_for(inputs: int) -> BenchSettings:
    """Warm-up and timed run counts of one request for ``inputs`` cycled inputs: whole
    passes over them, and whole blocks."""
    passes = max(1, inputs)
    whole = math.lcm(passes, BLOCK_RUNS)
    return BenchSettings(warmup_runs=passes * math.ceil(WARMUP_RUNS / passes),
                         runs=whole * math.ceil(TIMED_RUNS / whole))


def request_options(inputs: int) -> list[str]:
    """The ``edgert bench A B ...`` options that send the request ``DeviceTimer`` sends."""
    settings = settings_for(inputs)
    return ["--warmup", str(settings.warmup_runs), "--runs", str(settings.runs),
            "--block-runs", str(BLOCK_RUNS)]


Request = Callable[[list[str]], dict[str, Any]]  # block order -> interleaved measurement


def compare(names: list[str], inputs: int, baseline: str, request: Request) -> TimedCandidates:
    """Time ``names`` with ``request`` (one interleaved request per call, given its block
    order) until ``auto_rule`` settles or the extra requests or budget run out."""
    settings = settings_for(inputs)
    rounds = settings.runs // BLOCK_RUNS
    timed = TimedCandidates(block_runs=BLOCK_RUNS, warmup_runs=settings.warmup_runs)
    extra_s = 0.0
    for index in range(1 + EXTRA_REQUESTS):
        order = block_order(names, rounds * (index + 1))[rounds * len(names) * index:]
        measured = request(order)
        timed.add(measured["order"], {name: [ns / 1e6 for ns in raw["samples_ns"]]
                                      for name, raw in measured["raw"].items()}, measured["failed"])
        last_s = sum(ns for raw in measured["raw"].values() for ns in raw["samples_ns"]) / 1e9
        extra_s += last_s if index else 0.0
        if baseline not in timed.samples_ms or len(timed.samples_ms) < 2:
            break
        if not auto_rule.unsettled(auto_rule.decide(baseline, timed.samples_ms)):
            break
        if index == EXTRA_REQUESTS:
            timed.note = f"still near the rule's boundary after {EXTRA_REQUESTS} extra requests"
        elif extra_s + last_s > EXTRA_BUDGET_S:
            timed.note = (f"near the rule's boundary, but another request (~{last_s:.0f} s of runs) "
                          f"would exceed the {EXTRA_BUDGET_S:.0f} s budget for extra requests")
            break
    return timed


class DeviceTimer:
    """Candidates timed by the agent at the other end of ``client``."""

    def __init__(self, client: AgentClient, emulated: bool = False) -> None:
        self.client = client
        self.facts: dict[str, Any] = client.device_info()["device"]
        self.facts["emulated"] = bool(self.facts.get("emulated") or emulated)

    def compare(self, bundles: dict[str, Path], inputs: list[dict[str, np.ndarray]],
                baseline: str) -> TimedCandidates:
        """Every run's milliseconds of each bundle, timed interleaved on ``inputs`` in turn."""
        from edgert.device_agents.protocol import pack_array

        params = {"settings": settings_for(len(inputs)).to_dict(),
                  "cases": [{name: pack_array(np.asarray(v)) for name, v in feeds.items()}
                            for feeds in inputs]}
        models = {name: (path, "bundle") for name, path in bundles.items()}
        return compare(list(bundles), len(inputs), baseline,
                       lambda order: self.client.bench_interleaved(models, order, BLOCK_RUNS, params))
