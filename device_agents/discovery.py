"""What a board offers: CPU/devfreq clocks, power rails, energy counters, temperatures.

Every reader takes ``sysfs_root`` (default "/") and returns plain JSON-serialisable
dicts whose keys carry the unit (``cur_khz``, ``frequencies_hz``, ``volts``, ``celsius``).
File names and units follow the kernel documentation cited at each reader; the
Raspberry Pi readers take an injectable ``vcgencmd`` callable instead of a sysfs tree.
"""
from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from edgert.errors import SysfsError

from . import sysfs

Vcgencmd = Callable[[Sequence[str]], str]
Root = str

# of_node names of Jetson GPUs (Nano/TX1 gm20b shows as "gpu", TX2 gp10b, Xavier gv11b, Orin ga10b).
GPU_OF_NAMES = frozenset({"gpu", "gv11b", "gp10b", "ga10b", "gm20b"})
# The rail that measures the whole board's input, per Jetson generation:
# Nano/TX2 NX ``POM_5V_IN``, Xavier/Orin ``VDD_IN``.
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
# hwmon drivers whose in1/curr1/power1 belong to the same channel (Documentation/hwmon/ina2xx.rst).
_INA2XX = frozenset({"ina219", "ina220", "ina226", "ina230", "ina231", "ina238", "ina260"})


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split() if t.lstrip("-").isdigit()]


def _text_or_none(root: Root, rel: str) -> str | None:
    try:
        return sysfs.read_text(root, rel) if sysfs.exists(root, rel) else None
    except SysfsError:
        return None


# --- clocks -------------------------------------------------------------------------

def cpufreq_dir(policy: str) -> str:
    """Root-relative directory of a policy name as returned by ``read_cpufreq``."""
    if policy.startswith("policy"):
        return f"sys/devices/system/cpu/cpufreq/{policy}"
    return f"sys/devices/system/cpu/{policy}/cpufreq"


def read_cpufreq(sysfs_root: Root = "/") -> list[dict[str, Any]]:
    """CPU frequency policies (Documentation/admin-guide/pm/cpufreq.rst, values in kHz).

    Uses ``cpufreq/policy*`` and falls back to per-CPU ``cpuN/cpufreq`` directories on old
    kernels; ``frequencies_khz`` is empty when the driver has no frequency table
    (intel_pstate, amd-pstate).
    """
    base = "sys/devices/system/cpu"
    names = sysfs.list_dir(sysfs_root, f"{base}/cpufreq", "policy*")
    if not names:
        names = [c for c in sysfs.list_dir(sysfs_root, base, "cpu[0-9]*")
                 if sysfs.exists(sysfs_root, f"{base}/{c}/cpufreq/scaling_governor")]
    out, seen = [], set()
    for name in names:
        d = cpufreq_dir(name)
        cpus = _ints(_text_or_none(sysfs_root, f"{d}/affected_cpus")
                     or _text_or_none(sysfs_root, f"{d}/related_cpus") or "")
        if not name.startswith("policy"):
            cpus = cpus or [int(name[3:])]
            if tuple(cpus) in seen:  # per-CPU links of one shared policy
                continue
            seen.add(tuple(cpus))
        out.append({
            "policy": name,
            "cpus": cpus,
            "governor": _text_or_none(sysfs_root, f"{d}/scaling_governor"),
            "governors": (_text_or_none(sysfs_root, f"{d}/scaling_available_governors") or "").split(),
            "frequencies_khz": sorted(_ints(
                _text_or_none(sysfs_root, f"{d}/scaling_available_frequencies") or "")),
            "cur_khz": sysfs.read_optional_int(sysfs_root, f"{d}/scaling_cur_freq"),
            "min_khz": sysfs.read_optional_int(sysfs_root, f"{d}/scaling_min_freq"),
            "max_khz": sysfs.read_optional_int(sysfs_root, f"{d}/scaling_max_freq"),
        })
    return out


