"""An "emulated" DVFS domain for machines without cpufreq: cgroup CPU bandwidth limits.

A quota is not a slower clock. The CFS bandwidth controller lets the group run at full
speed for ``quota`` µs of every ``period`` µs and then stalls it, so a model that fits in
one period runs at full speed or waits a whole period (bimodal), and the slowdown is not
``1 / level``. Hence levels are only settings: their effect is measured by
``characterise`` (never assumed), short workloads are flagged, the period is picked by
``choose_period``, and every dict produced here says ``"emulated": True``.

A low level also stretches its own period (``period_for``). Each CPU's runqueue draws quota
from the group in slices (``sched_cfs_bandwidth_slice_us``, 5 ms by default) and usage is
charged at scheduler ticks (4 ms at HZ=250), so a quota of a few ms is overrun by a
random part of a slice or a tick and the CPU share scatters widely from period to period
(measured on the digits CNN at level 0.25: block-table errors of 12-18% with a 2.5 ms quota,
6.5-11% with a 10 ms one; benchmarks/results/ofa.md). A level's period is therefore long
enough for a quota of ``min_quota_us`` (two slices unless set) per CPU. A caller that picked
its period by measuring single runs (the sweep, via ``choose_period``) keeps it at every
level: ``min_quota_us=0``.

cgroup v1 (``cpu.cfs_quota_us``/``cpu.cfs_period_us``) and v2 (``cpu.max``) are supported;
the child group ``edgert-emulated`` is created under the process's current cpu cgroup,
journaled like any DVFS change (see ``dvfs.Journal``), and removed afterwards.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgert.errors import SysfsError

from . import sysfs
from .dvfs import Journal, RestoreOnSignals

DOMAIN = "emulated"
MIN_QUOTA_US = 1000  # kernel minimum for cfs_quota_us (kernel/sched/core.c)
MAX_PERIOD_US = 1_000_000  # kernel maximum for cfs_period_us
DEFAULT_SLICE_US = 5000  # sched_cfs_bandwidth_slice_us when /proc does not say
QUOTA_SLICES = 2  # a level's quota per CPU spans at least this many bandwidth slices


def bandwidth_slice_us(proc_root: str | os.PathLike = "/proc") -> int:
    """The kernel's CFS bandwidth slice: how much quota a runqueue takes from its group at once."""
    try:
        return int((Path(proc_root) / "sys/kernel/sched_cfs_bandwidth_slice_us").read_text())
    except (OSError, ValueError):
        return DEFAULT_SLICE_US


def _stats_ms(times_s: list[float]) -> dict[str, float]:
    ms = sorted(t * 1e3 for t in times_s)
    q = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else [ms[0]] * 9
    return {"median_ms": statistics.median(ms), "p10_ms": q[0], "p90_ms": q[-1]}


