"""Frequency readers on the committed sysfs fixture trees (real files, no patching)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgert.errors import SysfsError
from edgert.variants.frequency import cpufreq_reader, devfreq_reader, emulated_settings

FIXTURES = Path(__file__).parent / "fixtures" / "sysfs"


def test_cpufreq_reader_follows_the_file(tmp_path: Path) -> None:
    root = tmp_path / "pi4"
    shutil.copytree(FIXTURES / "raspberry_pi4", root)
    read = cpufreq_reader("policy0", str(root))
    assert read() == 600000.0
    (root / "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq").write_text("1500000\n")
    assert read() == 1500000.0


def test_devfreq_reader() -> None:
    read = devfreq_reader("17000000.ga10b", str(FIXTURES / "jetson_orin"))
    assert read() == 306000000.0


def test_emulated_settings_cover_every_level() -> None:
    from edgert.device_agents.emulated import EmulatedDomain

    domain = EmulatedDomain(str(FIXTURES / "x86_laptop"), levels=(1.0, 0.75, 0.5))
    settings = emulated_settings(domain)
    assert [s.frequency for s in settings] == [1.0, 0.75, 0.5]
    assert settings[2].label == "emulated 0.5"


def test_emulated_levels_with_a_quota_under_two_bandwidth_slices_get_longer_periods(tmp_path: Path) -> None:
    from edgert.device_agents.emulated import EmulatedDomain

    proc = tmp_path / "proc"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/sched_cfs_bandwidth_slice_us").write_text("3000\n")
    domain = EmulatedDomain(str(FIXTURES / "x86_laptop"), levels=(1.0, 0.75, 0.5, 0.25), cpus=1,
                            proc_root=proc)
    assert [domain.period_for(level) for level in domain.levels] == [10000, 10000, 12000, 24000]
    assert [s.period_ms for s in emulated_settings(domain)] == [10.0, 10.0, 12.0, 24.0]
    assert domain.quota_us(0.25) == 6000 and domain.describe()["periods_us"] == [10000, 10000, 12000, 24000]
    assert EmulatedDomain(proc_root=tmp_path / "no-proc").min_quota_us == 2 * 5000  # the kernel's default slice
    assert EmulatedDomain(proc_root=proc, min_quota_us=0).period_for(0.25) == 10000  # stretching off
    with pytest.raises(SysfsError, match="maximum"):
        domain.period_for(0.005)  # 6 ms of quota would need a 1.2 s period
