"""``edgert sweep`` on the host: run the device sweep (locally or via the agent), then turn its
raw points into the ``edgert.sweep/1`` result file (layout: docs/sweep-schema.md).

Energy per inference is the mean power over the measured window (first run's start to last
run's end, on the device's monotonic clock) times the window's length, divided by the runs:
with a constant rail of V volts and A amps that is exactly V * A * duration / runs.
"""
from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

import edgert
from edgert import device_facts, power_status
from edgert.backends import BackendOptions
from edgert.compilers import compile_for, compile_for_device
from edgert.errors import UsageError
from edgert.hashing import sha256_file
from edgert.settings import BenchSettings, SweepRequest
from edgert.stats import stability_warnings, summarize
from edgert.tensors import load_feeds
from edgert.units import duration_ms

SCHEMA = "edgert.sweep/1"
Progress = Callable[[dict[str, Any]], None]

_UNITS = {"hz": 1, "khz": 1_000, "mhz": 1_000_000, "ghz": 1_000_000_000}


@dataclasses.dataclass(frozen=True)
class SweepJob:
    """One model (and optional input files) and the request saying what to sweep on the device."""

    model: Path
    request: SweepRequest = SweepRequest()
    input_files: Mapping[str, Path] = dataclasses.field(default_factory=dict)

    @property
    def settings(self) -> BenchSettings:
        return self.request.settings


# --- option parsing ------------------------------------------------------------------------

MAX_FREQUENCY_HZ = 100e9


def parse_freqs(text: str | None, default_unit: str) -> str | tuple[int, ...] | None:
    """``all``, or ``600000,1.2GHz,900MHz``: plain numbers are in ``default_unit`` ("kHz" for CPUs,
    "Hz" for devfreq, as in sysfs); the result is in that unit too."""
    if text is None or text == "":
        return None
    if text.strip().lower() == "all":
        return "all"
    scale = _UNITS[default_unit.lower()]
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        unit = next((u for u in sorted(_UNITS, key=len, reverse=True) if item.endswith(u)), None)
        number = item[:-len(unit)] if unit else item
        try:
            value = float(number) * (_UNITS[unit] if unit else scale) / scale
        except ValueError:
            raise UsageError(f"bad frequency {item!r}: use a number ({default_unit}) or e.g. 1.2GHz") from None
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"frequency {item!r} must be a positive number of {default_unit}")
        if value * scale > MAX_FREQUENCY_HZ:  # 1e99 was sent on as a 100-digit clock
            raise UsageError(f"frequency {item!r} is above {MAX_FREQUENCY_HZ / 1e9:g} GHz: no board clocks that fast")
        if abs(value - round(value)) > 1e-6:
            raise UsageError(f"frequency {item!r} is not a whole number of {default_unit}")
        if int(round(value)) in out:
            raise UsageError(f"frequency {item!r} is listed twice")
        out.append(int(round(value)))
    return tuple(out)


def parse_levels(text: str | None) -> tuple[float, ...]:
    """``1.0,0.5,0.25`` -> emulated CPU-bandwidth levels in (0, 1]."""
    if text is None:
        return ()
    if not text.strip():
        raise UsageError("--emulated needs levels, e.g. 1.0,0.5,0.25")
    try:
        levels = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--emulated wants levels like 1.0,0.5,0.25, got {text!r}") from None
    if any(not 0 < lvl <= 1 for lvl in levels):
        raise UsageError("--emulated levels must be in (0, 1]")
    if len(set(levels)) < len(levels):
        raise UsageError(f"--emulated lists a level twice: {text!r}")
    return levels


# --- power and energy ------------------------------------------------------------------------

def mean_power_w(block: Mapping[str, Any], t0_ns: int, t1_ns: int) -> float | None:
    """Mean power over [t0, t1] from a sampler block.

    ``watts``: the time integral of the piecewise-linear trace through the samples (held flat
    beyond the first/last sample) divided by the span. ``joules``: counter difference at the two
    ends (interpolated) over the span. None without enough samples.
    """
    t = np.asarray(block["t_ns"], dtype=np.int64)
    v = np.asarray(block["values"], dtype=np.float64)
    if t.size == 0 or t1_ns <= t0_ns or (block["kind"] == "joules" and t.size < 2):
        return None
    x = (t - t0_ns).astype(np.float64)  # relative ns keep float64 exact enough
    span = float(t1_ns - t0_ns)
    if block["kind"] == "joules":
        return float((np.interp(span, x, v) - np.interp(0.0, x, v)) / (span / 1e9))
    inside = x[(x > 0) & (x < span)]
    xs = np.concatenate([[0.0], inside, [span]])
    return float(np.trapezoid(np.interp(xs, x, v), xs) / span)


def _block_mean_w(block: Mapping[str, Any] | None) -> float | None:
    """Mean power over a whole sampler block (the idle baseline)."""
    if not block or not block["t_ns"]:
        return None
    t = block["t_ns"]
    if len(t) == 1:
        return None if block["kind"] == "joules" else float(block["values"][0])
    return mean_power_w(block, t[0], t[-1])


