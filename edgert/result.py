"""The versioned result file (``edgert.result/2``); the schema is documented in docs/result-schema.md.

History: /1 had no scenario, load or first-inference times, throughput or run metadata, and its
``samples_ms`` were always back-to-back runs. /2 adds those; under the offline and server
scenarios ``samples_ms`` are per-query latencies (server: from scheduled arrival, so queueing
counts). ``upgrade`` reads a /1 file as /2 (the missing measurements are null).
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import edgert
from edgert import run_metadata
from edgert.atomic import replace_file
from edgert.errors import UsageError
from edgert.files import not_a_file
from edgert.finite import is_finite_number
from edgert.hashing import sha256_file
from edgert.settings import BenchSettings
from edgert.stats import stability_warnings, summarize
from edgert.timing import RawRun

SCHEMA = "edgert.result/2"
OLD_SCHEMAS = ("edgert.result/1",)


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
        seed=settings.seed,
    )
    meta = measured.get("run_metadata") or {}
    if meta:
        warnings += run_metadata.warnings(meta["before"], meta["after"], device.get("cores_usable"))
    scenario = dict(measured.get("scenario") or {"name": "single-stream", "concurrency": 1})
    if "service_ns" in scenario:
        scenario["service_ms"] = summarize([ns / 1e6 for ns in scenario.pop("service_ns")], seed=settings.seed)
    if "throughput_ips" not in scenario:
        scenario["throughput_ips"] = throughput(samples_ms, raw.starts_ns)
    batch = int(measured.get("batch") or 1)
    if batch > 1 and scenario["throughput_ips"]:  # a query is a batch: samples per second too
        scenario.update(samples_per_query=batch, samples_per_s=scenario["throughput_ips"] * batch)
    if scenario["name"] == "server":
        warnings += server_warnings(scenario, samples_ms)
    if device.get("emulated"):
        warnings.insert(0, "measured on an emulated device: timings say nothing about real hardware")
    result = {
        "schema": SCHEMA,
        "edgert_version": edgert.__version__,
        "model": {"path": str(model_path), "sha256": sha256_file(model_path),
                  "inputs": measured["inputs"], "outputs": measured["outputs"],
                  **({"source_sha256": measured["model_source"]["sha256"]} if measured.get("model_source") else {})},
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
        "compile_ms": measured.get("compile_ms"),
        "load_ms": measured.get("load_ms"),
        "first_inference_ms": measured.get("first_inference_ms"),
        "scenario": scenario,
        "throughput_ips": scenario["throughput_ips"],
        "run_metadata": meta or None,
        "emulated": bool(device.get("emulated")),
    }
    if "dynamic" in measured:
        result.update(dynamic_breakdown(measured["dynamic"], samples_ms, settings.seed))
    if measured.get("cases"):
        by_case: dict[str, list[float]] = {}
        for case, ms in zip(measured["cases"], samples_ms):
            by_case.setdefault(case, []).append(ms)
        result["cases_ms"] = {case: summarize(v, seed=settings.seed) for case, v in sorted(by_case.items())}
    result.update(extra or {})
    return result


def is_emulated(data: dict[str, Any]) -> bool:
    """Measured on an emulated device: by the file's own flag or its device's (a sweep, a
    calibration or a hand-edited file may carry only the one)."""
    device = data.get("device")
    return bool(data.get("emulated") or (isinstance(device, dict) and device.get("emulated")))


def throughput(samples_ms: list[float], starts_ns: list[int]) -> float | None:
    """Inferences per second over the measured window (first start to last end)."""
    if not samples_ms:
        return None
    window_s = (starts_ns[-1] - starts_ns[0]) / 1e9 + samples_ms[-1] / 1e3
    return len(samples_ms) / window_s if window_s > 0 else None


def server_warnings(scenario: dict[str, Any], samples_ms: list[float]) -> list[str]:
    """Did the system keep up with the offered load? (LoadGen would call the run invalid.)"""
    out = []
    if scenario["throughput_ips"] < 0.9 * scenario["scheduled_qps"]:
        out.append(f"server: completed {scenario['throughput_ips']:.3g} inferences/s of the "
                   f"{scenario['scheduled_qps']:.3g}/s offered: the queue grew, latencies are unbounded "
                   "at this rate (lower --rate or raise --concurrency)")
    quarter = len(samples_ms) // 4
    if quarter >= 5:
        first, last = np.median(samples_ms[:quarter]), np.median(samples_ms[-quarter:])
        if last > 2 * first:
            out.append(f"server: the median latency of the last quarter of queries ({last:.3g} ms) is "
                       f"{last / first:.1f}x the first quarter's: the queue was still growing")
    return out


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A result file of any known version as the current one (pyperf reads old files too)."""
    schema = data.get("schema")
    if schema == SCHEMA:
        return data
    if schema not in OLD_SCHEMAS:
        raise UsageError(f"unknown result schema {schema!r} (this edgert reads {SCHEMA} and "
                         f"{', '.join(OLD_SCHEMAS)})")
    samples, starts = data.get("samples_ms") or [], data.get("sample_starts_ns") or []
    ips = throughput(samples, starts) if len(starts) == len(samples) else None
    return {**data, "schema": SCHEMA, "upgraded_from": schema, "compile_ms": None, "load_ms": None,
            "first_inference_ms": None, "run_metadata": None, "throughput_ips": ips,
            "scenario": {"name": "single-stream", "concurrency": 1, "throughput_ips": ips}}


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
    text = json.dumps(result, indent=1) + "\n"
    replace_file(path, lambda fh: fh.write(text.encode()))


