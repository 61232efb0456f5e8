"""Sample one power source in a background thread, on the timing loop's monotonic clock.

Timestamps come from ``time.perf_counter_ns`` like ``edgert.timing``'s, so the host can line
power samples up with inference runs. A source gives either instantaneous ``watts`` (rails,
meters) or a cumulative ``joules`` counter (RAPL, hwmon energy; unwrapped here). The rate is
``rate_hz`` but never faster than the sensor updates (hwmon ``update_interval``, meter refresh).
The sampler returns raw arrays only; averaging and energy happen on the host.

Also here: temperature reads and the thermal gate run before each sweep point.
"""
from __future__ import annotations

import shutil
import threading
import time
from typing import Any, Protocol

from edgert.errors import DeviceError, SysfsError, UsageError

from . import discovery, sysfs

DEFAULT_RATE_HZ = 100.0


class Source(Protocol):
    name: str
    kind: str  # "watts" or "joules"
    streaming: bool  # True: read() blocks until the sensor pushes a value (no sleeping between)
    min_interval_s: float  # the sensor's update interval: sampling faster repeats values

    def read(self) -> float | None: ...
    def close(self) -> None: ...


def _hwmon_interval_s(root: str, chips: set[str]) -> float:
    """Longest ``update_interval`` (ms, Documentation/hwmon/sysfs-interface.rst) of these chips."""
    longest = 0.0
    for hw in sysfs.list_dir(root, "sys/class/hwmon", "hwmon*"):
        d = f"sys/class/hwmon/{hw}"
        name = sysfs.read_text(root, f"{d}/name") if sysfs.exists(root, f"{d}/name") else hw
        ms = sysfs.read_optional_int(root, f"{d}/update_interval")
        if name in chips and ms is not None:
            longest = max(longest, ms / 1000.0)
    return longest


class RailSource:
    """The sum of named instantaneous rails (one rail: that rail) from ``discovery.read_power``."""

    kind = "watts"
    streaming = False

    def __init__(self, sysfs_root: str, rails: list[str], vcgencmd: discovery.Vcgencmd | None = None) -> None:
        self.root = sysfs_root
        self.rails = rails
        self.vcgencmd = vcgencmd
        self.name = "+".join(rails)
        found = {r["rail"]: r for r in discovery.read_power(sysfs_root, vcgencmd)}
        missing = [r for r in rails if r not in found or found[r]["watts"] is None]
        if missing:
            raise UsageError(f"no power reading for rail(s) {', '.join(missing)}; rails with "
                             f"power here: {', '.join(n for n, r in found.items() if r['watts'] is not None) or 'none'}")
        chips = {found[r]["source"].split(":", 1)[1] for r in rails if found[r]["source"].startswith("hwmon:")}
        self.min_interval_s = _hwmon_interval_s(sysfs_root, chips)
        if any(found[r]["source"].startswith("vcgencmd") for r in rails):
            self.min_interval_s = max(self.min_interval_s, 0.1)  # a subprocess per read

    def read(self) -> float:
        got = {r["rail"]: r["watts"] for r in discovery.read_power(self.root, self.vcgencmd)}
        missing = [r for r in self.rails if got.get(r) is None]
        if missing:
            raise SysfsError(f"rail {', '.join(missing)} gave no power reading", rails=missing)
        return float(sum(got[r] for r in self.rails))

    def close(self) -> None:
        pass


class CounterSource:
    """A cumulative energy counter (joules), unwrapped across ``max_energy_range_uj``."""

    kind = "joules"
    streaming = False
    min_interval_s = 0.0

    def __init__(self, sysfs_root: str, counter: str) -> None:
        self.root = sysfs_root
        self.name = counter
        self._last: tuple[float, float | None] | None = None
        self._total = 0.0
        if self._raw() is None:
            names = [c["counter"] for c in discovery.read_energy_counters(sysfs_root)]
            raise UsageError(f"no energy counter {counter!r}; counters here: {', '.join(names) or 'none'}")

    def _raw(self) -> tuple[float, float | None] | None:
        for c in discovery.read_energy_counters(self.root):
            if c["counter"] == self.name:
                return c["joules"], c["max_joules"]
        return None

    def read(self) -> float:
        raw = self._raw()
        if raw is None:
            raise SysfsError(f"energy counter {self.name} disappeared", counter=self.name)
        if self._last is not None:
            self._total += discovery.energy_delta_j(self._last[0], raw[0], raw[1])
        self._last = raw
        return self._total

    def close(self) -> None:
        pass


