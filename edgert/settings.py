"""Benchmark and sweep settings: frozen values built once (CLI/TOML) and passed down, units in names.

``SweepRequest`` is also what crosses the wire for ``sweep.run``: its defaults live here only,
``to_dict`` gives the msgpack-friendly form and ``from_dict`` checks what a peer sent.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Mapping
from typing import Any

from edgert.errors import ProtocolError, UsageError
from edgert.finite import is_finite_number


SCENARIOS = ("single-stream", "offline", "server")


MAX_DURATION_MS = 86_400_000.0  # a day
MAX_THREADS = 1024
MIN_RATE_QPS = 1e-3  # one query every ~17 minutes: below that a run never starts
MAX_RUNS = 10_000_000  # each sample is kept: 1e20 --runs ran until memory ran out
MAX_SAMPLE_RATE_HZ = 100_000.0
MAX_WAIT_S = 86_400.0  # --idle, --cool-timeout: a day
COOL_BELOW_C = (-40.0, 150.0)  # a board's thermal zones; NaN or -300 waited the whole timeout per point


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """How long and how often to run a model. ``runs`` fixes the count and turns adaptivity off."""

    warmup_runs: int = 5
    runs: int | None = None
    min_runs: int = 10
    max_runs: int = 100_000
    min_duration_ms: float = 1_000.0
    max_duration_ms: float = 10_000.0
    target_ci_fraction: float = 0.01  # stop when the 95% CI of the median is within +-1% of it
    threads: int | None = None
    seed: int = 0
    scenario: str = "single-stream"  # MLPerf LoadGen's: single-stream | offline | server (edgert/loadgen.py)
    rate_qps: float | None = None  # server: mean Poisson arrival rate
    concurrency: int = 1  # offline/server: workers, one session each

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_runs <= MAX_RUNS:
            raise UsageError(f"--warmup must be 0..{MAX_RUNS}")
        if self.runs is not None and not 1 <= self.runs <= MAX_RUNS:
            raise UsageError(f"--runs must be 1..{MAX_RUNS}")
        if not (0 <= self.min_duration_ms <= MAX_DURATION_MS and 0 < self.max_duration_ms <= MAX_DURATION_MS):
            # NaN passed '< 0' and was written to the JSON as NaN; inf ran for ever
            raise UsageError(f"--min-time and --max-time must be positive seconds up to {MAX_DURATION_MS / 1e3:g}")
        if self.max_duration_ms < self.min_duration_ms:
            raise UsageError("--max-time must not be below --min-time")
        if not 0 < self.target_ci_fraction < 1:
            raise UsageError("the target CI fraction must be between 0 and 1")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise UsageError(f"--threads must be 1..{MAX_THREADS}")  # ORT starts what it is asked for
        if self.seed < 0:
            raise UsageError("--seed must be >= 0")
        if self.scenario not in SCENARIOS:
            raise UsageError(f"--scenario must be one of {', '.join(SCENARIOS)}, not {self.scenario!r}")
        if (self.scenario == "server") != (self.rate_qps is not None):
            raise UsageError("--scenario server needs --rate QPS (and --rate only applies to server)")
        if self.rate_qps is not None and not MIN_RATE_QPS <= self.rate_qps < 1e6:
            raise UsageError(f"--rate must be {MIN_RATE_QPS:g}..1e6 queries per second")
        if self.concurrency < 1 or (self.concurrency > 1 and self.scenario == "single-stream"):
            raise UsageError("--concurrency must be >= 1, and above 1 only with --scenario offline or server")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


Freqs = str | tuple[int, ...] | None  # "all", explicit values (kHz for CPUs, Hz for devfreq), or none


@dataclasses.dataclass(frozen=True)
class SweepRequest:
    """What ``edgert sweep``/``calibrate`` asks the device to do (no model, no feeds: those travel
    apart). Settings are visited CPU clocks first, then GPU clocks, then emulated levels."""

    backend: str = "ort"
    settings: BenchSettings = BenchSettings()
    target: str = "host"
    dims: Mapping[str, int] = dataclasses.field(default_factory=dict)
    cpu_freqs: Freqs = None
    cpu_policies: tuple[str, ...] = ()  # default: every policy
    gpu_freqs: Freqs = None
    gpu_device: str | None = None  # default: the first devfreq GPU
    emulated_levels: tuple[float, ...] = ()  # CPU bandwidth shares (EMULATED, not clocks)
    emulated_period_us: int | None = None  # None: chosen by measurement on the device
    emulated_cpus: int | None = None  # None: settings.threads
    power: str = "auto"  # auto | none | RAIL | counter:NAME | meter+line://... | meter+um25c://...
    sample_rate_hz: float = 100.0
    idle_s: float = 1.0
    cool_below_c: float | None = None
    cool_timeout_s: float = 120.0
    pin_method: str = "minmax"
    sysfs_root: str | os.PathLike[str] | None = None  # None: "/" (the agent: its own --sysfs-root)
    journal_path: str | os.PathLike[str] | None = None  # None: the device's default journal
    all_levels: bool = False  # the model is an All-in-One file: time each level (calibrate)

    def __post_init__(self) -> None:
        for name in ("cpu_freqs", "gpu_freqs"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
            elif value is not None and value != "all" and not isinstance(value, tuple):
                raise UsageError(f"{name} must be 'all' or a list of frequencies, not {value!r}")
        for name in ("sysfs_root", "journal_path"):  # paths travel as text
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        for name in ("cpu_policies", "emulated_levels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if any(not 0 < level <= 1 for level in self.emulated_levels):
            raise UsageError("emulated levels are shares of the CPU in (0, 1]")
        if not (is_finite_number(self.sample_rate_hz) and 0 < self.sample_rate_hz <= MAX_SAMPLE_RATE_HZ):
            raise UsageError(f"--sample-rate must be above 0 and at most {MAX_SAMPLE_RATE_HZ:g} Hz")
        for option, seconds in (("--idle", self.idle_s), ("--cool-timeout", self.cool_timeout_s)):
            if not (is_finite_number(seconds) and 0 <= seconds <= MAX_WAIT_S):  # NaN: a traceback mid-sweep
                raise UsageError(f"{option} must be 0..{MAX_WAIT_S:g} seconds, got {seconds!r}")
        low, high = COOL_BELOW_C
        if self.cool_below_c is not None and not (is_finite_number(self.cool_below_c)
                                                  and low <= self.cool_below_c <= high):
            raise UsageError(f"--cool-below must be {low:g}..{high:g} degrees C, got {self.cool_below_c!r}")
        if self.pin_method not in ("minmax", "userspace"):
            raise UsageError(f"unknown pin method {self.pin_method!r} (minmax or userspace)")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(settings=self.settings.to_dict(), dims=dict(self.dims),
                   cpu_policies=list(self.cpu_policies), emulated_levels=list(self.emulated_levels))
        for name in ("cpu_freqs", "gpu_freqs"):
            if isinstance(out[name], tuple):
                out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "SweepRequest":
        """The request a peer sent; ``ProtocolError`` naming the first field that is wrong."""
        if not isinstance(data, Mapping):
            raise ProtocolError(f"a sweep request is a map, not {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ProtocolError(f"unknown sweep request field(s) {', '.join(map(str, unknown))}: "
                                "install the same edgert version on host and device", field=unknown[0])
        values = dict(data)
        try:
            if "settings" in values:
                values["settings"] = BenchSettings.from_dict(dict(values["settings"]))
            for name, value in values.items():
                _check_wire_type(name, value)
            return cls(**values)
        except (TypeError, ValueError, UsageError) as exc:
            raise ProtocolError(f"bad sweep request: {exc}") from exc


_NUMBER = (numbers.Real,)
_WIRE_TYPES: dict[str, tuple[type, ...]] = {
    "backend": (str,), "target": (str,), "power": (str,), "pin_method": (str,),
    "gpu_device": (str, type(None)), "sysfs_root": (str, type(None)), "journal_path": (str, type(None)),
    "sample_rate_hz": _NUMBER, "idle_s": _NUMBER, "cool_timeout_s": _NUMBER,
    "cool_below_c": (*_NUMBER, type(None)), "emulated_period_us": (int, type(None)),
    "emulated_cpus": (int, type(None)), "all_levels": (bool,), "dims": (Mapping,),
    "cpu_policies": (list, tuple), "emulated_levels": (list, tuple),
    "cpu_freqs": (str, list, tuple, type(None)), "gpu_freqs": (str, list, tuple, type(None)),
}


def _check_wire_type(name: str, value: Any) -> None:
    allowed = _WIRE_TYPES.get(name)
    if allowed is not None and not isinstance(value, allowed):
        raise TypeError(f"{name} is {type(value).__name__} {value!r}")
    if name in ("cpu_freqs", "gpu_freqs") and isinstance(value, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name} must list integer frequencies, not {value!r}")
    if name == "emulated_levels" and not all(isinstance(v, _NUMBER) for v in value):
        raise TypeError(f"emulated_levels must list numbers, not {value!r}")
