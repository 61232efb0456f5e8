"""Many boards at once: one benchmark session per board, in parallel; a failing board is recorded.

Every board runs ``edgert.bench.bench`` in its own thread (the host mostly waits on the agents,
so threads are enough). labgrid places are expanded (tag selectors) and acquired here, on the
calling thread, before any board starts, and released when all have finished, also on Ctrl-C:
the workers are daemon threads, so an interrupt ends the run at once instead of waiting for
every board, and the SSH sessions close with the process.

A board that fails gets its ``EdgertError`` recorded (an unexpected exception is recorded as an
``InternalError`` and kept for ``--debug``); the other boards finish. Output with ``--json
r.json``: one result file per board, ``r.<board>.json`` (``r.<board>.<backend>.json`` with
several backends), and the fleet summary ``r.fleet.json`` (``edgert.fleet/1``) listing every
board with its status, files and error.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from pathlib import Path
from typing import Any

from edgert import result
from edgert.bench import BenchJob, ProgressFactory, bench
from edgert.devices.address import DeviceAddress
from edgert.errors import EdgertError, InternalError, UsageError

SCHEMA = "edgert.fleet/1"


@dataclasses.dataclass
class FleetEntry:
    """One board's outcome: its results, or the error that stopped it."""

    device: str
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error: EdgertError | None = None
    reached: str | None = None  # where a labgrid place's board was reached (ssh://host:port)
    exception: BaseException | None = dataclasses.field(default=None, repr=False)  # for --debug

    @property
    def ok(self) -> bool:
        return self.error is None

    def error_dict(self) -> dict[str, Any] | None:
        return None if self.error is None else {"device": self.device, **self.error.to_dict()}


def bench_fleet(job: BenchJob, devices: list[DeviceAddress],
                progress: ProgressFactory | None = None) -> list[FleetEntry]:
    """Benchmark ``job`` on every device at once; one entry per board, in the order given.

    ``progress`` is called with "BOARD BACKEND" for each board's task line.
    """
    boards, entries = _expand(devices)
    names = [b.name for b in boards]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"device named more than once: {', '.join(twice)}")
    with contextlib.ExitStack() as places:
        workers = []
        for addr in boards:
            entry = FleetEntry(addr.name)
            entries.append(entry)
            try:
                reached = _reach(places, addr)
            except EdgertError as exc:
                entry.error = exc
                continue
            if reached is not addr:
                entry.reached = _where(reached)
            worker = threading.Thread(target=_run, args=(job, reached, entry, progress),
                                      name=f"edgert-fleet {addr.name}", daemon=True)
            worker.start()
            workers.append(worker)
        for worker in workers:
            worker.join()
    return entries


def _expand(devices: list[DeviceAddress]) -> tuple[list[DeviceAddress], list[FleetEntry]]:
    """labgrid tag selectors -> one address per matching place; a failed lookup is an entry."""
    boards: list[DeviceAddress] = []
    failed: list[FleetEntry] = []
    for addr in devices:
        if addr.scheme != "labgrid":
            boards.append(addr)
            continue
        from edgert.devices import labgrid

        try:
            boards.extend(labgrid.expand(addr))  # type: ignore[arg-type]
        except EdgertError as exc:
            failed.append(FleetEntry(addr.name, error=exc))
    return boards, failed


def _reach(places: contextlib.ExitStack, addr: DeviceAddress) -> DeviceAddress:
    if addr.scheme != "labgrid":
        return addr
    from edgert.devices import labgrid

    return places.enter_context(labgrid.acquired(addr))  # type: ignore[arg-type]


def _where(addr: DeviceAddress) -> str:
    if addr.scheme == "ssh":
        return f"ssh://{addr.user + '@' if addr.user else ''}{addr.host}:{addr.port or 22}"
    return f"serial://{addr.path}"


def _run(job: BenchJob, addr: DeviceAddress, entry: FleetEntry,
         progress: ProgressFactory | None) -> None:
    board_progress = None if progress is None else (lambda backend: progress(f"{addr.name} {backend}"))
    try:
        entry.results = bench(job, addr, board_progress)
    except EdgertError as exc:
        entry.error = exc
    except Exception as exc:  # a bug on one board must not lose the others' results
        entry.error = InternalError(f"unexpected {type(exc).__name__} on {addr.name}: {exc}")
        entry.exception = exc


def file_part(device: str) -> str:
    """A board name fit for a file name: ``ssh://pi@10.0.0.5:22`` -> ``pi_10.0.0.5_22``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", device.split("://", 1)[-1]).strip("_") or "device"


def result_path(pattern: Path, device: str, backend: str, backends: int) -> Path:
    """``r.json`` -> ``r.BOARD.json``, or ``r.BOARD.BACKEND.json`` when several backends ran."""
    middle = file_part(device) + (f".{backend}" if backends > 1 else "")
    return pattern.with_name(f"{pattern.stem}.{middle}{pattern.suffix}")


def summary_path(pattern: Path) -> Path:
    return pattern.with_name(f"{pattern.stem}.fleet{pattern.suffix or '.json'}")


def write_results(entries: list[FleetEntry], json_path: Path | None,
                  csv_path: Path | None = None) -> dict[str, Any]:
    """Write each board's result files (and the summary next to ``json_path``); returns the summary."""
    parts = [file_part(e.device) for e in entries]
    clash = sorted({p for p in parts if parts.count(p) > 1})
    if clash and (json_path or csv_path):
        raise UsageError(f"several boards map to the same file name part: {', '.join(clash)}; "
                         "give them distinct inventory names")
    boards = []
    for entry in entries:
        files = []
        for res in entry.results:
            name = res["backend"]["name"]
            if json_path:
                files.append(str(result_path(json_path, entry.device, name, len(entry.results))))
                result.write_json(res, Path(files[-1]))
            if csv_path:
                files.append(str(result_path(csv_path, entry.device, name, len(entry.results))))
                result.write_csv(res, Path(files[-1]))
        boards.append({"device": entry.device, "status": "ok" if entry.ok else "error",
                       "reached": entry.reached, "files": files, "error": entry.error_dict()})
    summary = {"schema": SCHEMA, "boards": boards,
               "errors": [b["error"] for b in boards if b["error"]]}
    if json_path:
        result.write_json(summary, summary_path(json_path))
    return summary