class EmulatedDomain:
    """CPU-bandwidth levels (fractions of ``cpus`` CPUs) applied through a child cgroup.

    ``cpus`` is how many CPUs the workload keeps busy (its thread count, at most the CPUs it
    may run on): level 0.5 with cpus=1 allows half of one CPU per period. ``period_us`` is the
    period of every level whose quota per CPU reaches ``min_quota_us`` (None: two bandwidth
    slices; 0: never stretch); lower levels get the longer period ``period_for`` gives.
    """

    def __init__(self, sysfs_root: str | os.PathLike = "/", levels: tuple[float, ...] = (1.0, 0.5, 0.25),
                 period_us: int = 10000, cpus: int | None = None, name: str | None = None,
                 journal_path: str | os.PathLike | None = None, proc_root: str | os.PathLike = "/proc",
                 min_read_interval_s: float = 0.2, min_quota_us: int | None = None) -> None:
        # one group per process: two processes sharing a group would set each other's quota
        name = name or f"edgert-emulated-{os.getpid()}"
        if not name.startswith("edgert-"):
            raise SysfsError(f"emulated cgroup name must start with 'edgert-' (got {name!r})")
        self.root = str(sysfs_root)
        self.levels = tuple(sorted(levels, reverse=True))
        self.period_us = period_us
        self.cpus = cpus or len(os.sched_getaffinity(0))
        self.name = name
        self.journal_path = journal_path
        self.proc_root = Path(proc_root)
        self.min_read_interval_s = min_read_interval_s
        self.min_quota_us = (QUOTA_SLICES * bandwidth_slice_us(self.proc_root)
                             if min_quota_us is None else min_quota_us)
        self._cached: tuple[float, float] | None = None  # (monotonic time, level)

    # -- where the cgroup lives -------------------------------------------------------
    def _own_cgroup(self, version: str) -> str:
        """This process's cgroup path for the cpu controller (v1) or the unified tree (v2)."""
        try:
            lines = (self.proc_root / str(os.getpid()) / "cgroup").read_text().splitlines()
        except OSError:
            return "/"
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if (version == "v1" and "cpu" in controllers.split(",")) or (version == "v2" and controllers == ""):
                return path
        return "/"

    def _layout(self) -> tuple[str, str] | None:
        """(version, root-relative parent directory) of a usable cpu cgroup, or None."""
        v1 = "sys/fs/cgroup/cpu"
        if sysfs.exists(self.root, f"{v1}/cpu.cfs_quota_us"):
            return "v1", _join(v1, self._own_cgroup("v1"))
        for base in ("sys/fs/cgroup", "sys/fs/cgroup/unified"):
            if sysfs.exists(self.root, f"{base}/cgroup.controllers"):
                parent = _join(base, self._own_cgroup("v2"))
                ctl = f"{parent}/cgroup.subtree_control"
                if sysfs.exists(self.root, ctl) and "cpu" in sysfs.read_text(self.root, ctl).split():
                    return "v2", parent
        return None

    def available(self) -> bool:
        """True when a cpu cgroup is mounted, has bandwidth control and we may create groups."""
        layout = self._layout()
        return layout is not None and os.access(sysfs.resolve(self.root, layout[1]), os.W_OK)

    def _child(self) -> tuple[str, str]:
        layout = self._layout()
        if layout is None:
            raise SysfsError("no cgroup cpu bandwidth control here (need cgroup v1 'cpu' or v2 "
                             "with 'cpu' in cgroup.subtree_control)", domain=DOMAIN)
        return layout[0], f"{layout[1]}/{self.name}"

    # -- applying a level -------------------------------------------------------------
    def period_for(self, level: float) -> int:
        """The cgroup period of ``level``: ``period_us``, or longer where the quota per CPU would
        fall below ``min_quota_us`` (see the module docstring)."""
        if not 0 < level <= 1:
            raise SysfsError(f"emulated level must be in (0, 1], got {level}", level=level)
        if level == 1:
            return self.period_us
        period = max(self.period_us, math.ceil(self.min_quota_us / level))
        if period > MAX_PERIOD_US:
            raise SysfsError(f"level {level} needs a {period} us period for a {self.min_quota_us} us quota, "
                             f"above the kernel maximum of {MAX_PERIOD_US} us; use a higher level",
                             level=level, period_us=period)
        return period

    def quota_us(self, level: float) -> int | None:
        """CFS quota for ``level`` at ``period_for(level)``; None means unlimited (level 1.0)."""
        period = self.period_for(level)
        if level == 1:
            return None
        quota = round(level * period * self.cpus)
        if quota < MIN_QUOTA_US:
            raise SysfsError(f"level {level} at period {period} us gives a {quota} us quota, "
                             f"below the kernel minimum of {MIN_QUOTA_US} us; use a longer period",
                             level=level, period_us=period)
        return quota

    @contextmanager
    def pinned(self, level: float, pid: int | None = None) -> Iterator[dict[str, Any]]:
        """Run the block with process ``pid`` (default: this one, all threads) at ``level``."""
        quota = self.quota_us(level)
        period = self.period_for(level)
        version, child = self._child()
        pid = pid or os.getpid()
        parent_procs = f"{child.rsplit('/', 1)[0]}/cgroup.procs"
        journal = Journal(self.journal_path, self.root)
        signals = RestoreOnSignals(journal.undo).install()
        try:
            journal.record({"kind": "rmdir", "path": child})
            sysfs.make_dir(self.root, child)
            if version == "v1":
                sysfs.write_text(self.root, f"{child}/cpu.cfs_period_us", period)
                sysfs.write_text(self.root, f"{child}/cpu.cfs_quota_us", -1 if quota is None else quota)
            else:
                sysfs.write_text(self.root, f"{child}/cpu.max",
                                 f"{'max' if quota is None else quota} {period}")
            journal.record({"kind": "move", "path": parent_procs, "pid": pid})
            sysfs.write_text(self.root, f"{child}/cgroup.procs", pid)
            self._cached = None
            yield {**self.describe(), "level": level, "quota_us": quota, "period_us": period}
        finally:
            try:
                journal.undo()
            finally:
                signals.uninstall()
                self._cached = None

    def current_level(self) -> float:
        """The level this process runs at now (1.0 when not limited); re-read from the cgroup
        at most every ``min_read_interval_s`` so a selector may call it per inference."""
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self.min_read_interval_s:
            return self._cached[1]
        level = 1.0
        layout = self._layout()
        if layout is not None and layout[1].endswith("/" + self.name):
            level = self._read_level(*layout)
        self._cached = (now, level)
        return level

    def _read_level(self, version: str, group: str) -> float:
        if version == "v1":
            quota = sysfs.read_int(self.root, f"{group}/cpu.cfs_quota_us")
            period = sysfs.read_int(self.root, f"{group}/cpu.cfs_period_us")
        else:
            q, p = sysfs.read_text(self.root, f"{group}/cpu.max").split()
            quota, period = (-1 if q == "max" else int(q)), int(p)
        return 1.0 if quota < 0 else min(1.0, quota / (period * self.cpus))

    def describe(self) -> dict[str, Any]:
        layout = self._layout()
        return {"domain": DOMAIN, "emulated": True, "cgroup": layout[0] if layout else None,
                "period_us": self.period_us, "cpus": self.cpus, "levels": list(self.levels),
                "periods_us": [self.period_for(level) for level in self.levels]}

    # -- measuring what a level really does ---------------------------------------------
    def _time(self, workload: Callable[[], object], level: float, repeats: int, warmup: int) -> list[float]:
        with self.pinned(level):
            for _ in range(warmup):
                workload()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                workload()
                times.append(time.perf_counter() - t0)
        return times

    def characterise(self, workload: Callable[[], object], repeats: int = 15,
                     warmup: int = 3) -> list[dict[str, Any]]:
        """Measure ``workload`` at every level. ``slowdown`` is the measured median ratio to
        level 1.0; ``short`` marks a workload under five periods (expect bimodal times),
        ``unstable`` a p90 more than 1.5x the p10."""
        rows = []
        base = None
        for level in self.levels:
            s = _stats_ms(self._time(workload, level, repeats, warmup))
            base = base if base is not None else s["median_ms"]
            period = self.period_for(level)
            rows.append({"domain": DOMAIN, "emulated": True, "level": level,
                         "period_us": period, **s,
                         "slowdown": s["median_ms"] / base,
                         "short": base < 5 * period / 1e3,
                         "unstable": s["p90_ms"] > 1.5 * s["p10_ms"]})
        return rows

    def choose_period(self, workload: Callable[[], object], level: float = 0.5,
                      candidates_us: tuple[int, ...] = (2000, 5000, 10000, 20000, 50000),
                      repeats: int = 9) -> dict[str, Any]:
        """Pick the period whose times at ``level`` spread least ((p90-p10)/median), set it,
        and return every candidate's measurement (meant for ``min_quota_us=0``: a stretching
        domain runs ``level`` at ``period_for(level)``, not at the candidate)."""
        rows = []
        original = self.period_us
        try:
            for period in candidates_us:
                self.period_us = period
                try:
                    self.quota_us(level)
                except SysfsError:
                    continue  # quota below the kernel minimum at this period
                s = _stats_ms(self._time(workload, level, repeats, warmup=2))
                rows.append({"period_us": period, **s,
                             "spread": (s["p90_ms"] - s["p10_ms"]) / s["median_ms"]})
        finally:
            self.period_us = original
        if not rows:
            raise SysfsError(f"no candidate period gives level {level} a quota of at least "
                             f"{MIN_QUOTA_US} us", level=level)
        best = min(rows, key=lambda r: (round(r["spread"], 2), r["period_us"]))
        self.period_us = best["period_us"]
        return {"domain": DOMAIN, "emulated": True, "level": level,
                "period_us": best["period_us"], "candidates": rows}


def _join(base: str, cgroup_path: str) -> str:
    return "/".join(p for p in [base, *cgroup_path.split("/")] if p)
