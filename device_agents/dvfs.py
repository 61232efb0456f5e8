"""Pin clocks for a measurement, prove they took, and always put them back.

Three layers of restore, because a sweep that leaves a board pinned at its lowest clock
ruins every later measurement on it:

1. ``DvfsControl`` is a context manager that restores on exit, exceptions included;
2. inside it, SIGTERM/SIGINT/SIGHUP restore first and then take their usual course;
3. each change is preceded by an fsync'd JSON journal entry holding the original value,
   so after a SIGKILL or power cut ``replay_journal`` (run at the agent's next start)
   restores what the dead process could not.

Writes go through ``sysfs.write_text`` and its allow-list.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import threading
import time
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edgert.errors import SysfsError

from . import sysfs
from .discovery import cpufreq_dir
from .fsutil import fsync_dir

JOURNAL_SCHEMA = "edgert.dvfs-journal/1"
Run = Callable[[Sequence[str]], str]


def run_command(argv: Sequence[str]) -> str:
    """Run a board tool (nvpmodel, jetson_clocks); SysfsError when it fails."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SysfsError(f"cannot run {' '.join(argv)}: {exc}", argv=list(argv)) from exc
    if done.returncode != 0:
        raise SysfsError(f"{' '.join(argv)} failed ({done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()}", argv=list(argv))
    return done.stdout


class Journal:
    """Undo entries on disk, written and fsync'd *before* each change.

    Entry kinds: ``file`` (path, original text), ``rmdir`` (path of a created cgroup),
    ``move`` (a cgroup.procs file and pid to move back), ``command`` (argv that undoes).
    With ``path=None`` the journal lives only in memory (no crash recovery).
    """

    def __init__(self, path: str | os.PathLike | None, sysfs_root: str | os.PathLike = "/") -> None:
        self.path = Path(path) if path is not None else None
        self.sysfs_root = str(sysfs_root)
        self.entries: list[dict[str, Any]] = []

    def has_file(self, rel: str) -> bool:
        return any(e["kind"] == "file" and e["path"] == rel for e in self.entries)

    def record(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"schema": JOURNAL_SCHEMA, "pid": os.getpid(),
                "sysfs_root": str(Path(self.sysfs_root).resolve()), "entries": self.entries}
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        with open(fd, "w") as fh:  # a unique name: no other writer can rename it away underneath
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)

    def clear(self) -> None:
        self.entries = []
        if self.path is not None and self.path.exists():
            self.path.unlink()
            fsync_dir(self.path.parent)

    def undo(self, run: Run | None = None) -> None:
        """Undo all entries newest first; try every one, then report the failures."""
        failures = []
        for entry in reversed(self.entries):
            try:
                _undo_one(entry, self.sysfs_root, run or run_command)
            except SysfsError as exc:
                failures.append(exc.message)
        if failures:
            where = (f" (journal {self.path}: once the clocks are restored by hand, or after a reboot, "
                     "delete it)") if self.path else ""
            raise SysfsError("could not restore: " + "; ".join(failures) + where,
                             journal=str(self.path) if self.path else None)
        self.clear()


