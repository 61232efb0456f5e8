"""The versioned result file (``edgert.result/1``); the schema is documented in docs/result-schema.md."""
from __future__ import annotations

import csv
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import edgert
from edgert.errors import UsageError
from edgert.hashing import sha256_file
from edgert.settings import BenchSettings
from edgert.stats import stability_warnings, summarize
from edgert.timing import RawRun

SCHEMA = "edgert.result/1"


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, tz=timezone.utc).isoformat()


def build(*, model_path: Path, device: dict[str, Any], settings: BenchSettings,
          measured: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble a result from the raw output of ``runner.run_benchmark`` (local or remote)."""
    raw = RawRun.from_dict(measured["raw"])
    samples_ms = [ns / 1e6 for ns in raw.samples_ns]
    warnings = stability_warnings(
        samples_ms, timer_resolution_ms=raw.timer_resolution_ns / 1e6,
        target_ci_fraction=settings.target_ci_fraction if raw.stop_reason == "max_time" else None,
    )
    if device.get("emulated"):
        warnings.insert(0, "measured on an emulated device: timings say nothing about real hardware")
    result = {
        "schema": SCHEMA,
        "edgert_version": edgert.__version__,
        "model": {"path": str(model_path), "sha256": sha256_file(model_path),
                  "inputs": measured["inputs"], "outputs": measured["outputs"]},
        "backend": measured["backend"],
        "device": device,
        "settings": settings.to_dict(),
        "start_time": _iso(raw.start_unix),
        "end_time": _iso(raw.end_unix),
        "stop_reason": raw.stop_reason,
        "clock": {"name": "perf_counter", "implementation": raw.clock,
                  "resolution_ns": raw.timer_resolution_ns},
        "latency_ms": summarize(samples_ms, seed=settings.seed),
        "samples_ms": samples_ms,
        "sample_starts_ns": raw.starts_ns,
        "warmup_ms": [ns / 1e6 for ns in raw.warmup_ns],
        "warnings": warnings,
        "peak_rss_bytes": measured["peak_rss_bytes"],
        "emulated": bool(device.get("emulated")),
    }
    if "dynamic" in measured:
        result.update(dynamic_breakdown(measured["dynamic"], samples_ms, settings.seed))
    result.update(extra or {})
    return result


def dynamic_breakdown(dynamic: dict[str, Any], samples_ms: list[float], seed: int) -> dict[str, Any]:
    """Per-segment call time, latency per control-flow path, and host overhead of a bundle."""
    by_path: dict[str, list[float]] = {}
    for key, ms in zip(dynamic["paths"], samples_ms):
        by_path.setdefault(key, []).append(ms)
    return {
        "segments_ms": {seg: summarize([ns / 1e6 for ns in values], seed=seed)
                        for seg, values in sorted(dynamic["segments_ns"].items()) if values},
        "paths": {key: summarize(values, seed=seed) for key, values in sorted(by_path.items())},
        "host_overhead_us": summarize([ns / 1e3 for ns in dynamic["host_overhead_ns"]], seed=seed),
    }


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write atomically, so an interrupted run never leaves a half file that looks valid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_csv(result: dict[str, Any], path: Path) -> None:
    """One row per measured run: index, monotonic start (ns), latency (ms)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "start_monotonic_ns", "latency_ms"])
        for i, (start, ms) in enumerate(zip(result["sample_starts_ns"], result["samples_ms"])):
            writer.writerow([i, start, f"{ms:.6f}"])


def read_json(path: Path) -> dict[str, Any]:
    """A result file; UsageError naming it when it is unreadable, not JSON or not a result."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read result file {path}: {exc.strerror}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not a result file: it is not text (byte {exc.start} is not UTF-8)",
                         path=str(path)) from exc
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{path} is not a result file: it is not JSON ({exc})", path=str(path)) from exc
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("edgert.result/"):
        raise UsageError(f"{path} is not an edgert result file (no 'schema' key)", path=str(path))
    return data
