"""The device half of ``edgert sweep``: pin each setting, measure, read back, restore.

Runs in-process (local) or inside the agent (``serve_request``). It returns raw data only
(run times, power samples, read-backs, temperatures, errors per point); ``edgert.sweep``
on the host turns them into the result file. For every point:

    pin the setting (DvfsControl / EmulatedDomain; a clock that does not take -> error point)
    -> thermal gate -> idle power baseline -> sampler on -> run_benchmark -> sampler off
    -> read back clocks and temperatures

Every sysfs change is journaled (``dvfs.Journal``) and undone when the sweep ends, also on
errors and SIGTERM; a journal left by a killed sweep is replayed before the next one starts.

The request is a ``settings.SweepRequest`` (its fields and defaults are documented there);
the model file and the feeds come beside it. ``all_levels``: the model is an All-in-One file (``edgert calibrate``); every level is measured
in turn at each setting (one pin, thermal gate and idle baseline per setting, a power window
per level), and each point says which ``level`` it timed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgert.backends import BackendOptions
from edgert.errors import SysfsError, UsageError
from edgert.runner import peak_rss_bytes, prepared_session, run_benchmark
from edgert.settings import SweepRequest
from edgert.tensors import random_feeds
from edgert.timing import measure

from . import discovery, protocol, sysfs
from .dvfs import DvfsControl, exclusive, replay_journal
from .emulated import EmulatedDomain
from .sampler import Sampler, open_source, read_temperatures, thermal_gate

RAW_SCHEMA = "edgert.sweep-raw/1"
Progress = Callable[[dict[str, Any]], None]


def default_journal_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edgert" / "dvfs-journal.json"


def emulated_journal_path(journal: Path) -> Path:
    """The emulated domain's journal beside the clocks' (its cgroup, restored the same way)."""
    return journal.with_name(journal.stem + ".emulated.json")


def journals(journal: Path | None = None) -> tuple[Path, Path]:
    """The clocks' journal and the emulated domain's beside it (default: this device's)."""
    journal = Path(journal or default_journal_path())
    return journal, emulated_journal_path(journal)


@contextlib.contextmanager
def clocks_held(journal: Path | None = None) -> Iterator[list[str]]:
    """Hold this device's clocks (``exclusive``) after restoring what an earlier run that did not
    finish left pinned (both journals: a SIGKILL leaves them); yields the warnings saying so."""
    journal = Path(journal or default_journal_path())
    warnings: list[str] = []
    with exclusive(journal):
        for path in journals(journal):
            undone = replay_journal(path)
            if undone:
                warnings.append(f"restored {undone} setting(s) left pinned by an earlier run that did not "
                                f"finish (journal {path})")
        yield warnings


# --- what to sweep ----------------------------------------------------------------------

def plan(request: SweepRequest, root: str) -> list[dict[str, Any]]:
    """The settings to visit, in order: CPU frequencies, then GPU, then emulated levels."""
    points: list[dict[str, Any]] = []
    cpu_freqs = request.cpu_freqs
    if cpu_freqs:
        policies = discovery.read_cpufreq(root)
        chosen = list(request.cpu_policies) or [p["policy"] for p in policies]
        known = {p["policy"]: p for p in policies}
        if not policies:
            raise SysfsError(f"no cpufreq policies under {root}: this machine cannot pin CPU clocks "
                             "(use --emulated LEVELS to sweep CPU quota levels instead)")
        unknown = [c for c in chosen if c not in known]
        if unknown:
            raise UsageError(f"no cpufreq policy {', '.join(unknown)} (have {', '.join(known)})")
        if cpu_freqs == "all":
            cpu_freqs = sorted({f for c in chosen for f in known[c]["frequencies_khz"]})
            if not cpu_freqs:
                raise UsageError("the cpufreq driver lists no frequencies (intel_pstate/amd-pstate?): "
                                 "give --cpu-freqs as a list of kHz")
        points += [{"domain": "+".join(chosen), "kind": "cpu", "policies": chosen,
                    "requested": int(f), "unit": "kHz"} for f in cpu_freqs]
    gpu_freqs = request.gpu_freqs
    if gpu_freqs:
        devices = discovery.read_devfreq(root)
        name = request.gpu_device or next((d["name"] for d in devices if d["kind"] == "gpu"), None)
        device = next((d for d in devices if d["name"] == name), None)
        if device is None:
            raise UsageError(f"no devfreq device {name or '(GPU)'} under {root} (have "
                             f"{', '.join(d['name'] for d in devices) or 'none'})")
        if gpu_freqs == "all":
            gpu_freqs = device["frequencies_hz"]
            if not gpu_freqs:
                raise UsageError(f"{name} lists no available_frequencies: give --gpu-freqs as Hz")
        points += [{"domain": name, "kind": "gpu", "requested": int(f), "unit": "Hz"} for f in gpu_freqs]
    for level in request.emulated_levels:
        points.append({"domain": "emulated", "kind": "emulated", "requested": float(level), "unit": "share"})
    if not points:
        raise UsageError("nothing to sweep: give CPU frequencies, GPU frequencies or emulated levels")
    return points


# --- pinning and reading back -------------------------------------------------------------

def _cpu_readback(root: str, policies: list[str]) -> dict[str, int | None]:
    return {p: sysfs.read_optional_int(root, f"{discovery.cpufreq_dir(p)}/scaling_cur_freq") for p in policies}


def _readback(root: str, setting: dict[str, Any], emulated: EmulatedDomain | None) -> dict[str, Any]:
    if setting["kind"] == "cpu":
        by = _cpu_readback(root, setting["policies"])
        values = [v for v in by.values() if v is not None]
        return {"readback": min(values) if values else None, "readback_by_domain": by}
    if setting["kind"] == "gpu":
        return {"readback": sysfs.read_optional_int(root, f"sys/class/devfreq/{setting['domain']}/cur_freq")}
    assert emulated is not None
    emulated.min_read_interval_s = 0.0
    return {"readback": emulated.current_level()}


@contextlib.contextmanager
def _pinned(setting: dict[str, Any], dvfs: DvfsControl, emulated: EmulatedDomain | None,
            method: str) -> Iterator[None]:
    """Hold ``setting`` for the block. DVFS pins stay until the sweep restores everything;
    an emulated level is undone when the block ends."""
    if setting["kind"] == "cpu":
        for policy in setting["policies"]:
            dvfs.pin_cpu(policy, setting["requested"], method)
        yield
    elif setting["kind"] == "gpu":
        dvfs.pin_devfreq(setting["domain"], setting["requested"], method)
        yield
    else:
        assert emulated is not None
        with emulated.pinned(setting["requested"]):
            yield


# Raspberry Pi firmware flags that mean "slowed down right now" (not the sticky *_occurred bits).
_PI_THROTTLE_NOW = ("throttled", "arm_freq_capped", "soft_temp_limit")


def _throttled(setting: dict[str, Any], after: Any, tolerance: float,
               pi: dict[str, Any] | None) -> bool | None:
    """A DVFS clock that dropped below the pinned value during the run (thermal or power cap),
    or the Pi firmware saying it is throttling; None when neither can be known (emulated)."""
    pi_now = bool(pi and any(pi["flags"].get(f) for f in _PI_THROTTLE_NOW))
    if setting["kind"] == "emulated" or after is None:
        return True if pi_now else None
    return after < setting["requested"] * (1 - tolerance) or pi_now


# --- what runs at each setting -------------------------------------------------------------

Tick = Callable[[int, float], None]


@dataclasses.dataclass(frozen=True)
class Workload:
    """One thing timed at every setting: the model, or one level of an All-in-One file."""

    level: dict[str, Any] | None  # {"index", "ratio"} for an All-in-One level
    run: Callable[[Tick], dict[str, Any]]  # -> run_benchmark's dict (backend, inputs, outputs, raw, ...)
    once: Callable[[], object] | None = None  # one untimed run (choosing the emulated period)


def _workloads(request: SweepRequest, model: Path, feeds: Mapping[str, np.ndarray],
               options: BackendOptions, stack: contextlib.ExitStack) -> list[Workload]:
    settings, dims = request.settings, request.dims
    if not request.all_levels:
        return [Workload(None, lambda tick: run_benchmark(model, request.backend, settings, options=options,
                                                          dims=dims, feeds=feeds, progress=tick))]
    from edgert.variants.runtime import VariantModel  # numpy + onnxruntime

    if request.backend != "ort":
        raise UsageError(f"All-in-One levels run on ONNX Runtime, not {request.backend!r}")
    vm = stack.enter_context(VariantModel(model, threads=settings.threads))
    all_feeds = {**random_feeds([s for s in vm.inputs if s.name not in feeds], dims, settings.seed), **feeds}
    described = {"backend": {"name": "ort", "all_in_one": True, "strategies": vm.memory()["strategies"]},
                 "inputs": [s.to_dict() | {"shape": list(all_feeds[s.name].shape)} for s in vm.inputs],
                 "outputs": [s.to_dict() for s in vm.outputs]}

    def level(index: int) -> Workload:
        def run(tick: Tick) -> dict[str, Any]:
            vm.select_index(index)
            vm.run(all_feeds)  # errors surface before timing starts
            raw = measure(lambda: vm.run(all_feeds), settings, tick)
            return {**described, "raw": raw.to_dict(), "peak_rss_bytes": peak_rss_bytes()}

        return Workload({"index": index, "ratio": vm.levels[index].ratio}, run,
                        lambda: (vm.select_index(index), vm.run(all_feeds)))

    return [level(lv.index) for lv in vm.levels]


# --- the sweep ---------------------------------------------------------------------------

def run_sweep(request: SweepRequest, model: Path, feeds: Mapping[str, np.ndarray] | None = None,
              progress: Progress | None = None) -> dict[str, Any]:
    """Measure ``model`` at every setting ``request`` plans; restore; return raw data.

    Returns ``{"schema": "edgert.sweep-raw/1", "backend", "inputs", "outputs", "power_source",
    "points": [...], "warnings": [...]}``; each point holds ``setting``, ``error``, and when
    measured ``raw`` (RawRun dict), ``power``/``idle_power`` (Sampler dicts), ``thermal_gate``,
    ``temperatures_before_c``/``temperatures_after_c``, ``throttled``, ``peak_rss_bytes``.
    """
    root = request.sysfs_root or "/"
    settings = request.settings
    journal = Path(request.journal_path or default_journal_path())
    emulated_journal = emulated_journal_path(journal)
    with contextlib.ExitStack() as stack:
        warnings = stack.enter_context(clocks_held(journal))
        points_plan = plan(request, root)
        options = BackendOptions(threads=settings.threads, target=request.target)
        workloads = _workloads(request, Path(model), feeds or {}, options, stack)
        return _sweep(request, root, points_plan, workloads, journal, emulated_journal, warnings,
                      progress, lambda: prepared_session(Path(model), request.backend, settings,
                                                         options=options, dims=request.dims,
                                                         feeds=feeds or {}))


def _sweep(request: SweepRequest, root: str, points_plan: list[dict[str, Any]],
           workloads: list[Workload], journal: Path, emulated_journal: Path, warnings: list[str],
           progress: Progress | None, open_session: Callable[[], Any]) -> dict[str, Any]:
    settings = request.settings
    emulated = None
    if any(p["kind"] == "emulated" for p in points_plan):
        emulated = EmulatedDomain(root, levels=request.emulated_levels,
                                  period_us=request.emulated_period_us or 10000,  # or chosen below
                                  cpus=request.emulated_cpus or settings.threads,
                                  # EmulatedDomain reuses an existing group of its name: keep
                                  # ours apart from other edgert processes on the machine.
                                  name=f"edgert-sweep-{os.getpid()}",
                                  journal_path=emulated_journal,
                                  # the period is given or chosen by measuring this model's runs:
                                  # every level keeps it (no stretching of low levels' periods)
                                  min_quota_us=0)
        if not emulated.available():
            raise SysfsError("emulated levels need a writable cgroup with cpu bandwidth control "
                             "(run as root on cgroup v1 'cpu' or v2 with 'cpu' enabled)")
        if request.emulated_period_us is None:
            chosen = _choose_period(emulated, workloads[0].once, open_session)
            warnings.append(f"emulated domain: cgroup period {chosen['period_us']} us chosen by "
                            "measurement (least spread at the lowest level)")
    source = open_source(request.power, root)
    method = request.pin_method
    out: dict[str, Any] = {"schema": RAW_SCHEMA, "power_source": None, "points": [], "warnings": warnings,
                           "sysfs_root": root}
    if source is not None:
        out["power_source"] = {"name": source.name, "kind": source.kind}
    try:
        with DvfsControl(root, journal_path=journal) as dvfs:
            for index, setting in enumerate(points_plan):
                if index and setting["kind"] != points_plan[index - 1]["kind"]:
                    dvfs.restore()  # GPU points ran with the CPU still pinned at the last CPU setting
                if progress is not None:
                    progress({"point": index, "points": len(points_plan), "setting": _public(setting)})
                for point in _measure_setting(request, root, setting, workloads, dvfs, emulated,
                                              source, method, progress, index, len(points_plan)):
                    measured = point.pop("measured", None)
                    if measured is not None and "backend" not in out:
                        out.update(backend=measured["backend"], inputs=measured["inputs"],
                                   outputs=measured["outputs"])
                    out["points"].append(point)
    finally:
        if source is not None:
            source.close()
    if emulated is not None:
        out["emulated_period_us"] = emulated.period_us
        warnings += _short_model_warnings(out["points"], emulated.period_us)
    return out


def _choose_period(emulated: EmulatedDomain, once: Callable[[], object] | None,
                   open_session: Callable[[], Any]) -> dict[str, Any]:
    """Quota is not a clock: pick the period whose latency spreads least, by measuring the model
    (an All-in-One file: its first level; a model: in a session closed again before the sweep)."""
    if once is not None:
        once()
        return emulated.choose_period(once, level=min(emulated.levels))
    with open_session() as (_, session, feeds):
        session.run(feeds)
        return emulated.choose_period(lambda: session.run(feeds), level=min(emulated.levels))


def _short_model_warnings(points: list[dict[str, Any]], period_us: int) -> list[str]:
    """A run shorter than a few cgroup periods slips inside one period's quota: flag it."""
    out = []
    for point in points:
        raw = point.get("raw")
        if raw and point["emulated"] and point["setting"]["requested"] >= 1.0:
            median_ms = float(np.median(raw["samples_ns"])) / 1e6
            if median_ms < 5 * period_us / 1000:
                what = "the model" if point.get("level") is None else f"the {point['level']['ratio']:.0%} pruned level"
                out.append(f"{what} runs {median_ms:.2f} ms at full speed, under five cgroup periods "
                           f"({5 * period_us / 1000:g} ms): emulated slowdowns are coarse and may be "
                           "bimodal")
    return out


def _public(setting: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in setting.items() if k != "policies"}


def _measure_setting(request: SweepRequest, root: str, setting: dict[str, Any],
                     workloads: list[Workload], dvfs: DvfsControl, emulated: EmulatedDomain | None,
                     source: Any, method: str, progress: Progress | None, index: int,
                     total: int) -> list[dict[str, Any]]:
    """Pin ``setting`` and time every workload under it: one point per workload (an error point
    when the clock does not take)."""
    base: dict[str, Any] = {"setting": {**_public(setting), "readback": None},
                            "emulated": setting["kind"] == "emulated", "error": None}
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_pinned(setting, dvfs, emulated, method))
        except SysfsError as exc:  # the clock did not take: no measurement at this point
            base["setting"]["readback"] = exc.fields.get("actual")  # what the clock stayed at
            return [{**base, "error": exc.message, "level": w.level} for w in workloads]
        base["setting"].update(_readback(root, setting, emulated))
        base["thermal_gate"] = thermal_gate(root, request.cool_below_c, request.cool_timeout_s)
        sampler = Sampler(source, request.sample_rate_hz) if source else None
        base["idle_power"] = sampler.sample_for(request.idle_s) if sampler else None
        return [_measure_workload(root, base, setting, workload, sampler, dvfs, emulated, progress, index, total)
                for workload in workloads]


