"""Facts about the machine a measurement ran on (collected on the device itself)."""
from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any


def usable_cores() -> int:
    """CPUs this process may run on (affinity, cgroup cpusets), the engines' default thread count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model(root: Path = Path("/")) -> str:
    """CPU name from /proc/cpuinfo: x86 'model name', arm64 boards' 'Model' or 'Hardware' line."""
    try:
        text = (root / "proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or "unknown"


def os_name(root: Path = Path("/")) -> str:
    try:
        for line in (root / "etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def collect(transport: str = "local") -> dict[str, Any]:
    """The result file's ``device`` block."""
    return {
        "hostname": socket.gethostname(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable_cores(),
        "kernel": platform.release(),
        "os": os_name(),
        "python": platform.python_version(),
        "transport": transport,
        "emulated": False,
    }


def describe(facts: dict[str, Any]) -> str:
    """One line naming where something ran, with EMULATED when it was an emulator."""
    line = (f"{facts.get('hostname', '?')} ({facts.get('arch', '?')}, {facts.get('cpu_model', '?')}, "
            f"via {facts.get('transport', 'local')})")
    return line + (" [EMULATED]" if facts.get("emulated") else "")