def _undo_one(entry: dict[str, Any], root: str, run: Run) -> None:
    kind = entry["kind"]
    if kind == "file":
        original = entry["original"]
        # "<unsupported>" (scaling_setspeed outside userspace) is restored by the governor.
        if not original.startswith("<") and sysfs.read_text(root, entry["path"]) != original:
            sysfs.write_text(root, entry["path"], original)
    elif kind == "rmdir":
        sysfs.remove_dir(root, entry["path"])
    elif kind == "move":
        try:
            sysfs.write_text(root, entry["path"], entry["pid"])
        except SysfsError:
            if _alive(entry["pid"]):
                raise  # a dead process needs no moving back
    elif kind == "command":
        run(entry["argv"])
    else:
        raise SysfsError(f"unknown journal entry kind {kind!r}", entry=entry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def exclusive(journal_path: str | os.PathLike, wait: bool = False) -> Iterator[None]:
    """Hold the journal's fcntl lock (``<journal>.lock``) for a whole sweep, replay included.

    A second sweep on the device gets a SysfsError (``reason="busy"``) naming the holder, or
    with ``wait`` waits for it. Two sweeps would otherwise pin clocks under each other and race
    on the journal file.
    """
    path = Path(journal_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            raise SysfsError(f"another sweep{f' (pid {holder})' if holder.isdigit() else ''} is changing "
                             f"clocks on this device (lock {lock.name}): run one sweep at a time",
                             journal=str(path), reason="busy") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def replay_if_idle(journal_path: str | os.PathLike) -> int:
    """``replay_journal`` unless a sweep holds the journal right now (then it is that sweep's
    to restore); for the agent's start, which must not fail because a sweep is running."""
    try:
        with exclusive(journal_path):
            return replay_journal(journal_path)
    except SysfsError as exc:
        if exc.fields.get("reason") == "busy":
            return 0
        raise


def replay_journal(journal_path: str | os.PathLike, sysfs_root: str | os.PathLike | None = None,
                   run: Run | None = None) -> int:
    """Restore what a crashed run left pinned; returns how many entries were undone.

    A missing journal means a clean previous run (returns 0). ``sysfs_root`` defaults to
    the root recorded in the journal. The journal is deleted once everything is restored.
    """
    path = Path(journal_path)
    if not path.exists():
        return 0
    try:
        data = json.loads(path.read_text())
        entries = list(data["entries"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SysfsError(f"DVFS journal {path} is unreadable ({exc}); restore clocks by hand "
                         "or reboot, then delete it", journal=str(path)) from exc
    pid = data.get("pid")
    if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        raise SysfsError(f"DVFS journal {path} belongs to running process {pid}; "
                         "not replaying it underneath that process", journal=str(path), pid=pid)
    journal = Journal(path, sysfs_root if sysfs_root is not None else data.get("sysfs_root", "/"))
    if journal.sysfs_root not in ("", "/") and not Path(journal.sysfs_root).is_dir():
        journal.clear()  # a fixture tree deleted since: nothing is pinned anywhere (it blocked every sweep)
        return 0
    journal.entries = entries
    journal.undo(run)
    return len(entries)


class RestoreOnSignals:
    """On SIGTERM/SIGINT/SIGHUP (a closed terminal or dropped SSH session): run ``restore``,
    then let the signal take its usual course (the previous handler, e.g. KeyboardInterrupt,
    or the default: terminate). A signal the process ignores (``nohup`` ignores SIGHUP) is left
    alone: the run goes on, so its clocks must stay where they are.
    Only the main thread can install handlers; elsewhere this does nothing."""

    def __init__(self, restore: Callable[[], None]) -> None:
        self._restore = restore
        self._previous: dict[int, Any] = {}

    def install(self) -> RestoreOnSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                if signal.getsignal(sig) != signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        try:
            self._restore()
        finally:
            self.uninstall()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.raise_signal(signum)


class DvfsControl:
    """Pin CPU policies, devfreq devices and Jetson power modes; restore on exit.

    Use as ``with DvfsControl(root, journal_path=...) as dvfs: dvfs.pin_cpu("policy0", khz)``.
    A pin whose read-back frequency is off by more than ``tolerance`` raises SysfsError so
    the caller never measures at a clock it did not get.
    """

    def __init__(self, sysfs_root: str | os.PathLike = "/",
                 journal_path: str | os.PathLike | None = None, run: Run | None = None,
                 tolerance: float = 0.02, settle_s: float = 0.0) -> None:
        if journal_path is not None and Path(journal_path).exists():
            raise SysfsError(f"DVFS journal {journal_path} is left from a run that did not "
                             "restore; call replay_journal() first", journal=str(journal_path))
        self.root = str(sysfs_root)
        self.journal = Journal(journal_path, sysfs_root)
        self.run = run or run_command
        self.tolerance = tolerance
        self.settle_s = settle_s
        self._signals = RestoreOnSignals(self.restore)

    # -- context and signals --------------------------------------------------------
    def __enter__(self) -> DvfsControl:
        self._signals = RestoreOnSignals(self.restore).install()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.restore()
        finally:
            self._signals.uninstall()

    def restore(self) -> None:
        """Undo every change made so far (newest first) and delete the journal."""
        self.journal.undo(self.run)

    # -- sysfs changes ----------------------------------------------------------------
    def _set(self, rel: str, value: str | int) -> None:
        if not sysfs.allowed(rel):  # refuse before the journal or the disk is touched
            raise SysfsError(f"refusing to write {rel}: not in the sysfs write allow-list", path=rel)
        if not self.journal.has_file(rel):
            self.journal.record({"kind": "file", "path": rel, "original": sysfs.read_text(self.root, rel)})
        sysfs.write_text(self.root, rel, value)

    def _set_range(self, d: str, min_name: str, max_name: str, value: int) -> None:
        """min = max = value, in the order the kernel accepts (never min > max)."""
        if value >= sysfs.read_int(self.root, f"{d}/{max_name}"):
            self._set(f"{d}/{max_name}", value)
            self._set(f"{d}/{min_name}", value)
        else:
            self._set(f"{d}/{min_name}", value)
            self._set(f"{d}/{max_name}", value)

    def _verify(self, what: str, rel: str, target: int, unit: str) -> int:
        if self.settle_s:
            time.sleep(self.settle_s)
        got = sysfs.read_int(self.root, rel)
        if abs(got - target) > self.tolerance * target:
            raise SysfsError(f"{what} was set to {target} {unit} but reads {got} {unit}; "
                             "the clock did not take, refusing to measure",
                             target=target, actual=got, path=rel)
        return got

    def pin_cpu(self, policy: str, khz: int, method: str = "minmax") -> int:
        """Pin a cpufreq policy ("policy0", or "cpu0" on old kernels); returns the read-back kHz.

        ``minmax`` sets scaling_min_freq = scaling_max_freq (works with any governor);
        ``userspace`` switches to the userspace governor and writes scaling_setspeed.
        """
        d = cpufreq_dir(policy)
        return self._pin(f"CPU {policy}", d, khz, "kHz", method,
                         table="scaling_available_frequencies", current="scaling_cur_freq",
                         minmax=("scaling_min_freq", "scaling_max_freq"),
                         userspace=("scaling_governor", "scaling_setspeed"))

    def pin_devfreq(self, name: str, hz: int, method: str = "minmax") -> int:
        """Pin a devfreq device (e.g. a Jetson GPU); returns the read-back Hz."""
        d = f"sys/class/devfreq/{name}"
        if not sysfs.exists(self.root, f"{d}/cur_freq"):
            raise SysfsError(f"no devfreq device {name!r}", device=name)
        return self._pin(f"devfreq {name}", d, hz, "Hz", method, table="available_frequencies",
                         current="cur_freq", minmax=("min_freq", "max_freq"),
                         userspace=("governor", "userspace/set_freq"))

    def _pin(self, what: str, d: str, value: int, unit: str, method: str, *, table: str,
             current: str, minmax: tuple[str, str], userspace: tuple[str, str]) -> int:
        """Refuse a value outside the frequency table, write it one of two ways, read it back."""
        allowed = [int(x) for x in sysfs.read_text(self.root, f"{d}/{table}").split()] \
            if sysfs.exists(self.root, f"{d}/{table}") else []
        if allowed and value not in allowed:
            raise SysfsError(f"{value} {unit} is not a frequency of {what} (has {sorted(allowed)})",
                             target=value, unit=unit)
        if method == "userspace":
            self._set(f"{d}/{userspace[0]}", "userspace")
            self._set(f"{d}/{userspace[1]}", value)
        elif method == "minmax":
            self._set_range(d, minmax[0], minmax[1], value)
        else:
            raise SysfsError(f"unknown pin method {method!r} for {what} (use minmax or userspace)")
        return self._verify(what, f"{d}/{current}", value, unit)

    # -- Jetson tools -----------------------------------------------------------------
    def nvpmodel_mode(self) -> int:
        """Current nvpmodel mode id (``nvpmodel -q`` prints the name, then the id)."""
        out = self.run(["nvpmodel", "-q"]).split()
        if not out or not out[-1].isdigit():
            raise SysfsError(f"unexpected nvpmodel -q output: {' '.join(out)!r}")
        return int(out[-1])

    def set_nvpmodel(self, mode: int) -> None:
        original = self.nvpmodel_mode()
        self.journal.record({"kind": "command", "argv": ["nvpmodel", "-m", str(original)]})
        self.run(["nvpmodel", "-m", str(mode)])
        if self.nvpmodel_mode() != mode:
            raise SysfsError(f"nvpmodel mode {mode} did not take; refusing to measure", mode=mode)

    def jetson_clocks(self, store_path: str | os.PathLike) -> None:
        """Lock clocks at the mode's maximum; the stored settings are restored afterwards."""
        self.run(["jetson_clocks", "--store", str(store_path)])
        self.journal.record({"kind": "command", "argv": ["jetson_clocks", "--restore", str(store_path)]})
        self.run(["jetson_clocks"])
