"""Write the sysfs trees under tests/fixtures/sysfs/<board>/ that discovery and DVFS tests use.

Names and units follow the kernel documentation (cited per section); the values are
plausible for each board, not captures, and nothing reads them as measurements.
Links the kernel makes (``class/devfreq/X``, ``device``, ``of_node``, ``cpuN/cpufreq``)
are relative symlinks inside the tree, so a copy with ``symlinks=True`` stays self-contained.

    python tools/make_sysfs_fixtures.py [out_dir]
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sysfs"
ALL_GOVERNORS = "conservative ondemand userspace powersave performance schedutil"


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, rel: str, value: object) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")

    def raw(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def link(self, rel: str, target: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)


def cpufreq_policy(t: Tree, policy: int, cpus: list[int], freqs_khz: list[int], governor: str,
                   cur_khz: int, governors: str = ALL_GOVERNORS) -> None:
    """Documentation/admin-guide/pm/cpufreq.rst: policyX attributes, frequencies in kHz."""
    d = f"sys/devices/system/cpu/cpufreq/policy{policy}"
    cpu_list = " ".join(map(str, cpus))
    t.file(f"{d}/affected_cpus", cpu_list)
    t.file(f"{d}/related_cpus", cpu_list)
    t.file(f"{d}/cpuinfo_min_freq", min(freqs_khz))
    t.file(f"{d}/cpuinfo_max_freq", max(freqs_khz))
    t.file(f"{d}/scaling_available_frequencies", " ".join(map(str, freqs_khz)))
    t.file(f"{d}/scaling_available_governors", governors)
    t.file(f"{d}/scaling_governor", governor)
    t.file(f"{d}/scaling_cur_freq", cur_khz)
    t.file(f"{d}/scaling_min_freq", min(freqs_khz))
    t.file(f"{d}/scaling_max_freq", max(freqs_khz))
    # Reads "<unsupported>" unless the userspace governor is active.
    t.file(f"{d}/scaling_setspeed", "<unsupported>")
    for cpu in cpus:
        t.link(f"sys/devices/system/cpu/cpu{cpu}/cpufreq", f"../cpufreq/policy{policy}")


def devfreq(t: Tree, dev: str, of_name: str, freqs_hz: list[int], governor: str, cur_hz: int,
            governors: str = "userspace performance simple_ondemand") -> None:
    """Documentation/ABI/testing/sysfs-class-devfreq: frequencies in Hz; class entry,
    ``device`` and ``of_node`` are links as on a real board."""
    node = f"sys/firmware/devicetree/base/{of_name}@{dev.split('.')[0]}"
    t.raw(f"{node}/name", f"{of_name}\0")  # device-tree strings end in NUL
    t.link(f"sys/devices/platform/{dev}/of_node", f"../../../firmware/devicetree/base/{of_name}@{dev.split('.')[0]}")
    d = f"sys/devices/platform/{dev}/devfreq/{dev}"
    t.link(f"{d}/device", "../../../" + dev)
    t.link(f"sys/class/devfreq/{dev}", f"../../devices/platform/{dev}/devfreq/{dev}")
    t.file(f"{d}/available_frequencies", " ".join(map(str, freqs_hz)))
    t.file(f"{d}/available_governors", governors)
    t.file(f"{d}/governor", governor)
    t.file(f"{d}/cur_freq", cur_hz)
    t.file(f"{d}/target_freq", cur_hz)
    t.file(f"{d}/min_freq", min(freqs_hz))
    t.file(f"{d}/max_freq", max(freqs_hz))


def thermal(t: Tree, zones: list[tuple[str, int]]) -> None:
    """Documentation/driver-api/thermal/sysfs-api.rst: ``temp`` in millidegrees Celsius."""
    for i, (kind, millic) in enumerate(zones):
        t.file(f"sys/class/thermal/thermal_zone{i}/type", kind)
        t.file(f"sys/class/thermal/thermal_zone{i}/temp", millic)


def raspberry_pi4(t: Tree) -> None:
    cpufreq_policy(t, 0, [0, 1, 2, 3], list(range(600000, 1500001, 100000)), "ondemand", 600000)
    thermal(t, [("cpu-thermal", 48686)])
    # Documentation/hwmon/sysfs-interface.rst; the Pi 4 has a temperature hwmon, no power sensor.
    t.file("sys/class/hwmon/hwmon0/name", "cpu_thermal")
    t.file("sys/class/hwmon/hwmon0/temp1_input", 48686)
    t.file("vcgencmd/get_throttled", "throttled=0x50005")


# Shape of `vcgencmd pmic_read_adc` on a Raspberry Pi 5 as posted on the Raspberry Pi
# forums and parsed by public tools (one "<RAIL>_A current(N)=<amps>A" or
# "<RAIL>_V volt(N)=<volts>V" line per ADC channel, right-aligned names); values made up.
PI5_PMIC_READ_ADC = """\
     3V7_WL_SW_A current(0)=0.00390372A
       3V3_SYS_A current(1)=0.05416290A
       1V8_SYS_A current(2)=0.16687290A
      DDR_VDD2_A current(3)=0.02049453A
      DDR_VDDQ_A current(4)=0.00000000A
       1V1_SYS_A current(5)=0.18837190A
        0V8_SW_A current(6)=0.32984730A
      VDD_CORE_A current(7)=0.71760000A
       3V3_DAC_A current(17)=0.00015781A
       3V3_ADC_A current(18)=0.00048800A
       0V8_AON_A current(16)=0.00439140A
          HDMI_A current(22)=0.02293800A
     3V7_WL_SW_V volt(8)=3.71462400V
       3V3_SYS_V volt(9)=3.30451200V
       1V8_SYS_V volt(10)=1.79926000V
      DDR_VDD2_V volt(11)=1.11105800V
      DDR_VDDQ_V volt(12)=0.60561520V
       1V1_SYS_V volt(13)=1.10622400V
        0V8_SW_V volt(14)=0.80476560V
      VDD_CORE_V volt(15)=0.72066780V
       3V3_DAC_V volt(20)=3.30231500V
       3V3_ADC_V volt(21)=3.30085000V
       0V8_AON_V volt(19)=0.80476560V
          HDMI_V volt(23)=5.14920000V
         EXT5V_V volt(24)=5.14920000V
          BATT_V volt(25)=0.00000000V