def read_devfreq(sysfs_root: Root = "/") -> list[dict[str, Any]]:
    """devfreq devices (Documentation/ABI/testing/sysfs-class-devfreq, values in Hz).

    ``kind`` is "gpu" when ``device/of_node/name`` is a known GPU node name.
    """
    out = []
    for name in sysfs.list_dir(sysfs_root, "sys/class/devfreq"):
        d = f"sys/class/devfreq/{name}"
        of_name = _text_or_none(sysfs_root, f"{d}/device/of_node/name")
        out.append({
            "name": name,
            "kind": "gpu" if of_name in GPU_OF_NAMES else "other",
            "governor": _text_or_none(sysfs_root, f"{d}/governor"),
            "frequencies_hz": sorted(_ints(_text_or_none(sysfs_root, f"{d}/available_frequencies") or "")),
            "cur_hz": sysfs.read_optional_int(sysfs_root, f"{d}/cur_freq"),
            "min_hz": sysfs.read_optional_int(sysfs_root, f"{d}/min_freq"),
            "max_hz": sysfs.read_optional_int(sysfs_root, f"{d}/max_freq"),
        })
    return out


# --- power rails --------------------------------------------------------------------

def _rail(rail: str, volts: float | None, amps: float | None, watts: float | None,
          source: str) -> dict[str, Any]:
    if watts is None and volts is not None and amps is not None:
        watts = volts * amps
    return {"rail": rail, "volts": volts, "amps": amps, "watts": watts, "source": source}


def _milli(root: Root, rel: str) -> float | None:
    v = sysfs.read_optional_int(root, rel)
    return None if v is None else v / 1000.0


def _read_ina3221_hwmon(root: Root, d: str) -> list[dict[str, Any]]:
    """Documentation/hwmon/ina3221.rst: in[123]_input mV, curr[123]_input mA, in7 = shunt sum."""
    rails = []
    for n in (1, 2, 3):
        label = _text_or_none(root, f"{d}/in{n}_label") or f"ina3221_ch{n}"
        if "sum of shunt" in label.lower() or sysfs.read_optional_int(root, f"{d}/in{n}_enable") == 0:
            continue
        volts, amps = _milli(root, f"{d}/in{n}_input"), _milli(root, f"{d}/curr{n}_input")
        if volts is not None or amps is not None:
            rails.append(_rail(label, volts, amps, None, "hwmon:ina3221"))
    return rails


def _read_generic_hwmon(root: Root, d: str, chip: str) -> list[dict[str, Any]]:
    """Documentation/hwmon/sysfs-interface.rst: power*_input in microwatts."""
    rails = []
    files = sysfs.list_dir(root, d, "power*_input")
    for f in files:
        n = f[len("power"):-len("_input")]
        label = _text_or_none(root, f"{d}/power{n}_label") or (chip if len(files) == 1 else f"{chip}_{n}")
        uw = sysfs.read_optional_int(root, f"{d}/{f}")
        volts = amps = None
        if chip in _INA2XX:  # bus voltage (mV) and current (mA) share the channel index
            volts, amps = _milli(root, f"{d}/in{n}_input"), _milli(root, f"{d}/curr{n}_input")
        rails.append(_rail(label, volts, amps, None if uw is None else uw / 1e6, f"hwmon:{chip}"))
    return rails


def _read_ina3221x(root: Root) -> list[dict[str, Any]]:
    """Older Jetson driver (L4T 32.x): rail_name_N, in_voltageN_input mV, in_currentN_input mA,
    in_powerN_input mW under /sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:deviceM/."""
    rails = []
    base = "sys/bus/i2c/drivers/ina3221x"
    for dev in sysfs.list_dir(root, base, "*-*"):
        for iio in sysfs.list_dir(root, f"{base}/{dev}", "iio:device*"):
            d = f"{base}/{dev}/{iio}"
            for f in sysfs.list_dir(root, d, "rail_name_*"):
                n = f.rsplit("_", 1)[1]
                mw = sysfs.read_optional_int(root, f"{d}/in_power{n}_input")
                rails.append(_rail(sysfs.read_text(root, f"{d}/{f}"),
                                   _milli(root, f"{d}/in_voltage{n}_input"),
                                   _milli(root, f"{d}/in_current{n}_input"),
                                   None if mw is None else mw / 1000.0, "ina3221x"))
    return rails


