"""Pick the most accurate level that fits a latency budget at the current clock frequency.

The budget bounds the median latency, so the prediction is a median too. For level L at
frequency f it interpolates the calibration table linearly in 1/f (latency = a + b/f is
exact for compute-bound work) and multiplies by a correction from the last
``correction_window`` runs: the median observed/table ratio of L's runs at f among them, or,
with fewer than three, of all runs at f among them (1.0 if none). A median, because a mean
(the former EWMA of log ratios) follows the slow tail of a bimodal distribution and so
predicted 1.3x for a level running at 0.98x of its entry (measured on the emulated domain);
per frequency and level, because the table's error differs between settings and levels
(on the emulated domain single entries are off by 2x either way) and a correction learnt at
one frequency misled the choice after the next change; only recent runs, so a level that
was slow during a burst of load is tried again. The table is used as measured: an entry
that is too pessimistic is never corrected (its level is never tried), so smoothing it
upwards, e.g. to a monotone envelope, kept levels out of reach (one emulated replay each,
load average about 1: CV of the per-level p50s 33% with the envelope, 8% without).

Switching up needs the prediction to clear the budget by a hysteresis margin, every switch
waits a minimum dwell, and an upgrade is skipped when the switch itself would break the
budget. Each run is logged.

Device-side: stdlib, numpy and the runtime's engine.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgert.errors import UsageError

from . import values
from .runtime import Level, VariantModel

MIN_OWN_RATIOS = 3  # observations of a level before its own median replaces the frequency's


@dataclasses.dataclass(frozen=True)
class Policy:
    hysteresis: float = 0.1  # switch up only if the prediction is below budget * (1 - hysteresis)
    min_dwell_runs: int = 5  # runs to stay on a level after a switch
    correction_window: int = 20  # recent runs whose observed/table ratios make the correction
    frequency_interval_s: float = 0.05  # read the frequency at most this often
    log_size: int = 100_000

    def __post_init__(self) -> None:
        hysteresis = values.number(self.hysteresis, "policy hysteresis", low_ok=True)
        values.number(self.frequency_interval_s, "policy frequency_interval_s", low_ok=True)
        for name, low in (("correction_window", 1), ("log_size", 1), ("min_dwell_runs", 0)):
            values.whole(getattr(self, name), f"policy {name}", low)
        if not hysteresis < 1:
            raise UsageError(f"policy hysteresis must be in [0, 1), got {self.hysteresis!r}")


@dataclasses.dataclass(frozen=True)
class Decision:
    time_s: float  # monotonic
    frequency: float
    level: int
    ratio: float
    predicted_ms: float  # corrected prediction for the level that ran
    observed_ms: float
    correction: float  # the level's correction at this frequency after this run
    switched: bool
    reason: str


def _check_table(table: dict[str, Any], levels: int) -> None:
    """A table given in place of the file's: one latency row per level, one finite latency > 0
    per distinct, ascending frequency > 0 (a short row was an IndexError, text a ValueError,
    NaN used as is, a repeated frequency a division by zero)."""
    freqs, rows = table["frequencies"], table["p50_ms"]
    if not isinstance(rows, list) or len(rows) != levels:
        raise UsageError(f"the calibration table has {len(rows) if isinstance(rows, list) else 'no'} latency "
                         f"rows; the file has {levels} levels")
    if not isinstance(freqs, list) or not freqs:
        raise UsageError("the calibration table needs at least one frequency")
    numbers = [values.number(f, "a calibration frequency") for f in freqs]
    if any(b <= a for a, b in zip(numbers, numbers[1:])):
        raise UsageError(f"the calibration table's frequencies must be distinct and ascending, got {freqs}")
    for row in rows:
        if not isinstance(row, list) or len(row) != len(freqs):
            raise UsageError(f"each calibration row needs one latency per frequency ({len(freqs)}), got {row!r}")
        for v in row:
            values.number(v, "a calibration latency (ms)")


def predict_ms(frequencies: list[float], latencies: list[float], frequency: float) -> float:
    """Latency at ``frequency``, linear in 1/f between and above the measured points; below the
    lowest, that point's latency scaled by f_lowest / f (compute-bound work, the slowest it gets:
    a line through two points a few percent of noise apart can predict a faster run at a
    slower clock)."""
    f = np.asarray(frequencies, dtype=np.float64)
    y = np.asarray(latencies, dtype=np.float64)
    lowest = int(np.argmin(f))
    if len(f) == 1 or frequency < f[lowest]:
        return float(y[lowest] * f[lowest] / frequency)
    inv = 1.0 / f[::-1]  # ascending in 1/f
    yy = y[::-1]
    x = 1.0 / frequency
    i = int(np.clip(np.searchsorted(inv, x) - 1, 0, len(inv) - 2))
    slope = (yy[i + 1] - yy[i]) / (inv[i + 1] - inv[i])
    return float(max(yy[i] + slope * (x - inv[i]), 1e-6))


class AdaptiveModel:
    """A ``VariantModel`` that chooses its level before every run."""

    def __init__(self, model: str | Path | VariantModel, budget_ms: float,
                 frequency_source: Callable[[], float], policy: Policy | None = None,
                 table: dict[str, Any] | None = None, **open_options: Any) -> None:
        budget_ms = values.number(budget_ms, "the latency budget (ms)")
        self.model = model if isinstance(model, VariantModel) else VariantModel(model, **open_options)
        self.table = table or self.model.calibration
        if not self.table:
            raise UsageError(f"{self.model.path} has no calibration table: run calibrate first")
        if not isinstance(self.table, dict) or not {"frequencies", "p50_ms"} <= set(self.table):
            raise UsageError("a calibration table has 'frequencies' and 'p50_ms' (edgert calibrate writes one)")
        _check_table(self.table, len(self.model.levels))
        self.p50_ms = self.table["p50_ms"]
        self.budget_ms = float(budget_ms)
        self.policy = policy or Policy()
        self.frequency_source = frequency_source
        self._recent: deque[tuple[float, int, float]] = deque(maxlen=self.policy.correction_window)
        self.decisions: deque[Decision] = deque(maxlen=self.policy.log_size)
        self._freq: tuple[float, float] | None = None  # (monotonic time read, value)
        self._since_switch = self.policy.min_dwell_runs  # free to choose on the first run
        self.switch_cost_ms = self._measure_switch_ms()

    def _measure_switch_ms(self) -> float:
        current = self.model.level.index
        times = []
        for i in range(21):
            t0 = time.perf_counter_ns()
            self.model.select_index(i % len(self.model.levels))
            times.append(time.perf_counter_ns() - t0)
        self.model.select_index(current)
        return float(np.median(times)) / 1e6

    @property
    def level(self) -> Level:
        return self.model.level

    def frequency(self) -> float:
        now = time.monotonic()
        if self._freq is None or now - self._freq[0] >= self.policy.frequency_interval_s:
            self._freq = (now, values.number(self.frequency_source(), "the frequency source's reading"))
        return self._freq[1]

    def predict(self, index: int, frequency: float) -> float:
        """Uncorrected table prediction for level ``index`` at ``frequency``."""
        return predict_ms(self.table["frequencies"], self.table["p50_ms"][index], frequency)

    def corrections(self, frequency: float) -> list[float]:
        """Each level's correction at ``frequency`` (module docstring)."""
        here = [(level, ratio) for f, level, ratio in self._recent if f == frequency]
        fallback = statistics.median(r for _, r in here) if here else 1.0
        out = []
        for i in range(len(self.model.levels)):
            own = [r for level, r in here if level == i]
            out.append(statistics.median(own) if len(own) >= MIN_OWN_RATIOS else fallback)
        return out

    def choose(self, frequency: float) -> tuple[int, str]:
        """The level to run next and why (does not switch)."""
        pred = [self.predict(i, frequency) * c for i, c in enumerate(self.corrections(frequency))]
        current = self.model.level.index
        if self._since_switch < self.policy.min_dwell_runs:
            return current, "dwell"
        fits = [i for i, p in enumerate(pred) if p <= self.budget_ms]
        if pred[current] > self.budget_ms:
            if not fits:
                return len(pred) - 1, "no level meets the budget: running the smallest"
            return fits[0], "over budget"
        roomy = [i for i in fits if pred[i] <= self.budget_ms * (1 - self.policy.hysteresis)]
        if roomy and roomy[0] < current:
            if pred[roomy[0]] + self.switch_cost_ms > self.budget_ms:
                return current, "upgrade would not pay for the switch"
            return roomy[0], "room for a more accurate level"
        return current, "stay"

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        frequency, switched, reason = self.prepare()
        t0 = time.perf_counter_ns()
        out = self.model.run(feeds)
        self.observe(frequency, (time.perf_counter_ns() - t0) / 1e6, switched, reason)
        return out

    def prepare(self) -> tuple[float, bool, str]:
        """What ``run`` does before inference: read the frequency, choose, switch. Returns the
        frequency, whether it switched, and why."""
        frequency = self.frequency()
        index, reason = self.choose(frequency)
        switched = index != self.model.level.index
        if switched:
            self.model.select_index(index)
            self._since_switch = 0
        return frequency, switched, reason

    def observe(self, frequency: float, observed_ms: float, switched: bool = False, reason: str = "") -> Decision:
        """What ``run`` does after inference: account one run of the current level (for callers
        that time inference themselves)."""
        index = self.model.level.index
        self._since_switch += 1
        base = self.predict(index, frequency)
        predicted = base * self.corrections(frequency)[index]
        self._recent.append((frequency, index, observed_ms / base))
        decision = Decision(time.monotonic(), frequency, index, self.model.level.ratio, predicted, observed_ms,
                            self.corrections(frequency)[index], switched, reason)
        self.decisions.append(decision)
        return decision

    def log(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(d) for d in self.decisions]

    def close(self) -> None:
        self.model.close()