def open_source(spec: str, sysfs_root: str = "/") -> Source | None:
    """``auto``, ``none``, a rail name, ``counter:NAME`` or a ``meter+...`` URL -> a source.

    ``auto``: the board-total rail (Jetson VDD_IN/POM_5V_IN), else the sum of all rails with a
    power reading, else the first top-level energy counter (RAPL ``package-0``), else None.
    """
    if spec == "none":
        return None
    if spec.startswith("meter+"):
        from .meter import open_meter

        return open_meter(spec)
    if spec.startswith("counter:"):
        return CounterSource(sysfs_root, spec[len("counter:"):])
    vcgencmd = discovery.run_vcgencmd if shutil.which("vcgencmd") else None
    if spec != "auto":
        return RailSource(sysfs_root, [spec], vcgencmd)
    rails = discovery.read_power(sysfs_root, vcgencmd)
    total = discovery.board_total(rails)
    if total is not None and total["watts"] is not None:
        return RailSource(sysfs_root, [total["rail"]], vcgencmd)
    with_power = [r["rail"] for r in rails if r["watts"] is not None]
    if with_power:
        return RailSource(sysfs_root, with_power, vcgencmd)
    counters = [c["counter"] for c in discovery.read_energy_counters(sysfs_root) if "/" not in c["counter"]]
    return CounterSource(sysfs_root, counters[0]) if counters else None


class Sampler:
    """``start()`` a thread reading ``source``; ``stop()`` returns the raw samples.

    Returned dict: ``{"source", "kind", "interval_s", "t_ns": [...], "values": [...],
    "read_errors": int, "first_error": str | None}``; ``t_ns`` is the midpoint of each read
    (for a streaming meter: when its line arrived).
    """

    def __init__(self, source: Source, rate_hz: float = DEFAULT_RATE_HZ) -> None:
        if rate_hz <= 0:
            raise UsageError("the power sampling rate must be positive")
        self.source = source
        self.interval_s = max(1.0 / rate_hz, source.min_interval_s)
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        self._t: list[int] = []
        self._v: list[float] = []
        self._errors = 0
        self._first_error: str | None = None

    def start(self) -> Sampler:
        """Start sampling; a polled source has taken its first sample when this returns, so the
        samples bracket whatever the caller does next."""
        self._stop.clear()
        self._first.clear()
        self._t, self._v, self._errors, self._first_error = [], [], 0, None
        self._thread = threading.Thread(target=self._run, daemon=True, name="power-sampler")
        self._thread.start()
        if not self.source.streaming:
            self._first.wait(timeout=max(1.0, 2 * self.interval_s))
        return self

    def _read_once(self) -> None:
        t0 = time.perf_counter_ns()
        try:
            value = self.source.read()
        except (SysfsError, DeviceError) as exc:
            value = None
            self._errors += 1
            self._first_error = self._first_error or exc.message
        t1 = time.perf_counter_ns()
        if value is not None:
            self._t.append(t1 if self.source.streaming else (t0 + t1) // 2)
            self._v.append(float(value))

    def _run(self) -> None:
        next_tick = time.perf_counter()
        while True:
            stopping = self._stop.is_set()
            if stopping and self.source.streaming:
                return
            self._read_once()  # a polled source reads once more after stop(): the closing bracket
            self._first.set()
            if stopping:
                return
            if not self.source.streaming:
                next_tick += self.interval_s
                delay = next_tick - time.perf_counter()
                if delay < 0:  # fell behind (slow read): do not burst to catch up
                    next_tick = time.perf_counter()
                    delay = 0.0
                self._stop.wait(delay)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return {"source": self.source.name, "kind": self.source.kind, "interval_s": self.interval_s,
                "t_ns": self._t, "values": self._v, "read_errors": self._errors,
                "first_error": self._first_error}

    def sample_for(self, seconds: float) -> dict[str, Any]:
        """Sample for ``seconds`` while this thread waits (the idle baseline)."""
        self.start()
        time.sleep(seconds)
        return self.stop()


# --- temperatures ---------------------------------------------------------------------

def read_temperatures(sysfs_root: str = "/") -> dict[str, float]:
    """``{zone type (or zone name): °C}`` of every readable thermal zone."""
    out: dict[str, float] = {}
    for z in discovery.read_thermal(sysfs_root):
        key = z["type"] or z["zone"]
        out[key if key not in out else z["zone"]] = z["celsius"]
    return out


def thermal_gate(sysfs_root: str, below_c: float | None, timeout_s: float = 120.0,
                 poll_s: float = 1.0) -> dict[str, Any]:
    """Wait until the hottest zone is below ``below_c`` (None: do not wait).

    Returns ``{"below_c", "waited_s", "cooled", "max_c"}``; ``cooled`` is False when the timeout
    ran out (the point is measured anyway and the host warns).
    """
    start = time.monotonic()
    while True:
        temps = read_temperatures(sysfs_root)
        hottest = max(temps.values(), default=None)
        waited = time.monotonic() - start
        if below_c is None or hottest is None or hottest < below_c:
            return {"below_c": below_c, "waited_s": waited, "cooled": True, "max_c": hottest}
        if waited >= timeout_s:
            return {"below_c": below_c, "waited_s": waited, "cooled": False, "max_c": hottest}
        time.sleep(min(poll_s, max(0.0, timeout_s - waited)))
