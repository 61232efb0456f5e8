"""Pick, before every run, the most accurate searched configuration that fits the budget now.

The file's Pareto sets (``edgert search``, ``ofa/pareto``) give, per measured frequency, the
configurations worth running, each with its predicted latency and accuracy. At the current
frequency ``f`` the model uses the set of the highest table frequency not above ``f`` (a
slower clock's predictions are safe at a faster one; below the table's lowest frequency the
lowest set, scaled by ``f_lowest / f`` as for a compute-bound model). Each prediction is
multiplied by the median observed/predicted ratio of that configuration's recent runs at
that frequency (the frequency's median with fewer than three: the same correction as
``AdaptiveModel``), and the choice follows ``AdaptiveModel``'s policy: switch up only with
``hysteresis`` margin, stay ``min_dwell_runs`` after a switch. Every Pareto configuration's
session is built at open and kept (a given ``VariantModel``'s configuration budget is
lifted), so a switch swaps a pointer.

The sessions are built from the graphs ``edgert search`` stored with the sets (no onnx).

Device-side: stdlib, numpy and ``runtime``.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import UsageError

from . import config as C
from . import tables, values
from .adaptive import MIN_OWN_RATIOS, Policy
from .runtime import VariantModel


@dataclasses.dataclass(frozen=True)
class Choice:
    time_s: float
    frequency: float
    config: str  # key of the configuration that ran
    accuracy: float
    predicted_ms: float
    observed_ms: float
    switched: bool
    reason: str


class ConfigAdaptiveModel:
    """A ``VariantModel`` that runs the searched Pareto configurations (``adaptive.Policy`` rules).
    Sets given as ``pareto`` (not the file's) may name configurations the file stores no graph
    for: on a host, pass ``graph_builder=config_graph.build`` with the open options."""

    def __init__(self, model: str | Path | VariantModel, budget_ms: float,
                 frequency_source: Callable[[], float], policy: Policy | None = None,
                 pareto: dict[str, Any] | None = None, **open_options: Any) -> None:
        budget_ms = values.number(budget_ms, "the latency budget (ms)")
        given = tables.check_given(tables.PARETO, pareto) if pareto is not None else None  # before opening
        open_options.setdefault("config_budget", None)
        self.model = model if isinstance(model, VariantModel) else VariantModel(model, **open_options)
        self.model._check_open()  # a closed model's file reads as one without Pareto sets
        self.model.configs.budget_bytes = None  # every Pareto configuration stays built (a given model's too)
        self.pareto = given or tables.load(self.model._file.tensors, tables.PARETO)
        if not self.pareto or not any(self.pareto["pareto"]):
            raise UsageError(f"{self.model.path} has no Pareto sets: run `edgert search` first")
        meta = self.model._file.meta
        self.frequencies = [float(f) for f in self.pareto["frequencies"]]
        # per frequency, most accurate first
        self.sets = [sorted(({**e, "cfg": C.decode(meta, e["config"])} for e in front),
                            key=lambda e: (-e["accuracy"], e["latency_ms"])) for front in self.pareto["pareto"]]
        self.budget_ms = float(budget_ms)
        self.policy = policy or Policy()
        self.frequency_source = frequency_source
        self.model.configs.warm(e["cfg"] for front in self.sets for e in front)
        self._recent: deque[tuple[float, str, float]] = deque(maxlen=self.policy.correction_window)
        self.choices: deque[Choice] = deque(maxlen=self.policy.log_size)
        self._freq: tuple[float, float] | None = None
        self._since_switch = self.policy.min_dwell_runs
        self.current: dict[str, Any] | None = None

    def frequency(self) -> float:
        now = time.monotonic()
        if self._freq is None or now - self._freq[0] >= self.policy.frequency_interval_s:
            self._freq = (now, values.number(self.frequency_source(), "the frequency source's reading"))
        return self._freq[1]

    def options(self, frequency: float) -> tuple[list[dict[str, Any]], float]:
        """The Pareto set used at ``frequency`` (most accurate first) and its latency scale."""
        below = [j for j, f in enumerate(self.frequencies) if f <= frequency]
        if below:
            return self.sets[max(below, key=lambda j: self.frequencies[j])], 1.0
        j = int(np.argmin(self.frequencies))
        return self.sets[j], self.frequencies[j] / frequency

    def _correction(self, frequency: float, key: str) -> float:
        here = [(k, r) for f, k, r in self._recent if f == frequency]
        own = [r for k, r in here if k == key]
        if len(own) >= MIN_OWN_RATIOS:
            return statistics.median(own)
        return statistics.median(r for _, r in here) if here else 1.0

    def predict(self, entry: dict[str, Any], frequency: float) -> float:
        _, scale = self.options(frequency)
        return entry["latency_ms"] * scale * self._correction(frequency, entry["key"])

    def choose(self, frequency: float) -> tuple[dict[str, Any], str]:
        front, _ = self.options(frequency)
        pred = [self.predict(e, frequency) for e in front]
        current = next((i for i, e in enumerate(front) if self.current and e["key"] == self.current["key"]), None)
        fits = [i for i, p in enumerate(pred) if p <= self.budget_ms]
        if current is not None and self._since_switch < self.policy.min_dwell_runs:
            return front[current], "dwell"
        if current is None or pred[current] > self.budget_ms:
            if not fits:
                return min(front, key=lambda e: e["latency_ms"]), "no configuration meets the budget: the fastest"
            return front[fits[0]], "over budget" if current is not None else "frequency changed"
        roomy = [i for i in fits if pred[i] <= self.budget_ms * (1 - self.policy.hysteresis)]
        if roomy and roomy[0] < current:
            return front[roomy[0]], "room for a more accurate configuration"
        return front[current], "stay"

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        frequency = self.frequency()
        entry, reason = self.choose(frequency)
        switched = self.current is None or entry["key"] != self.current["key"]
        if switched:
            self.model.select_config(entry["cfg"])
            self.current = entry
            self._since_switch = 0
        t0 = time.perf_counter_ns()
        out = self.model.run(feeds)
        self.observe(frequency, (time.perf_counter_ns() - t0) / 1e6, switched, reason)
        return out

    def observe(self, frequency: float, observed_ms: float, switched: bool = False, reason: str = "") -> Choice:
        if self.current is None:
            raise UsageError("observe() accounts a run of the current configuration: run() first")
        entry = self.current
        predicted = self.predict(entry, frequency)
        _, scale = self.options(frequency)
        self._recent.append((frequency, entry["key"], observed_ms / (entry["latency_ms"] * scale)))
        self._since_switch += 1
        choice = Choice(time.monotonic(), frequency, entry["key"], float(entry["accuracy"]), predicted,
                        observed_ms, switched, reason)
        self.choices.append(choice)
        return choice

    def log(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(c) for c in self.choices]

    def close(self) -> None:
        self.model.close()