"""


def raspberry_pi5(t: Tree) -> None:
    cpufreq_policy(t, 0, [0, 1, 2, 3], list(range(1500000, 2400001, 100000)), "ondemand", 2400000)
    thermal(t, [("cpu-thermal", 52300)])
    t.file("sys/class/hwmon/hwmon0/name", "cpu_thermal")
    t.file("sys/class/hwmon/hwmon0/temp1_input", 52300)
    t.raw("vcgencmd/pmic_read_adc", PI5_PMIC_READ_ADC)
    t.file("vcgencmd/get_throttled", "throttled=0x0")


def jetson_nano(t: Tree) -> None:
    nano_cpu = [102000, 204000, 307200, 403200, 518400, 614400, 710400, 825600, 921600,
                1036800, 1132800, 1224000, 1326000, 1428000, 1479000]
    cpufreq_policy(t, 0, [0, 1, 2, 3], nano_cpu, "schedutil", 1479000,
                   governors="interactive conservative ondemand userspace powersave performance schedutil")
    nano_gpu = [76800000, 153600000, 230400000, 307200000, 384000000, 460800000, 537600000,
                614400000, 691200000, 768000000, 844800000, 921600000]
    devfreq(t, "57000000.gpu", "gpu", nano_gpu, "nvhost_podgov", 76800000,
            governors="wmark_active nvhost_podgov userspace performance simple_ondemand")
    # L4T 32.x ina3221x IIO driver (NVIDIA Jetson Nano "Power Monitor" docs):
    # rail_name_N, in_voltageN_input mV, in_currentN_input mA, in_powerN_input mW.
    d = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for n, (rail, mv, ma, mw) in enumerate([("POM_5V_IN", 5048, 1104, 5573),
                                            ("POM_5V_GPU", 5040, 40, 201),
                                            ("POM_5V_CPU", 5040, 318, 1602)]):
        t.file(f"{d}/rail_name_{n}", rail)
        t.file(f"{d}/in_voltage{n}_input", mv)
        t.file(f"{d}/in_current{n}_input", ma)
        t.file(f"{d}/in_power{n}_input", mw)
    thermal(t, [("AO-therm", 40500), ("CPU-therm", 36500), ("GPU-therm", 35000),
                ("PLL-therm", 34250), ("PMIC-Die", 100000), ("thermal-fan-est", 35900)])


def jetson_orin(t: Tree) -> None:
    orin_cpu = [115200, 192000, 268800, 345600, 422400, 499200, 576000, 652800, 729600, 806400,
                883200, 960000, 1036800, 1113600, 1190400, 1267200, 1344000, 1420800, 1497600,
                1510400]
    cpufreq_policy(t, 0, [0, 1, 2, 3], orin_cpu, "schedutil", 1510400)
    cpufreq_policy(t, 4, [4, 5], orin_cpu, "schedutil", 729600)
    orin_gpu = [306000000, 408000000, 510000000, 612000000, 714000000, 816000000, 918000000]
    devfreq(t, "17000000.ga10b", "ga10b", orin_gpu, "nvhost_podgov", 306000000,
            governors="wmark_active nvhost_podgov userspace performance simple_ondemand")
    devfreq(t, "15340000.vic", "vic", [115200000, 729600000], "nvhost_podgov", 115200000)
    # Documentation/hwmon/ina3221.rst: in[123]_input bus mV, curr[123]_input mA,
    # in[456]_input shunt µV, in7 = "sum of shunt voltages" channel.
    d = "sys/class/hwmon/hwmon1"
    t.file(f"{d}/name", "ina3221")
    for n, (label, mv, ma, shunt_uv) in enumerate([("VDD_IN", 5016, 1184, 5920),
                                                   ("VDD_CPU_GPU_CV", 5016, 296, 1480),
                                                   ("VDD_SOC", 5008, 448, 2240)], start=1):
        t.file(f"{d}/in{n}_label", label)
        t.file(f"{d}/in{n}_enable", 1)
        t.file(f"{d}/in{n}_input", mv)
        t.file(f"{d}/curr{n}_input", ma)
        t.file(f"{d}/shunt{n}_resistor", 5000)
        t.file(f"{d}/in{n + 3}_input", shunt_uv)
    t.file(f"{d}/in7_label", "Sum of shunt voltages")
    t.file(f"{d}/in7_input", 9640)
    t.file(f"{d}/curr4_input", 1928)
    thermal(t, [("cpu-thermal", 47531), ("gpu-thermal", 46125), ("soc0-thermal", 46500),
                ("tj-thermal", 47531)])


def x86_laptop(t: Tree) -> None:
    # acpi-cpufreq: one policy per CPU, frequency table listed in descending order.
    for cpu in range(4):
        cpufreq_policy(t, cpu, [cpu], [2800000, 2100000, 1400000], "ondemand", 1400000)
    # Documentation/power/powercap/powercap.rst: energy_uj (µJ), max_energy_range_uj wrap point.
    t.file("sys/class/powercap/intel-rapl/enabled", 1)
    for zone, name, uj in [("intel-rapl:0", "package-0", 123456789012),
                           ("intel-rapl:0:0", "core", 45678901234),
                           ("intel-rapl:0:1", "uncore", 1234567890),
                           ("intel-rapl:1", "psys", 234567890123)]:
        t.file(f"sys/class/powercap/{zone}/name", name)
        t.file(f"sys/class/powercap/{zone}/energy_uj", uj)
        t.file(f"sys/class/powercap/{zone}/max_energy_range_uj", 262143328850)
        t.file(f"sys/class/powercap/{zone}/enabled", 1)
    thermal(t, [("acpitz", 45000), ("x86_pkg_temp", 52000), ("INT3400 Thermal", 20000)])
    t.file("sys/class/hwmon/hwmon0/name", "acpitz")
    t.file("sys/class/hwmon/hwmon0/temp1_input", 45000)
    t.file("sys/class/hwmon/hwmon1/name", "coretemp")
    t.file("sys/class/hwmon/hwmon1/temp1_input", 52000)


BOARDS = {
    "raspberry_pi4": raspberry_pi4,
    "raspberry_pi5": raspberry_pi5,
    "jetson_nano": jetson_nano,
    "jetson_orin": jetson_orin,
    "x86_laptop": x86_laptop,
}


def main(out: Path = DEFAULT_OUT) -> None:
    for board, build in BOARDS.items():
        root = out / board
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        build(Tree(root))
        print(f"wrote {root}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
