"""The per-target MetaSchedule tuning database: where it lives, its digest, how to open it.

Host-only. Shared by ``compilers.tvm`` (which applies the records when compiling) and
``compilers.tvm_tune`` (which writes them), so neither imports the other's pipeline.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from edgert.errors import UsageError

from .tvm_target import is_cross, target_key

WORKLOADS = "database_workload.json"  # MetaSchedule's own file names, so its tools can read them
RECORDS = "database_tuning_record.json"
TARGET_FILE = "target.json"
EMULATED_FILE = "emulated.json"  # present once any record was timed on an emulated device
CROSS_NUM_CORES = 4  # assumed for foreign targets without "num-cores" (most arm64 boards)


def database_dir(root: Path, target: Any) -> Path:
    """The directory holding ``target``'s records inside a database root (one per target)."""
    key = target_key(target)
    arch = str(target.attrs.get("mtriple", "") or "").split("-")[0] or "host"
    cpu = str(target.attrs.get("mcpu", "") or "generic")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{target.kind.name}-{arch}-{cpu}")
    return Path(root) / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def database_digest(root: Path, target: Any) -> str:
    """sha256 of ``target``'s workload, record and emulation files ("empty" when there are none)."""
    where = database_dir(root, target)
    digest = hashlib.sha256()
    found = False
    for name in (WORKLOADS, RECORDS, EMULATED_FILE):
        path = where / name
        if path.exists():
            found = True
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest() if found else "empty"


def open_database(root: Path, target: Any, create: bool = False) -> Any:
    """MetaSchedule's ``JSONDatabase`` for ``target`` under ``root``."""
    from tvm.s_tir import meta_schedule as ms

    where = database_dir(root, target)
    if not create and not (where / RECORDS).exists():
        raise UsageError(f"the tuning database {root} has no records for target {target_key(target)}; "
                         "run edgert tune for this target first", path=str(root))
    where.mkdir(parents=True, exist_ok=True)
    (where / TARGET_FILE).write_text(target_key(target) + "\n")
    return ms.database.JSONDatabase(str(where / WORKLOADS), str(where / RECORDS))


def records_emulated(root: Path, target: Any) -> bool:
    """True when some of ``target``'s records were timed on an emulated device: their schedules
    were chosen by emulated speed, which says little about the real board."""
    return (database_dir(root, target) / EMULATED_FILE).exists()


def mark_emulated(root: Path, target: Any) -> None:
    """Label the database before the first emulated record lands (a killed run keeps it)."""
    path = database_dir(root, target) / EMULATED_FILE
    if not path.exists():
        path.write_text(json.dumps({"emulated": True, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                             time.gmtime())}) + "\n")


def tuning_target(target: Any) -> Any:
    """``target`` with "num-cores", which MetaSchedule's CPU rules need to size parallel loops."""
    import tvm

    if target.attrs.get("num-cores"):
        return target
    cores = CROSS_NUM_CORES if is_cross(target) else (os.cpu_count() or 1)
    return tvm.target.Target({**dict(target.export()), "num-cores": cores})
