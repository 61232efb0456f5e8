"""The power sampler and thermal gate on copied fixture sysfs trees (real files, real threads)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edgert.device_agents.sampler import (CounterSource, RailSource, Sampler, open_source,
                                   read_temperatures, thermal_gate)
from edgert.errors import UsageError

from test_discovery import board

HWMON = "sys/class/hwmon/hwmon1"  # jetson_orin's INA3221: VDD_IN = in1 mV x curr1 mA
VDD_IN_W = 5.016 * 1.184


def test_rail_samples_are_on_the_timing_clock_and_follow_the_rail(tmp_path):
    root = board(tmp_path, "jetson_orin")
    sampler = Sampler(RailSource(str(root), ["VDD_IN"]), rate_hz=200)
    before = time.perf_counter_ns()
    sampler.start()
    time.sleep(0.15)
    (root / HWMON / "curr1_input").write_text("2000\n")  # the load doubles, near enough
    time.sleep(0.15)
    block = sampler.stop()
    after = time.perf_counter_ns()
    t, v = block["t_ns"], block["values"]
    assert block["kind"] == "watts" and block["source"] == "VDD_IN" and block["read_errors"] == 0
    assert before < t[0] and t[-1] < after and t == sorted(t)
    # start() returns after the first read and stop() reads once more, whatever the scheduler
    # did in between; the rate caps the count (a loaded machine gives fewer, never more)
    assert 2 <= len(t) <= (after - before) / 1e9 * 200 + 2
    assert v[0] == pytest.approx(VDD_IN_W) and v[-1] == pytest.approx(5.016 * 2.0)
    assert set(round(x, 6) for x in v) == {round(VDD_IN_W, 6), round(5.016 * 2.0, 6)}


def test_rate_is_bounded_by_the_sensors_update_interval(tmp_path):
    root = board(tmp_path, "jetson_orin")
    (root / HWMON / "update_interval").write_text("50\n")  # ms, hwmon sysfs-interface
    sampler = Sampler(RailSource(str(root), ["VDD_IN", "VDD_SOC"]), rate_hz=1000)
    assert sampler.interval_s == 0.05
    before = time.perf_counter_ns()
    block = sampler.sample_for(0.3)
    elapsed_s = (time.perf_counter_ns() - before) / 1e9
    assert 2 <= len(block["values"]) <= elapsed_s / 0.05 + 2  # never faster than 20 Hz
    assert block["values"][0] == pytest.approx(VDD_IN_W + 5.008 * 0.448)


def test_failed_reads_are_counted_not_fatal(tmp_path):
    root = board(tmp_path, "jetson_orin")
    sampler = Sampler(RailSource(str(root), ["VDD_IN"]), rate_hz=200).start()  # one read done
    (root / HWMON / "curr1_input").unlink()  # the rail stops giving power readings
    block = sampler.stop()  # reads once more, and fails
    assert block["read_errors"] > 0 and "VDD_IN" in block["first_error"]
    assert len(block["values"]) > 0


def _rapl(tmp_path: Path, uj: int, max_uj: int = 1_000_000) -> Path:
    d = tmp_path / "sys/class/powercap/intel-rapl:0"
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text("package-0\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    return d


def test_energy_counter_is_unwrapped(tmp_path):
    d = _rapl(tmp_path, 900_000)
    source = open_source("auto", str(tmp_path))  # no rails: the top-level RAPL counter
    assert isinstance(source, CounterSource) and source.kind == "joules" and source.name == "package-0"
    assert source.read() == 0.0
    (d / "energy_uj").write_text("990000\n")
    assert source.read() == pytest.approx(0.09)
    (d / "energy_uj").write_text("40000\n")  # wrapped at 1 J
    assert source.read() == pytest.approx(0.14)


def test_auto_picks_the_board_total_and_names_are_checked(tmp_path):
    orin = board(tmp_path, "jetson_orin")
    assert open_source("auto", str(orin)).name == "VDD_IN"
    assert open_source("VDD_SOC", str(orin)).name == "VDD_SOC"
    assert open_source("none", str(orin)) is None
    with pytest.raises(UsageError, match="VDD_IN, VDD_CPU_GPU_CV, VDD_SOC"):
        open_source("VDD_GPU", str(orin))
    with pytest.raises(UsageError, match="no energy counter"):
        open_source("counter:psys", str(orin))
    assert open_source("auto", str(board(tmp_path, "jetson_nano"))).name == "POM_5V_IN"
    assert open_source("auto", str(board(tmp_path, "raspberry_pi5"))) is None  # PMIC needs vcgencmd


def test_thermal_gate_waits_for_the_zone_to_cool(tmp_path):
    root = board(tmp_path, "jetson_orin")
    assert max(read_temperatures(str(root)).values()) == 47.531
    assert thermal_gate(str(root), None)["cooled"] is True
    gate = thermal_gate(str(root), 40.0, timeout_s=0.3, poll_s=0.05)
    assert gate["cooled"] is False and gate["waited_s"] >= 0.3 and gate["max_c"] == 47.531

    def cool() -> None:
        time.sleep(0.3)
        for zone in (root / "sys/class/thermal").glob("thermal_zone*"):
            (zone / "temp").write_text("35000\n")

    threading.Thread(target=cool).start()
    gate = thermal_gate(str(root), 40.0, timeout_s=10, poll_s=0.05)
    assert gate["cooled"] is True and 0.3 <= gate["waited_s"] < 10 and gate["max_c"] == 35.0


def test_samples_bracket_the_work_between_start_and_stop(tmp_path):
    root = board(tmp_path, "jetson_orin")
    sampler = Sampler(RailSource(str(root), ["VDD_IN"]), rate_hz=5)  # 200 ms ticks
    sampler.start()
    t0 = time.perf_counter_ns()
    time.sleep(0.02)  # far shorter than a tick
    t1 = time.perf_counter_ns()
    block = sampler.stop()
    # two reads unless the scheduler kept this thread away for a whole tick
    assert len(block["t_ns"]) >= 2 and block["t_ns"][0] <= t0 and block["t_ns"][-1] >= t1