def _covered(block: Mapping[str, Any], t0_ns: int, t1_ns: int) -> bool:
    t = block["t_ns"]
    return bool(t) and t[0] <= t0_ns and t[-1] >= t1_ns


# --- result -------------------------------------------------------------------------------------

def _label(setting: Mapping[str, Any]) -> str:
    return f"{setting['domain']}={setting['requested']}{'' if setting['unit'] == 'share' else ' ' + setting['unit']}"


def build_point(raw_point: dict[str, Any], power_source: str | None, device_emulated: bool,
                seed: int, warnings: list[str], sysfs_root: str | None = None) -> dict[str, Any]:
    """One result point from one raw device point; appends its warnings to ``warnings``.

    Power from a fixture sysfs root, or that never changed between idle and load, is kept as
    ``power_reading`` and labelled in ``power_status``; ``power_w`` and the energies stay null.
    """
    setting = raw_point["setting"]
    emulated = bool(raw_point.get("emulated") or device_emulated)
    point: dict[str, Any] = {
        "setting": setting, "latency_ms": None, "samples_ms": [], "runs": 0, "duration_s": None,
        "power_w": None, "idle_power_w": None, "energy_per_inference_mj": None,
        "energy_above_idle_mj": None, "power_source": power_source, "power_samples": 0,
        "power_status": power_status.source_status(power_source, sysfs_root),
        "temperatures_c": {}, "temperatures_before_c": {}, "thermal_gate": None,
        "throttled": None, "emulated": emulated, "error": raw_point.get("error"),
    }
    if point["error"] is not None:
        warnings.append(f"{_label(setting)}: not measured: {point['error']}")
        return point
    raw = raw_point["raw"]
    samples_ms = [ns / 1e6 for ns in raw["samples_ns"]]
    t0 = int(raw["starts_ns"][0])
    t1 = int(raw["starts_ns"][-1]) + int(raw["samples_ns"][-1])
    runs = len(samples_ms)
    duration_s = (t1 - t0) / 1e9
    point.update(latency_ms=summarize(samples_ms, seed=seed), samples_ms=samples_ms, runs=runs,
                 duration_s=duration_s, stop_reason=raw["stop_reason"],
                 temperatures_c=raw_point.get("temperatures_after_c") or {},
                 temperatures_before_c=raw_point.get("temperatures_before_c") or {},
                 thermal_gate=raw_point.get("thermal_gate"), throttled=raw_point.get("throttled"),
                 peak_rss_bytes=raw_point.get("peak_rss_bytes"))
    label = _label(setting)
    warnings += [f"{label}: {w}" for w in stability_warnings(
        samples_ms, timer_resolution_ms=raw["timer_resolution_ns"] / 1e6)]
    gate = raw_point.get("thermal_gate") or {}
    if gate.get("cooled") is False:
        warnings.append(f"{label}: still at {gate['max_c']:.1f} °C after waiting {gate['waited_s']:.0f} s "
                        f"to cool below {gate['below_c']} °C; measured anyway")
    if raw_point.get("throttled"):
        warnings.append(f"{label}: the clock read {setting.get('readback_after')} after the run, below "
                        "the pinned value: the board throttled (thermal or power limit)")
    power = raw_point.get("power")
    if power:
        point["power_samples"] = len(power["t_ns"])
        if power["read_errors"]:
            warnings.append(f"{label}: {power['read_errors']} power reads failed ({power['first_error']})")
        watts = mean_power_w(power, t0, t1)
        if watts is None:
            warnings.append(f"{label}: too few power samples to compute energy")
        else:
            if not _covered(power, t0, t1):
                warnings.append(f"{label}: the power samples do not span the whole measured window; "
                                "the ends are extrapolated (slow meter?)")
            idle = _block_mean_w(raw_point.get("idle_power"))
            energy = watts * duration_s / runs * 1e3
            if point["power_status"] == power_status.MEASURED and power_status.is_static(
                    power, raw_point.get("idle_power")):
                point["power_status"] = power_status.STATIC
            if point["power_status"] == power_status.MEASURED:
                point.update(power_w=watts, idle_power_w=idle, energy_per_inference_mj=energy,
                             energy_above_idle_mj=None if idle is None else (watts - idle) * duration_s / runs * 1e3)
            else:  # what the source read, for the record; no energy above idle from it
                point["power_reading"] = {"power_w": watts, "idle_power_w": idle,
                                          "energy_per_inference_mj": energy}
    return point


def power_of(points: list[dict[str, Any]], source_name: str | None, sysfs_root: str | None) -> dict[str, Any]:
    """The result's ``power`` block: measured only when every measured point's power is."""
    statuses = {p["power_status"] for p in points if p["error"] is None} or \
        {power_status.source_status(source_name, sysfs_root)}
    worst = next((s for s in (power_status.NONE, power_status.FIXTURE, power_status.STATIC)
                  if s in statuses), power_status.MEASURED)
    return power_status.block(worst, source_name, sysfs_root)


