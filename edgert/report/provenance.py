"""Where each number came from: model hash, engine, device, edgert version and time span."""
from __future__ import annotations

from typing import Any

from edgert.report.model import Loaded
from edgert.result import is_emulated

KIND_NAMES = {"edgert.result/1": "bench", "edgert.result/2": "bench", "edgert.sweep/1": "clock sweep",
         "edgert.calibration/1": "All-in-One calibration"}


def _device(d: dict[str, Any]) -> str:
    parts = [d.get("hostname"), d.get("arch"), d.get("cpu_model"),
             f"{d['cores_usable']}/{d['cores']} cores usable" if d.get("cores") else None,
             d.get("os"), f"kernel {d['kernel']}" if d.get("kernel") else None,
             f"Python {d['python']}" if d.get("python") else None,
             f"via {d['transport']}" if d.get("transport") else None]
    return " · ".join(str(p) for p in parts if p) or "—"


def _engine(d: dict[str, Any]) -> str:
    backend = d.get("backend") or {}
    if not backend:
        return "—"
    options = {k: v for k, v in (backend.get("options") or {}).items() if v is not None}
    text = f"{backend.get('name', '?')} {backend.get('version', '')}".strip()
    return text + (f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else "")


def facts(item: Loaded) -> list[tuple[str, str]]:
    """Ordered (name, value) rows; missing facts show as a dash, never as a guess."""
    d = item.data
    model = d.get("model") or {}
    settings = d.get("settings") or {}
    rows = [
        ("kind", KIND_NAMES.get(str(d.get("schema")), str(d.get("schema")))),
        ("model", str(model.get("path", "—"))),
        ("model sha256", str(model.get("sha256", "—"))),
        ("engine", _engine(d)),
        ("device", _device(d.get("device") or {})),
        ("emulated", "YES" if is_emulated(d) else "no"),
        ("edgert version", str(d.get("edgert_version", "—"))),
        ("start", str(d.get("start_time", "—"))),
        ("end", str(d.get("end_time", "—"))),
    ]
    if settings:
        rows.append(("settings", ", ".join(f"{k}={v}" for k, v in settings.items()
                                           if v is not None)))
    if d.get("clock"):
        rows.append(("clock", f"{d['clock'].get('implementation')} "
                              f"(resolution {d['clock'].get('resolution_ns')} ns)"))
    return rows
