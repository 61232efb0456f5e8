"""Frequency readers on the committed sysfs fixture trees (real files, no patching)."""
from __future__ import annotations

import shutil
from pathlib import Path

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
