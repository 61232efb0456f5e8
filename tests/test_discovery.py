"""Discovery on copied fixture trees (tools/make_sysfs_fixtures.py), never on a patched open()."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from edgert.device_agents import discovery, sysfs
from edgert.errors import SysfsError

FIXTURES = Path(__file__).parent / "fixtures" / "sysfs"


def board(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root, symlinks=True)
    return root


def recorded_vcgencmd(root: Path):
    """vcgencmd replaying outputs recorded under <board>/vcgencmd/<command>."""
    def run(args):
        path = root / "vcgencmd" / args[0]
        if not path.exists():
            raise SysfsError(f"vcgencmd {args[0]}: error=2 error_msg=\"Command not registered\"")
        return path.read_text()
    return run


def tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = os.readlink(p) if p.is_symlink() else p.read_bytes().hex()
    for dirpath, dirs, _ in os.walk(root):
        for d in dirs:
            p = Path(dirpath) / d
            if p.is_symlink():
                out[str(p.relative_to(root))] = "->" + os.readlink(p)
    return out


def test_committed_fixtures_match_the_generator(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_sysfs_fixtures", Path(__file__).parent.parent / "tools" / "make_sysfs_fixtures.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(tool.BOARDS)
    for name in tool.BOARDS:
        assert tree(tmp_path / name) == tree(FIXTURES / name), name


def test_raspberry_pi4(tmp_path):
    root = board(tmp_path, "raspberry_pi4")
    info = discovery.discover(str(root), vcgencmd=recorded_vcgencmd(root))
    assert info["cpufreq"] == [{
        "policy": "policy0", "cpus": [0, 1, 2, 3], "governor": "ondemand",
        "governors": ["conservative", "ondemand", "userspace", "powersave", "performance", "schedutil"],
        "frequencies_khz": list(range(600000, 1500001, 100000)),
        "cur_khz": 600000, "min_khz": 600000, "max_khz": 1500000}]
    assert info["devfreq"] == []
    assert info["power"] == []  # no power sensor, and pmic_read_adc is Pi 5 only
    assert info["thermal"] == [{"zone": "thermal_zone0", "type": "cpu-thermal", "celsius": 48.686}]
    flags = info["pi_throttled"]["flags"]
    assert info["pi_throttled"]["raw"] == "0x50005"
    assert [k for k, v in flags.items() if v] == ["under_voltage", "throttled",
                                                  "under_voltage_occurred", "throttled_occurred"]
    json.dumps(info)


def test_raspberry_pi5_pmic(tmp_path):
    root = board(tmp_path, "raspberry_pi5")
    info = discovery.discover(str(root), vcgencmd=recorded_vcgencmd(root))
    rails = {r["rail"]: r for r in info["power"]}
    assert len(rails) == 14
    core = rails["VDD_CORE"]
    assert (core["volts"], core["amps"], core["source"]) == (0.7206678, 0.7176, "vcgencmd pmic_read_adc")
    assert core["watts"] == pytest.approx(0.7206678 * 0.7176)
    assert rails["EXT5V"] == {"rail": "EXT5V", "volts": 5.1492, "amps": None, "watts": None,
                              "source": "vcgencmd pmic_read_adc"}
    assert info["pi_throttled"]["flags"] == {k: False for k in discovery.THROTTLED_BITS.values()}
    assert info["cpufreq"][0]["cur_khz"] == 2400000


def test_jetson_nano_old_ina3221x_driver(tmp_path):
    root = board(tmp_path, "jetson_nano")
    info = discovery.discover(str(root))
    assert info["power"] == [
        {"rail": "POM_5V_IN", "volts": 5.048, "amps": 1.104, "watts": 5.573, "source": "ina3221x"},
        {"rail": "POM_5V_GPU", "volts": 5.04, "amps": 0.04, "watts": 0.201, "source": "ina3221x"},
        {"rail": "POM_5V_CPU", "volts": 5.04, "amps": 0.318, "watts": 1.602, "source": "ina3221x"}]
    assert discovery.board_total(info["power"])["rail"] == "POM_5V_IN"
    (gpu,) = info["devfreq"]
    assert (gpu["name"], gpu["kind"], gpu["cur_hz"], gpu["max_hz"]) == ("57000000.gpu", "gpu", 76800000, 921600000)
    assert gpu["frequencies_hz"][0] == 76800000 and len(gpu["frequencies_hz"]) == 12
    assert [z["type"] for z in info["thermal"]][:3] == ["AO-therm", "CPU-therm", "GPU-therm"]
    assert "pi_throttled" not in info


def test_jetson_orin_hwmon_ina3221(tmp_path):
    root = board(tmp_path, "jetson_orin")
    info = discovery.discover(str(root))
    assert [(r["rail"], r["volts"], r["amps"], r["source"]) for r in info["power"]] == [
        ("VDD_IN", 5.016, 1.184, "hwmon:ina3221"),
        ("VDD_CPU_GPU_CV", 5.016, 0.296, "hwmon:ina3221"),
        ("VDD_SOC", 5.008, 0.448, "hwmon:ina3221")]  # the shunt-sum channel is skipped
    assert info["power"][0]["watts"] == pytest.approx(5.016 * 1.184)
    assert discovery.board_total(info["power"])["rail"] == "VDD_IN"
    kinds = {d["name"]: d["kind"] for d in info["devfreq"]}
    assert kinds == {"17000000.ga10b": "gpu", "15340000.vic": "other"}
    assert [(p["policy"], p["cpus"], p["cur_khz"]) for p in info["cpufreq"]] == [
        ("policy0", [0, 1, 2, 3], 1510400), ("policy4", [4, 5], 729600)]


def test_x86_laptop_and_rapl_wraparound(tmp_path):
    root = board(tmp_path, "x86_laptop")
    info = discovery.discover(str(root))
    assert [p["policy"] for p in info["cpufreq"]] == ["policy0", "policy1", "policy2", "policy3"]
    assert info["cpufreq"][2]["frequencies_khz"] == [1400000, 2100000, 2800000]  # sorted
    assert info["power"] == []  # RAPL is energy, not power: it needs two samples
    first = discovery.read_energy_counters(str(root))
    assert [c["counter"] for c in first] == ["package-0", "package-0/core", "package-0/uncore", "psys"]
    assert first[0]["joules"] == 123456.789012 and first[0]["max_joules"] == 262143.32885
    # The package counter wraps: 10 J before the top, then 5 J past zero = 15 J consumed.
    (root / "sys/class/powercap/intel-rapl:0/energy_uj").write_text(f"{262143328850 - 10_000_000}\n")
    before = discovery.read_energy_counters(str(root))
    (root / "sys/class/powercap/intel-rapl:0/energy_uj").write_text("5000000\n")
    after = discovery.read_energy_counters(str(root))
    (pkg, *_rest) = discovery.watts_from_samples(before, after)
    assert pkg["rail"] == "package-0" and pkg["source"] == "powercap:intel-rapl:0"
    assert pkg["watts"] == pytest.approx(15.0 / (after[0]["t"] - before[0]["t"]))


def test_energy_delta_rejects_unexplained_backwards_counter():
    assert discovery.energy_delta_j(10.0, 4.0, 20.0) == 14.0
    with pytest.raises(SysfsError):
        discovery.energy_delta_j(10.0, 4.0, None)


def test_get_throttled_rejects_garbage():
    with pytest.raises(SysfsError):
        discovery.parse_get_throttled("error=1 error_msg=\"Command not registered\"")


def test_reads_do_not_follow_links_out_of_the_root(tmp_path):
    root = board(tmp_path, "raspberry_pi4")
    secret = tmp_path / "outside.txt"
    secret.write_text("42\n")
    os.symlink(secret, root / "sys/class/thermal/thermal_zone0/evil")
    with pytest.raises(SysfsError, match="outside"):
        sysfs.read_text(str(root), "sys/class/thermal/thermal_zone0/evil")
    with pytest.raises(SysfsError):
        sysfs.read_text(str(root), "sys/../outside.txt")
