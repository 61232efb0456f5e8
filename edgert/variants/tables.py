"""JSON tables kept *inside* an All-in-One file's data section (``ofa/lut``, ``ofa/pareto``),
and the stored graphs of the Pareto configurations (``ofa/graph/<key>``).

The latency tables and Pareto sets decide what runs on a device, so they are stored as
``U8`` tensors of UTF-8 JSON: the data section's sha256 (checked at open) covers them (the
header has its own digest since format version 2; the data checksum also covered them on
version 1, and a table of hundreds of entries is data rather than header). Writing one
rewrites the file through ``aiofile.write`` (atomic rename), keeping every other tensor and
metadata entry.

Device-side: stdlib and numpy only.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import BundleError

from . import aiocheck, aiofile

LUT = "ofa/lut"
PARETO = "ofa/pareto"
SCHEMAS = {LUT: "edgert.aio.lut/1", PARETO: "edgert.aio.pareto/1"}  # what this edgert reads and writes
_CHECKS = {LUT: aiocheck.lut_table, PARETO: aiocheck.pareto_table}
GRAPHS = "ofa/graph/"  # + a configuration's key: its ONNX graph (U8), written by ``edgert search``
_OWN_METADATA = ("format", "version", "sha256", "aio", "header_sha256")  # aiofile.write sets these


def load(tensors: Mapping[str, np.ndarray], name: str) -> dict[str, Any] | None:
    """The table ``name`` from an opened file's tensors (None when the file has none)."""
    if name not in tensors:
        return None
    try:
        value = json.loads(bytes(tensors[name]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"table {name!r} in the file is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BundleError(f"table {name!r} in the file is not a JSON object")
    if name in _CHECKS:  # checksummed, but written by any tool: every field a reader uses is checked
        aiocheck.check_table(name, _CHECKS[name], value, SCHEMAS[name])
    return value


def check_given(name: str, value: Any) -> dict[str, Any]:
    """A table a caller passes in place of the file's, checked as a stored one is (UsageError)."""
    aiocheck.check_table(name, _CHECKS[name], value, SCHEMAS[name], given=True)
    return value


def read(path: str | Path, name: str) -> dict[str, Any] | None:
    """Open ``path`` (checksum verified) and return the table ``name``, or None."""
    f = aiofile.read(Path(path))
    try:
        return load(f.tensors, name)
    finally:
        f.close()


SPARE_BYTES = 16 << 20  # room for the tables and graphs a store adds, beyond a copy of the file


def check_writable(path: str | Path) -> None:
    """Refuse before a long measurement or search whose result ``store`` could not write: a
    directory we cannot write, or too little free space for the new copy of the file that
    ``store`` writes beside it before the rename."""
    target = Path(path).resolve()
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise BundleError(f"cannot write {path}: its directory {target.parent} is not writable "
                          "(the result would be lost after the work)", path=str(path))
    need = (target.stat().st_size if target.is_file() else 0) + SPARE_BYTES  # none: opening it says so
    free = shutil.disk_usage(target.parent).free
    if free < need:
        raise BundleError(f"cannot write {path}: storing the result rewrites it, which needs about "
                          f"{need / 2**20:.0f} MiB free in {target.parent}, and {free / 2**20:.0f} MiB are "
                          "(the result would be lost after the work)", path=str(path))


def store(path: str | Path, tables: Mapping[str, Mapping[str, Any]],
          graphs: Mapping[str, bytes] | None = None, drop: tuple[str, ...] = (),
          on_drop: Callable[[list[str]], None] | None = None) -> None:
    """Write ``tables`` ({tensor name: JSON object}) into ``path``, removing the tables named in
    ``drop``; the checksum is recomputed. ``graphs`` ({``GRAPHS`` + key: ONNX bytes}), when
    given, replace every stored graph. ``on_drop`` hears which of ``drop`` the file held, before
    ``tables`` are written (a table can then say what went)."""
    path = Path(path)
    f = aiofile.read(path)
    try:
        tensors = {k: np.array(v) for k, v in f.tensors.items()}
        meta = f.meta
        extra = {k: v for k, v in f.metadata.items() if k not in _OWN_METADATA}
    finally:
        f.close()
    if graphs is not None:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(GRAPHS)}
        tensors.update({k: np.frombuffer(g, np.uint8) for k, g in graphs.items()})
    dropped = [name for name in drop if tensors.pop(name, None) is not None]
    if dropped and on_drop is not None:
        on_drop(dropped)
    for name, table in tables.items():
        tensors[name] = np.frombuffer(json.dumps(table, separators=(",", ":")).encode("utf-8"), np.uint8)
    aiofile.write(path, tensors, meta, extra)