def _measure_workload(root: str, base: dict[str, Any], setting: dict[str, Any], workload: Workload,
                      sampler: Sampler | None, dvfs: DvfsControl, emulated: EmulatedDomain | None,
                      progress: Progress | None, index: int, total: int) -> dict[str, Any]:
    idle = base["idle_power"]  # one baseline per setting; a copy per point (packing is in place)
    point = {**base, "setting": dict(base["setting"]), "idle_power": dict(idle) if idle else None,
             "level": workload.level, "temperatures_before_c": read_temperatures(root)}

    def tick(n: int, ms: float) -> None:
        if progress is not None:
            progress({"point": index, "points": total, "level": workload.level, "runs": n, "elapsed_ms": ms})

    if sampler:
        sampler.start()
    try:
        measured = workload.run(tick)
    finally:
        point["power"] = sampler.stop() if sampler else None
    after = _readback(root, setting, emulated)["readback"]
    point["setting"]["readback_after"] = after
    point["temperatures_after_c"] = read_temperatures(root)
    pi = discovery.read_pi_throttled(discovery.run_vcgencmd) if shutil.which("vcgencmd") else None
    if pi is not None:
        point["pi_throttled"] = pi
    point["throttled"] = _throttled(setting, after, dvfs.tolerance, pi)
    point["raw"] = measured["raw"]
    point["peak_rss_bytes"] = measured["peak_rss_bytes"]
    point["measured"] = {k: measured[k] for k in ("backend", "inputs", "outputs")}
    return point


