"""Device side of ``edgert lut``: time a prepared job at each frequency setting.

The host (``lut.plan``, which needs onnx) cuts the blocks out of the file's graph and writes
the job; this module needs only numpy and ONNX Runtime, so the agent runs it on a board
(request ``lut.run``) and ``edgert lut --device local`` runs it here the same way. The job
(``ofa/lutjob`` in a copy of the .aio, JSON)::

    {"schema": JOB_SCHEMA, "dims": {dim: size}, "seed": int, "settings": LutSettings,
     "overhead": UNIT,                      # an empty graph: one call's fixed cost
     "blocks": [{"entries": [{"key": "16,32", **UNIT}], "twin": UNIT}],
     "checks": ["1:16,2:32", ...]}          # whole-network configurations, graphs in ofa/graph/<key>
    UNIT = {"graph": tensor name (U8 ONNX), "inputs": {name: shape},
            "weights": {name: {"tensor": file tensor, "ranges": slices}}}

Timing is interleaved in shared rounds: every unit of a setting (the overhead call, each
block's entries and its twin, i.e. its inputs through one Identity, and the whole-network
checks) gets one window per round, in a new seeded order every round, for ``repeats``
rounds, each keeping its least window. On a shared or drifting machine an entry, the twin
subtracted from it and the checks the blocks' sum is judged against then all see the same
conditions (timing block by block, then the checks, let minutes of drift fall between them).
A window is the mean of as many calls as fill ``window_ms``; ``clock="cpu"`` counts this
thread's CPU time instead (the work alone, blind to other processes and to stalls).

At an emulated level (a CPU quota, ``FrequencySetting.period_ms``) the guest CPU idles between
quotas and wakes at a speed that varies from period to period: the same run's windows spread
1.5-2x and their fastest is luck (on this VM the whole-network checks then missed their line by
up to 37%). There each unit is instead timed *paired* with a reference (the costliest unit):
within one window of whole periods of wall time (at least ``EMULATED_WINDOW_PERIODS``), chunks
of about ``PAIR_CHUNK_S`` of CPU time of the unit and of the reference alternate, so both see
the same periods. The unit's CPU time per call over the reference's is its relative cost
(median over rounds); the reference's wall ms per call is its share of each window's wall time
(median over all windows); their product is the unit's ms. A quota stretches every call's wall
time by the same factor, so this is the level's latency, and the relative costs no longer carry
the period-to-period speed. CPU time is the process's (``time.process_time``): all of ORT's
threads, as the quota charges them (with ``threads`` > 1 a worker still spinning after a call
charges the next chunk, the reference's or the unit's: one thread, the default, is exact).

A setting that cannot be applied (a clock that does not take) is left out with a warning.
Device-side: numpy, ONNX Runtime and ``device_agents``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from edgert.errors import SysfsError, UsageError

from . import config as C
from . import tables
from .frequency import FrequencySetting
from .ranges import EXTERNAL_LOCATION, slice_ranges
from .runtime import VariantModel

JOB = "ofa/lutjob"
JOB_GRAPH = "ofa/lutjob/graph/{}"
JOB_SCHEMA = "edgert.aio.lutjob/1"
Run = Callable[[], object]
# windows of 4 of the level's own periods at least: 40 ms at level 1, 160 ms at 0.25 (40 ms periods);
# paired timing (module docstring) cancels the speed each window runs at, so 8 periods were not better
EMULATED_WINDOW_PERIODS = 4
PAIR_CHUNK_S = 0.002  # CPU time of one chunk of a unit's calls in paired timing
MAX_WINDOW_MS = 60_000.0  # one window; a longer one is a typo (and NaN fails the bound too)
MAX_THREADS = 1024  # ORT starts the threads it is asked for: 100000 hung the machine


@dataclasses.dataclass(frozen=True)
class LutSettings:
    window_ms: float = 30.0  # one timing window
    repeats: int = 5  # interleaved rounds; an entry keeps its fastest window (paired: the median)
    checks: int = 8  # random whole-network configurations besides the uniform levels
    seed: int = 0
    threads: int | None = 1
    clock: str = "wall"  # or "cpu": this thread's CPU time
    period_ms: float = 0.0  # > 0: windows are this many ms of wall time (at_setting), not a count of calls

    def __post_init__(self) -> None:
        if not 0 < self.window_ms <= MAX_WINDOW_MS or self.repeats < 1 or self.checks < 0:
            raise UsageError(f"lut: need 0 < window_ms <= {MAX_WINDOW_MS:g}, repeats >= 1, checks >= 0")
        if self.threads is not None and not 0 < self.threads <= MAX_THREADS:
            raise UsageError(f"lut: threads must be 1..{MAX_THREADS}, got {self.threads}")
        if self.period_ms < 0 or (self.period_ms > 0 and self.clock != "wall"):
            raise UsageError("lut: period_ms is a wall-clock quota period (>= 0)")
        if self.clock not in ("wall", "cpu"):
            raise UsageError(f"lut: clock must be 'wall' or 'cpu', not {self.clock!r}")
        if self.clock == "cpu" and self.threads != 1:
            raise UsageError("lut: the cpu clock needs threads=1 (ORT then computes in the calling thread)")


def at_setting(settings: LutSettings, setting: FrequencySetting) -> LutSettings:
    """The timing used at ``setting``: at an emulated level, windows of a whole number of quota
    periods of wall time (module docstring); at a clock, ``settings`` as given."""
    if setting.period_ms <= 0:
        return settings
    periods = max(EMULATED_WINDOW_PERIODS, math.ceil(settings.window_ms / setting.period_ms))
    return dataclasses.replace(settings, period_ms=setting.period_ms, window_ms=periods * setting.period_ms)


def _clock(settings: LutSettings) -> Callable[[], float]:
    return time.thread_time if settings.clock == "cpu" else time.perf_counter


def calls_per_window(run: Run, settings: LutSettings) -> int:
    """How many calls of ``run`` fill one window (after one warm-up call)."""
    clock = _clock(settings)
    run()
    t0 = clock()
    run()
    return max(1, int(settings.window_ms / 1e3 / max(clock() - t0, 1e-6)))


def window_ms(run: Run, calls: int, settings: LutSettings) -> float:
    """Mean ms per call over ``calls`` calls."""
    clock = _clock(settings)
    t0 = clock()
    for _ in range(calls):
        run()
    return (clock() - t0) / calls * 1e3


def interleaved(runs: Sequence[Run], settings: LutSettings, sampler: Any = None
                ) -> list[tuple[float, float | None]]:
    """Per run: (ms of its fastest window, mJ per call in that window or None), the runs taking
    turns in a new seeded order for each of ``repeats`` rounds. With a power ``sampler`` each
    window's mean power times its time per call is its energy per call. At an emulated level
    (``period_ms``) the runs are timed paired (``paired``)."""
    if settings.period_ms > 0:
        return paired(runs, settings, sampler)
    calls = [calls_per_window(r, settings) for r in runs]
    best: list[tuple[float, float | None]] = [(float("inf"), None)] * len(runs)
    for i in _rounds(len(runs), settings):
        if sampler is not None:
            sampler.start()
        ms = window_ms(runs[i], calls[i], settings)
        watts = _mean_watts(sampler)
        if ms < best[i][0]:
            best[i] = (ms, None if watts is None else watts * ms)
    return best


def paired(runs: Sequence[Run], settings: LutSettings, sampler: Any = None
           ) -> list[tuple[float, float | None]]:
    """Per run: (ms per call, mJ per call or None), each run timed against the costliest in
    alternating chunks within windows of ``window_ms`` wall time (module docstring); with a
    ``sampler``, energy is the run's ms times the median of its windows' mean power."""
    chunks = [_chunk_calls(r) for r in runs]
    ref = min(range(len(runs)), key=chunks.__getitem__)
    ratios: list[list[float]] = [[] for _ in runs]
    watts: list[list[float]] = [[] for _ in runs]
    ref_ms = []
    for i in _rounds(len(runs), settings):
        if sampler is not None:
            sampler.start()
        ratio, ms = _pair_window(runs[i], chunks[i], runs[ref], chunks[ref], settings.window_ms / 1e3)
        w = _mean_watts(sampler)
        if w is not None:
            watts[i].append(w)
        ratios[i].append(ratio)
        ref_ms.append(ms)
    scale = float(np.median(ref_ms))
    out = []
    for r, w in zip(ratios, watts):
        ms = float(np.median(r)) * scale
        out.append((ms, float(np.median(w)) * ms if w else None))
    return out


def _rounds(n: int, settings: LutSettings) -> Iterator[int]:
    """Run indices, each once per round, in a new seeded order each of ``repeats`` rounds."""
    rng = np.random.default_rng(settings.seed)
    for _ in range(settings.repeats):
        yield from (int(i) for i in rng.permutation(n))


def _mean_watts(sampler: Any) -> float | None:
    if sampler is None:
        return None
    values = sampler.stop()["values"]
    return float(np.mean(values)) if values else None


def _chunk_calls(run: Run) -> int:
    """How many calls of ``run`` take about ``PAIR_CHUNK_S`` of CPU time (after a warm-up call)."""
    run()
    t0 = time.process_time()
    run()
    return max(1, int(PAIR_CHUNK_S / max(time.process_time() - t0, 1e-6)))


def _pair_window(run: Run, calls: int, ref: Run, ref_calls: int, span_s: float) -> tuple[float, float]:
    """One window of chunks of ``run`` and ``ref`` alternating for ``span_s`` of wall time:
    (CPU time per call of ``run`` over that of ``ref``, ``ref``'s share of the wall time in ms
    per call)."""
    cpu = cpu_ref = 0.0
    pairs = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < span_s:
        a = time.process_time()
        for _ in range(calls):
            run()
        b = time.process_time()
        for _ in range(ref_calls):
            ref()
        cpu += b - a
        cpu_ref += time.process_time() - b
        pairs += 1
    wall = time.perf_counter() - t0
    cpu_ref = max(cpu_ref, 1e-9)
    return (cpu / calls) / (cpu_ref / ref_calls), wall * 1e3 * cpu_ref / (cpu + cpu_ref) / (pairs * ref_calls)


# -- one job ----------------------------------------------------------------------------------

def _unit_run(unit: Mapping[str, Any], graph_of: Callable[[str], bytes], tensors: Mapping[str, np.ndarray],
              settings: LutSettings) -> Run:
    from edgert.backends.ort import CallerWeightsSession
    from edgert.tensors import random_feeds

    weights = {n: slice_ranges(tensors[w["tensor"]], w["ranges"]) for n, w in unit.get("weights", {}).items()}
    session = CallerWeightsSession(graph_of(unit["graph"]), weights, location=EXTERNAL_LOCATION,
                                   threads=settings.threads)
    feeds = random_feeds(session.inputs, {}, settings.seed)  # of each input's own type: ids are ints
    return lambda: session.run(feeds)


def run_job(vm: VariantModel, job: Mapping[str, Any], graph_of: Callable[[str], bytes],
            settings_list: Sequence[FrequencySetting], *, sampler: Any = None,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time ``job`` (module docstring) at every setting that applies; the raw times, per
    setting: ``overhead_ms``, per block ``call_ms`` (its twin), per entry ``entries_ms`` /
    ``entries_mj`` in job order, per check ``checks_ms`` / ``checks_mj``."""
    from edgert.tensors import random_feeds

    settings = LutSettings(**job["settings"])
    tensors = vm._file.tensors
    meta = vm._file.meta
    feeds = random_feeds(vm.inputs, job["dims"], settings.seed)
    checks = [C.decode(meta, text) for text in job["checks"]]
    for c in checks:  # every check's session built (and cached) before any timing
        vm.select_config(c)
    check_runs = [_check_run(vm, c, feeds) for c in checks]
    overhead = _unit_run(job["overhead"], graph_of, tensors, settings)
    block_runs = [[_unit_run(u, graph_of, tensors, settings) for u in (*b["entries"], b["twin"])]
                  for b in job["blocks"]]
    raw: dict[str, Any] = {"frequencies": [], "labels": [], "timing": [], "overhead_ms": [], "warnings": [],
                           "call_ms": [[] for _ in job["blocks"]],
                           "entries_ms": [[] for b in job["blocks"] for _ in b["entries"]],
                           "entries_mj": [[] for b in job["blocks"] for _ in b["entries"]],
                           "checks_ms": [[] for _ in checks], "checks_mj": [[] for _ in checks],
                           "feeds": {k: list(v.shape) for k, v in feeds.items()}}
    for setting in sorted(settings_list, key=lambda s: s.frequency):
        label = setting.label or f"{setting.frequency:g}"
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(setting.apply())
            except SysfsError as exc:
                raw["warnings"].append(f"left out {label}: {exc.message}")
                continue
            if progress:
                progress(f"measuring {len(raw['entries_ms'])} block entries and {len(checks)} networks at {label}")
            timing = at_setting(settings, setting)
            raw["frequencies"].append(setting.frequency)
            raw["labels"].append(setting.label)
            raw["timing"].append({"window_ms": timing.window_ms, "period_ms": timing.period_ms})
            timed = iter(interleaved([overhead, *(r for runs in block_runs for r in runs), *check_runs],
                                     timing, sampler))
            raw["overhead_ms"].append(next(timed)[0])
            e = 0
            for i, runs in enumerate(block_runs):
                for _ in runs[:-1]:
                    ms, mj = next(timed)
                    raw["entries_ms"][e].append(ms)
                    raw["entries_mj"][e].append(mj)
                    e += 1
                raw["call_ms"][i].append(next(timed)[0])  # the twin, last of its block
            for i, (ms, mj) in enumerate(timed):
                raw["checks_ms"][i].append(ms)
                raw["checks_mj"][i].append(mj)
    if not raw["frequencies"]:
        raise SysfsError("lut measured no setting: " + "; ".join(raw["warnings"]))
    return raw


