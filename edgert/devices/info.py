"""``edgert device info``: facts, clocks, rails and temperatures of a device, local or remote."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from edgert import device_facts
from edgert.devices.address import DeviceAddress
from edgert.power_status import is_fixture_root


def collect_info(addr: DeviceAddress, sysfs_root: str | None = None) -> dict[str, Any]:
    """``{"device": facts, "cpufreq": [...], "devfreq": [...], "power": [...], "thermal": [...]}``."""
    if addr.scheme == "local":
        from edgert.device_agents.discovery import discover

        info = {"device": device_facts.collect("local"), **discover(sysfs_root or "/"),
                "sysfs_root": sysfs_root or "/"}
    else:
        from edgert.devices.connect import open_client

        with open_client(addr) as client:
            info = client.device_info(sysfs_root)
        info["device"]["emulated"] = bool(info["device"].get("emulated") or addr.emulated)
    root = info.get("sysfs_root", sysfs_root)
    info["fixture"] = is_fixture_root(root)
    if info["fixture"]:  # the facts are the machine's, the clocks and rails the fixture's files
        info["sysfs_root"] = root
    return info


def render_info(info: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    d = info["device"]
    console.print(f"[bold]{d['hostname']}[/bold]: {d['arch']}, {d['cpu_model']}, {d['cores']} cores, "
                  f"{d['os']}, kernel {d['kernel']}, Python {d['python']}, via {d['transport']}"
                  + (" [red]EMULATED[/red]" if d.get("emulated") else ""))
    if info.get("fixture"):
        console.print(f"[yellow]FIXTURE[/yellow]: the clocks, power rails and temperatures below are read "
                      f"from {info['sysfs_root']}, not from {d['hostname']} (whose CPU is the line above)",
                      markup=True, highlight=False)
    sections = [
        ("cpufreq", ("policy", "cpus", "governor", "cur_khz", "min_khz", "max_khz", "frequencies_khz")),
        ("devfreq", ("name", "kind", "governor", "cur_hz", "min_hz", "max_hz")),
        ("power", ("rail", "volts", "amps", "watts", "source")),
        ("thermal", ("zone", "type", "celsius")),
    ]
    for name, columns in sections:
        rows = info.get(name) or []
        if not rows:
            console.print(f"{name}: none found")
            continue
        table = Table(title=f"{name} (fixture)" if info.get("fixture") else name, title_justify="left")
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*(_cell(row.get(col)) for col in columns))
        console.print(table)
    if info.get("pi_throttled"):
        console.print(f"Raspberry Pi throttling: {info['pi_throttled']}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        if len(value) > 6:
            return f"{value[0]}..{value[-1]} ({len(value)} steps)"
        return " ".join(str(v) for v in value)
    return "-" if value is None else str(value)