# One line per ADC channel, e.g. "   VDD_CORE_A current(7)=0.71760000A" or
# "   EXT5V_V volt(24)=5.14920000V" (format as printed by Pi 5 firmware; see the fixture).
_PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([-0-9.]+)[AV]\s*$")


def parse_pmic_read_adc(text: str) -> list[dict[str, Any]]:
    """Rails from ``vcgencmd pmic_read_adc`` output; EXT5V/BATT have a voltage only."""
    volts: dict[str, float] = {}
    amps: dict[str, float] = {}
    order: list[str] = []
    for line in text.splitlines():
        m = _PMIC_LINE.match(line)
        if not m:
            continue
        name, unit, value = m.groups()
        if name not in order:
            order.append(name)
        (amps if unit == "A" else volts)[name] = float(value)
    return [_rail(n, volts.get(n), amps.get(n), None, "vcgencmd pmic_read_adc") for n in order]


def read_power(sysfs_root: Root = "/", vcgencmd: Vcgencmd | None = None) -> list[dict[str, Any]]:
    """Instantaneous power rails from hwmon, the old Jetson ina3221x driver and the Pi 5 PMIC.

    Energy-only sources (RAPL, hwmon ``energy*_input``) need two samples: see ``EnergyMeter``.
    """
    rails = []
    for hw in sysfs.list_dir(sysfs_root, "sys/class/hwmon", "hwmon*"):
        d = f"sys/class/hwmon/{hw}"
        chip = _text_or_none(sysfs_root, f"{d}/name") or hw
        rails += _read_ina3221_hwmon(sysfs_root, d) if chip == "ina3221" else \
            _read_generic_hwmon(sysfs_root, d, chip)
    rails += _read_ina3221x(sysfs_root)
    if vcgencmd is not None:
        try:
            rails += parse_pmic_read_adc(vcgencmd(["pmic_read_adc"]))
        except SysfsError:
            pass  # Pi 4 and older firmware have no PMIC ADC
    return rails