def _check_run(vm: VariantModel, config: C.Config, feeds: Mapping[str, np.ndarray]) -> Run:
    def run() -> object:
        vm.select_config(config)  # cached: a dictionary lookup (the switch costs ~1 us)
        return vm.run(dict(feeds))

    return run


def run_file(path: Any, settings_list: Sequence[FrequencySetting], *, power: str = "none", sysfs_root: str = "/",
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``run_job`` on a job file written by ``lut.write_job`` (the stored graphs only: no onnx)."""
    from edgert.device_agents.sampler import Sampler, open_source

    job = tables.read(path, JOB)
    if job is None or job.get("schema") != JOB_SCHEMA:
        raise UsageError(f"{path} holds no lut job ({JOB_SCHEMA}); `edgert lut --device` writes one")
    threads = job["settings"].get("threads")
    source = open_source(power, sysfs_root) if power != "none" else None
    try:
        with VariantModel(path, threads=threads, config_budget=None) as vm:
            tensors = vm._file.tensors
            raw = run_job(vm, job, lambda name: bytes(tensors[name]), settings_list,
                          sampler=Sampler(source) if source is not None else None, progress=progress)
    finally:
        if source is not None:
            source.close()
    import onnxruntime

    note_power(raw, power, source)
    raw["onnxruntime"] = onnxruntime.__version__
    return raw


def note_power(raw: dict[str, Any], power: str, source: Any) -> None:
    """Record which power source timed the energy, or warn that the one asked for was not found."""
    raw["power_source"] = f"{source.name} ({source.kind})" if source is not None else None
    if power != "none" and source is None:
        raw["warnings"].append(f"--power {power} found no power source: latency only, no energy per block")


# -- frequency settings on this device ---------------------------------------------------------

def cpufreq_settings(policy: str, khz: Sequence[int], sysfs_root: str = "/") -> list[FrequencySetting]:
    """One setting per clock, each pinning ``policy`` (journaled ``DvfsControl``) and restoring after."""
    @contextlib.contextmanager
    def pinned(value: int) -> Iterator[int]:
        from edgert.device_agents.dvfs import DvfsControl
        from edgert.device_agents.sweep import default_journal_path

        with DvfsControl(sysfs_root, journal_path=default_journal_path()) as dvfs:
            yield dvfs.pin_cpu(policy, int(value))

    return [FrequencySetting(float(f), _held(lambda f=f: pinned(f)), f"{policy} {f} kHz") for f in khz]


def _held(apply: Callable[[], contextlib.AbstractContextManager[Any]]
          ) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """``apply`` inside ``clocks_held``: one run at a time changes this device's clocks, and what a
    killed run left pinned (its journal) is restored first."""
    @contextlib.contextmanager
    def held() -> Iterator[Any]:
        from edgert.device_agents.sweep import clocks_held

        with clocks_held(), apply() as value:
            yield value

    return held



def settings_for(cpu_freqs: Sequence[int] | None, policy: str, emulated_levels: Sequence[float] | None,
                 sysfs_root: str = "/") -> tuple[list[FrequencySetting], str, bool]:
    """Frequency settings (and their unit) for cpufreq clocks or emulated levels, as ``calibrate``."""
    from .frequency import emulated_settings

    if bool(cpu_freqs) == bool(emulated_levels):
        raise UsageError("choose one of --cpu-freqs LIST and --emulated LEVELS")
    if cpu_freqs:
        return cpufreq_settings(policy, cpu_freqs, sysfs_root), "khz", False
    from edgert.device_agents.emulated import EmulatedDomain
    from edgert.device_agents.sweep import default_journal_path, emulated_journal_path

    domain = EmulatedDomain(sysfs_root, levels=tuple(emulated_levels or ()), cpus=1,
                            journal_path=emulated_journal_path(default_journal_path()))
    if not domain.available():
        raise SysfsError("emulated levels need a writable cgroup with cpu bandwidth control "
                         "(run as root on cgroup v1 'cpu' or v2 with 'cpu' enabled)")
    return ([dataclasses.replace(s, apply=_held(s.apply)) for s in emulated_settings(domain)],
            "emulated fraction", True)


def serve_request(params: Mapping[str, Any], path: Any, sysfs_root: str,
                  progress: Callable[[Any], None]) -> dict[str, Any]:
    """The agent's ``lut.run``: ``params["request"]`` = {cpu_freqs, policy, emulated_levels,
    power}; the job file at ``path`` (already in the agent's store)."""
    request = params.get("request")
    if not isinstance(request, dict):
        raise UsageError("lut.run needs a request object")
    freqs = [int(f) for f in request.get("cpu_freqs") or []]
    levels = [float(x) for x in request.get("emulated_levels") or []]
    settings, unit, emulated = settings_for(freqs, str(request.get("policy") or "policy0"), levels, sysfs_root)
    raw = run_file(path, settings, power=str(request.get("power") or "none"), sysfs_root=sysfs_root,
                   progress=lambda line: progress({"line": line}))
    raw.update(unit=unit, emulated=emulated, sysfs_root=sysfs_root)
    return raw