def write_csv(result: dict[str, Any], path: Path) -> None:
    """One row per measured run: index, monotonic start (ns), latency (ms); written whole."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["run", "start_monotonic_ns", "latency_ms"])
    for i, (start, ms) in enumerate(zip(result["sample_starts_ns"], result["samples_ms"])):
        writer.writerow([i, start, f"{ms:.6f}"])
    replace_file(path, lambda fh: fh.write(text.getvalue().encode()))


def parse_json_file(path: Path) -> Any:
    """A JSON file's value; UsageError naming it when it is not a regular file (a FIFO would
    block), unreadable, not text, not JSON or nested too deep."""
    path = Path(path)
    try:
        why = not_a_file(path)
        if why:
            raise UsageError(f"cannot read result file {path}: it {why}", path=str(path))
        return json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read result file {path}: {exc.strerror}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not a result file: it is not text (byte {exc.start} is not UTF-8)",
                         path=str(path)) from exc
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{path} is not a result file: it is not JSON ({str(exc)[:100]})", path=str(path)) from exc


_OBJECTS = ("model", "device", "backend", "settings", "scenario", "clock", "latency_ms")
_NUMBERS = ("throughput_ips", "compile_ms", "load_ms", "first_inference_ms", "peak_rss_bytes")


def check_samples(data: dict[str, Any], path: Path) -> None:
    """The fields compare and the report compute with, of the kinds bench writes: ``samples_ms``
    a non-empty list of finite latencies >= 0 (NaN, inf, negative, text or null ones gave
    tracebacks or NaN verdicts), objects, numbers >= 0 or null, warnings a list of text,
    ``emulated`` true or false (the text "false" read as emulated)."""
    samples = data.get("samples_ms")
    if not isinstance(samples, list) or not samples or not all(is_amount(v) for v in samples):
        raise UsageError(f"{path} is inconsistent: samples_ms must be a non-empty list of finite latencies >= 0",
                         path=str(path))
    wrong = [k for k in _OBJECTS if k in data and not isinstance(data[k], dict)]
    wrong += [k for k in _NUMBERS if data.get(k) is not None and not is_amount(data[k])]
    warnings = data.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        wrong.append("warnings")
    if not isinstance(data.get("emulated", False), bool):
        wrong.append("emulated")
    if wrong:
        raise UsageError(f"{path} is inconsistent: {wrong[0]} is not what edgert bench writes "
                         "(an object, a number >= 0 or null, a list of text, true/false)", path=str(path))


def is_amount(value: Any) -> bool:
    """A finite number >= 0: a latency, a count, a power or an energy."""
    return is_finite_number(value) and value >= 0


def read_json(path: Path) -> dict[str, Any]:
    """A result file upgraded to the current schema; UsageError naming it when it is unreadable,
    not JSON or not a result."""
    data = parse_json_file(path)
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("edgert.result/"):
        found = repr(data.get("schema")) if isinstance(data, dict) and "schema" in data else "no 'schema' key"
        raise UsageError(f"{path} is not an edgert result file (schema: {found})", path=str(path))
    data = upgrade(data)
    check_samples(data, path)
    return data
