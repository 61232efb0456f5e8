"""Frequency readers for ``AdaptiveModel`` and frequency settings for ``calibrate``.

A reader is a plain ``Callable[[], float]``; its unit is the calibration table's unit
(cpufreq: kHz, devfreq: Hz, the emulated domain: a bandwidth fraction). Settings are
context managers that hold the device at one frequency while calibration measures.

Device-side: stdlib and ``device_agents`` (sysfs readers take a root path, so tests run
on fixture trees); the host's ``calibrate`` imports ``FrequencySetting`` from here, never
the other way round.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class FrequencySetting:
    """A frequency in the reader's unit, and a context manager factory holding the device there.

    ``period_ms``: the CPU-bandwidth period of an emulated level (0 for a real clock): the
    quota stalls the work once per period, so a timing window must span many of them."""

    frequency: float
    apply: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    label: str = ""
    period_ms: float = 0.0


def cpufreq_reader(policy: str = "policy0", sysfs_root: str = "/") -> Callable[[], float]:
    """Current frequency of a cpufreq policy in kHz (``scaling_cur_freq``)."""
    from edgert.device_agents import sysfs
    from edgert.device_agents.discovery import cpufreq_dir

    rel = f"{cpufreq_dir(policy)}/scaling_cur_freq"
    return lambda: float(sysfs.read_int(sysfs_root, rel))


def devfreq_reader(device: str, sysfs_root: str = "/") -> Callable[[], float]:
    """Current frequency of a devfreq device in Hz (``/sys/class/devfreq/NAME/cur_freq``)."""
    from edgert.device_agents import sysfs

    rel = f"sys/class/devfreq/{device}/cur_freq"
    return lambda: float(sysfs.read_int(sysfs_root, rel))


def emulated_settings(domain: Any) -> list[FrequencySetting]:
    """One setting per level of a ``device_agents.emulated.EmulatedDomain`` (EMULATED, not a clock),
    each with its level's own period (low levels run at longer periods)."""
    return [FrequencySetting(level, lambda level=level: domain.pinned(level), f"emulated {level:g}",
                             period_ms=domain.period_for(level) / 1e3)
            for level in domain.levels]