def build_result(job: SweepJob, raw: dict[str, Any], device: dict[str, Any]) -> dict[str, Any]:
    """The ``edgert.sweep/1`` result from ``run_sweep``'s raw output."""
    warnings = list(raw.get("warnings") or [])
    device_emulated = bool(device.get("emulated"))
    source = raw.get("power_source")
    source_name = f"{source['name']} ({source['kind']})" if source else None
    root = sysfs_root_of(job, raw)
    points = [build_point(p, source_name, device_emulated, job.settings.seed, warnings, root)
              for p in raw["points"]]
    power = power_of(points, source_name, root)
    emulated = device_emulated or any(p["emulated"] for p in points)
    if emulated:
        warnings.insert(0, "emulated settings (CPU-bandwidth quota levels, not clocks): the timings "
                           "say nothing about real frequency scaling")
    if source is None:
        warnings.append("no power source: power and energy are not reported (--power RAIL or a meter URL)")
    elif not power["measured"]:
        warnings.insert(0, power["reason"] + "; energy per inference is not reported")
    if power_status.is_fixture_root(root):
        warnings.insert(0, fixture_warning(root))
    if all(p["error"] for p in points):
        warnings.append("no setting could be measured")
    return {
        "schema": SCHEMA,
        "edgert_version": edgert.__version__,
        "created": datetime.now(timezone.utc).isoformat(),
        "model": {"path": str(job.model), "sha256": sha256_file(job.model),
                  "inputs": raw.get("inputs", []), "outputs": raw.get("outputs", [])},
        "backend": raw.get("backend") or {"name": job.request.backend},
        "device": device,
        "settings": result_settings(job.request),
        "power_source": source,
        "power": power,
        "fixture": power_status.is_fixture_root(root),
        "points": points,
        "warnings": warnings,
        "emulated": emulated,
    }


def result_settings(request: SweepRequest) -> dict[str, Any]:
    """The result's ``settings`` block: bench settings and the request, flat (edgert.sweep/1 names
    the emulated levels ``emulated``)."""
    flat = {k: v for k, v in request.to_dict().items() if k not in ("settings", "backend")}
    flat["emulated"] = flat.pop("emulated_levels")
    return {**request.settings.to_dict(), **flat}


def fixture_warning(root: str | None) -> str:
    return (f"sysfs root {root} is a fixture, not this machine: the clocks were pinned in its files "
            "only, so every point ran at the machine's own clock")


def sysfs_root_of(job: SweepJob, raw: Mapping[str, Any]) -> str | None:
    """The sysfs root the device read (it reports its own; an agent may run on a fixture)."""
    return raw.get("sysfs_root") or job.request.sysfs_root


def sweep(job: SweepJob, device: Any = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run ``job`` on ``device`` (a DeviceAddress; None or "local" = this machine) -> result dict.

    Every file the sweep touched is restored on the device before this returns (or raises).
    """
    return build_result(job, *run_raw(job, device, progress))


def run_raw(job: SweepJob, device: Any = None,
            progress: Progress | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The device's raw sweep output (samples as lists) and the device facts, for ``job``: in
    this process for None/"local", else through the agent (the model pushed to its store)."""
    feeds = load_feeds(job.input_files)
    request = job.request
    options = BackendOptions(threads=request.settings.threads, target=request.target)
    if device is None or device.scheme == "local":
        from edgert.device_agents.sweep import run_sweep

        compiled = compile_for(request.backend, job.model, options)  # host step; the sweep loads it
        raw = run_sweep(request, compiled.path, feeds, progress)
        if compiled.notes and isinstance(raw.get("backend"), dict):
            raw["backend"].setdefault("options", {}).update(compiled.notes)
        return raw, device_facts.collect("local")

    from edgert.device_agents.protocol import pack_array
    from edgert.device_agents.sweep import unpack_raw
    from edgert.devices.connect import open_client

    artifact = compile_for_device(request.backend, job.model, options)
    with open_client(device) as client:
        sha = client.upload(artifact)
        raw = client.call("sweep.run", {"request": request.to_dict(), "sha256": sha,
                                        "suffix": artifact.suffix,
                                        "transport": client.transport_name,
                                        "feeds": {k: pack_array(v) for k, v in feeds.items()}},
                          progress)
    unpack_raw(raw)
    facts = raw.pop("device", None) or {"transport": device.scheme}
    facts["emulated"] = bool(facts.get("emulated") or device.emulated)
    return raw, facts


def summary_lines(result: dict[str, Any]) -> list[str]:
    """One line per point for the terminal (the HTML report shows the rest)."""
    lines = []
    for p in result["points"]:
        s = p["setting"]
        head = f"{_label(s):<28} read {s.get('readback')}"
        if p["error"]:
            lines.append(f"{head}  ERROR {p['error']}")
            continue
        lat = p["latency_ms"]
        energy = f"  power {power_status.label(p)}" if p["power_status"] != power_status.MEASURED \
            else f"  {p['power_w']:.2f} W  {p['energy_per_inference_mj']:.3f} mJ/inf"
        lines.append(f"{head}  p50 {duration_ms(lat['p50'])}  n={lat['n']}{energy}"
                     + ("  [emulated]" if p["emulated"] else "") + ("  [throttled]" if p["throttled"] else ""))
    return lines