def board_total(rails: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The rail that measures the whole board (Jetson ``VDD_IN``/``POM_5V_IN``), if present."""
    for name in TOTAL_RAILS:
        for r in rails:
            if r["rail"] == name:
                return r
    return None


# --- energy counters ----------------------------------------------------------------

def read_energy_counters(sysfs_root: Root = "/") -> list[dict[str, Any]]:
    """Monotonic energy counters: RAPL powercap ``energy_uj`` (wraps at
    ``max_energy_range_uj``, Documentation/power/powercap/powercap.rst) and hwmon
    ``energy*_input`` (µJ). Each: ``{counter, joules, max_joules, source, t}``."""
    out = []
    t = time.monotonic()
    names: dict[str, str] = {}
    for zone in sysfs.list_dir(sysfs_root, "sys/class/powercap"):
        d = f"sys/class/powercap/{zone}"
        uj = sysfs.read_optional_int(sysfs_root, f"{d}/energy_uj")
        if uj is None:
            continue
        name = _text_or_none(sysfs_root, f"{d}/name") or zone
        parent = zone.rsplit(":", 1)[0]
        names[zone] = f"{names[parent]}/{name}" if parent in names else name
        max_uj = sysfs.read_optional_int(sysfs_root, f"{d}/max_energy_range_uj")
        out.append({"counter": names[zone], "joules": uj / 1e6,
                    "max_joules": None if max_uj is None else max_uj / 1e6,
                    "source": f"powercap:{zone}", "t": t})
    for hw in sysfs.list_dir(sysfs_root, "sys/class/hwmon", "hwmon*"):
        d = f"sys/class/hwmon/{hw}"
        chip = _text_or_none(sysfs_root, f"{d}/name") or hw
        for f in sysfs.list_dir(sysfs_root, d, "energy*_input"):
            n = f[len("energy"):-len("_input")]
            uj = sysfs.read_optional_int(sysfs_root, f"{d}/{f}")
            if uj is not None:
                label = _text_or_none(sysfs_root, f"{d}/energy{n}_label") or f"{chip}_energy{n}"
                out.append({"counter": label, "joules": uj / 1e6, "max_joules": None,
                            "source": f"hwmon:{chip}", "t": t})
    return out


def energy_delta_j(first_j: float, second_j: float, max_j: float | None) -> float:
    """Energy between two counter reads, allowing one wrap-around at ``max_j``."""
    if second_j >= first_j:
        return second_j - first_j
    if not max_j:
        raise SysfsError(f"energy counter went backwards ({first_j} J -> {second_j} J) "
                         "and has no known range", first_j=first_j, second_j=second_j)
    return second_j + max_j - first_j


def watts_from_samples(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average power per counter between two ``read_energy_counters`` results, as rails."""
    before = {c["counter"]: c for c in first}
    rails = []
    for c in second:
        a = before.get(c["counter"])
        dt = c["t"] - a["t"] if a else 0.0
        if a is None or dt <= 0:
            continue
        joules = energy_delta_j(a["joules"], c["joules"], c["max_joules"])
        rails.append(_rail(c["counter"], None, None, joules / dt, c["source"]))
    return rails


# --- temperatures and Pi state --------------------------------------------------------

def read_thermal(sysfs_root: Root = "/") -> list[dict[str, Any]]:
    """Thermal zones (Documentation/driver-api/thermal/sysfs-api.rst: ``temp`` in m°C)."""
    out = []
    for zone in sysfs.list_dir(sysfs_root, "sys/class/thermal", "thermal_zone*"):
        d = f"sys/class/thermal/{zone}"
        milli = sysfs.read_optional_int(sysfs_root, f"{d}/temp")
        if milli is not None:  # some zones fail reads while their sensor sleeps
            out.append({"zone": zone, "type": _text_or_none(sysfs_root, f"{d}/type"),
                        "celsius": milli / 1000.0})
    return out


# ``vcgencmd get_throttled`` bits (raspberrypi.com/documentation/computers/os.html#get_throttled).
THROTTLED_BITS = {
    0: "under_voltage", 1: "arm_freq_capped", 2: "throttled", 3: "soft_temp_limit",
    16: "under_voltage_occurred", 17: "arm_freq_capped_occurred",
    18: "throttled_occurred", 19: "soft_temp_limit_occurred",
}


def parse_get_throttled(text: str) -> dict[str, Any]:
    """Decode ``throttled=0x50005`` into its named flags."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not m:
        raise SysfsError(f"unexpected vcgencmd get_throttled output: {text.strip()!r}")
    value = int(m.group(1), 0)
    return {"raw": m.group(1), "flags": {name: bool(value >> bit & 1)
                                         for bit, name in THROTTLED_BITS.items()}}


def read_pi_throttled(vcgencmd: Vcgencmd) -> dict[str, Any] | None:
    try:
        return parse_get_throttled(vcgencmd(["get_throttled"]))
    except SysfsError:
        return None


def run_vcgencmd(args: Sequence[str]) -> str:
    """The real ``vcgencmd``; pass it to ``discover`` on a Raspberry Pi."""
    try:
        done = subprocess.run(["vcgencmd", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SysfsError(f"cannot run vcgencmd {' '.join(args)}: {exc}") from exc
    if done.returncode != 0 or "error" in done.stdout.lower():
        raise SysfsError(f"vcgencmd {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def discover(sysfs_root: Root = "/", vcgencmd: Vcgencmd | None = None,
             energy_interval_s: float = 0.0) -> dict[str, Any]:
    """Everything above in one JSON-serialisable dict.

    With ``energy_interval_s > 0`` the energy counters are read twice that far apart and
    their average power is appended to ``power`` (otherwise counters are not sampled).
    """
    power = read_power(sysfs_root, vcgencmd)
    if energy_interval_s > 0:
        first = read_energy_counters(sysfs_root)
        if first:
            time.sleep(energy_interval_s)
            power += watts_from_samples(first, read_energy_counters(sysfs_root))
    info: dict[str, Any] = {
        "cpufreq": read_cpufreq(sysfs_root),
        "devfreq": read_devfreq(sysfs_root),
        "power": power,
        "thermal": read_thermal(sysfs_root),
    }
    if vcgencmd is not None:
        throttled = read_pi_throttled(vcgencmd)
        if throttled is not None:
            info["pi_throttled"] = throttled
    return info