# --- over the wire -----------------------------------------------------------------------

_RAW_ARRAYS = {"samples_ns": np.int64, "starts_ns": np.int64, "warmup_ns": np.int64}
_POWER_ARRAYS = {"t_ns": np.int64, "values": np.float64}


def _convert(raw: dict[str, Any], pack: bool) -> dict[str, Any]:
    for point in raw["points"]:
        for block, arrays in (("raw", _RAW_ARRAYS), ("power", _POWER_ARRAYS), ("idle_power", _POWER_ARRAYS)):
            data = point.get(block)
            if not data:
                continue
            for key, dtype in arrays.items():
                data[key] = protocol.pack_array(np.asarray(data[key], dtype=dtype)) if pack \
                    else protocol.unpack_array(data[key]).tolist()
    return raw


def pack_raw(raw: dict[str, Any]) -> dict[str, Any]:
    """Sample lists -> ``protocol.pack_array`` blocks (in place), for the agent's reply."""
    return _convert(raw, pack=True)


def unpack_raw(raw: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``pack_raw`` (on the host)."""
    return _convert(raw, pack=False)


def serve_request(params: dict[str, Any], model_path: Path, sysfs_root: str,
                  progress: Progress | None = None) -> dict[str, Any]:
    """The agent's ``sweep.run``: unpack feeds, run the sweep on the stored model, pack samples.

    The journal always lives at the device's default path and sysfs is read under the agent's
    own root (a host may not pick files to write).
    """
    sent = SweepRequest.from_dict(params.get("request"))
    request = dataclasses.replace(sent, journal_path=None, sysfs_root=sysfs_root)
    feeds = {k: np.array(protocol.unpack_array(v)) for k, v in (params.get("feeds") or {}).items()}
    return pack_raw(run_sweep(request, model_path, feeds, progress))
