"""Root-relative sysfs access: every read and write takes a root, writes pass an allow-list.

Paths are written relative to the root (``"sys/class/devfreq/x/min_freq"``) so tests run
the same code on a copied fixture tree instead of patching ``open``. A write is checked
against ``WRITE_ALLOW`` *before* anything touches the disk, and the resolved path must
stay inside the root (sysfs links such as ``class/devfreq/X`` are followed, escapes are not).
"""
from __future__ import annotations

import fnmatch
import itertools
import os
import re
from pathlib import Path

from edgert.errors import SysfsError

_CPUFREQ_KNOBS = "{scaling_governor,scaling_setspeed,scaling_min_freq,scaling_max_freq}"
_DEVFREQ_KNOBS = "{governor,min_freq,max_freq,userspace/set_freq}"

# Files edgert may ever write. ``*`` matches within one path component, ``**`` any
# number of components, ``{a,b}`` alternatives. Everything else raises SysfsError.
WRITE_ALLOW: tuple[str, ...] = (
    f"sys/devices/system/cpu/cpufreq/policy*/{_CPUFREQ_KNOBS}",
    f"sys/devices/system/cpu/cpu*/cpufreq/{_CPUFREQ_KNOBS}",
    f"sys/class/devfreq/*/{_DEVFREQ_KNOBS}",
    # cgroups: bandwidth knobs of edgert's own groups (v1 and v2), and membership files
    # anywhere, so a process can be moved back to the group it came from.
    "sys/fs/cgroup/cpu/**/edgert-*/{cpu.cfs_quota_us,cpu.cfs_period_us}",
    "sys/fs/cgroup/**/edgert-*/cpu.max",
    "sys/fs/cgroup/**/{cgroup.procs,tasks}",
)

# Directories edgert may create and remove (its own cgroups only).
MKDIR_ALLOW: tuple[str, ...] = ("sys/fs/cgroup/**/edgert-*",)


def _expand(pattern: str) -> list[str]:
    """Expand ``{a,b}`` alternatives (no nesting) into plain glob patterns."""
    parts = re.split(r"\{([^{}]*)\}", pattern)
    literals, choices = parts[0::2], [p.split(",") for p in parts[1::2]]
    out = []
    for combo in itertools.product(*choices):
        out.append("".join(lit + (combo[i] if i < len(combo) else "")
                           for i, lit in enumerate(literals)))
    return out


def _match_parts(pat: list[str], path: list[str]) -> bool:
    if not pat:
        return not path
    if pat[0] == "**":
        return any(_match_parts(pat[1:], path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], pat[0]) and _match_parts(pat[1:], path[1:])


def normalize(rel: str) -> str:
    """Return ``rel`` as a clean relative path; reject ``..`` and empty components."""
    parts = [p for p in str(rel).strip("/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise SysfsError(f"not a usable sysfs path: {rel!r}", path=str(rel))
    return "/".join(parts)


def allowed(rel: str, patterns: tuple[str, ...] = WRITE_ALLOW) -> bool:
    """True when the root-relative path matches one of ``patterns``."""
    parts = normalize(rel).split("/")
    return any(_match_parts(p.split("/"), parts)
               for pattern in patterns for p in _expand(pattern))


def resolve(root: str | os.PathLike, rel: str) -> Path:
    """Absolute path of ``rel`` under ``root``; links may not lead outside the root."""
    base = Path(root).resolve()
    path = (base / normalize(rel))
    real = path.resolve()
    if real != base and base not in real.parents:
        raise SysfsError(f"{rel} leads outside {base} (to {real})", path=rel)
    return path


def exists(root: str | os.PathLike, rel: str) -> bool:
    try:
        return resolve(root, rel).exists()
    except SysfsError:
        return False


def read_text(root: str | os.PathLike, rel: str) -> str:
    """File content without the trailing newline (and NULs, as in device-tree names)."""
    path = resolve(root, rel)
    try:
        return path.read_text(errors="replace").replace("\0", "").strip()
    except OSError as exc:
        raise SysfsError(f"cannot read {path}: {exc.strerror or exc}", path=rel) from exc


def read_int(root: str | os.PathLike, rel: str) -> int:
    text = read_text(root, rel)
    try:
        return int(text)
    except ValueError as exc:
        raise SysfsError(f"{rel} holds {text!r}, not an integer", path=rel) from exc


def read_optional_int(root: str | os.PathLike, rel: str) -> int | None:
    """The integer in ``rel``, or None when the file is absent or not numeric."""
    if not exists(root, rel):
        return None
    try:
        return read_int(root, rel)
    except SysfsError:
        return None


def write_text(root: str | os.PathLike, rel: str, value: str | int) -> None:
    """Write one value to an allow-listed, already existing file (sysfs never creates files)."""
    if not allowed(rel):
        raise SysfsError(f"refusing to write {rel}: not in the sysfs write allow-list", path=rel)
    path = resolve(root, rel)
    if not path.is_file():
        raise SysfsError(f"cannot write {path}: no such file", path=rel)
    try:
        # One write() call, as the kernel parses a sysfs store per write.
        with open(path, "w") as fh:
            fh.write(f"{value}\n")
    except OSError as exc:
        raise SysfsError(f"cannot write {value!r} to {path}: {exc.strerror or exc}",
                         path=rel, value=str(value)) from exc


def make_dir(root: str | os.PathLike, rel: str) -> None:
    if not allowed(rel, MKDIR_ALLOW):
        raise SysfsError(f"refusing to create {rel}: not in the directory allow-list", path=rel)
    path = resolve(root, rel)
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise SysfsError(f"cannot create {path}: {exc.strerror or exc}", path=rel) from exc


def remove_dir(root: str | os.PathLike, rel: str) -> None:
    """rmdir an edgert cgroup; a missing directory counts as removed."""
    if not allowed(rel, MKDIR_ALLOW):
        raise SysfsError(f"refusing to remove {rel}: not in the directory allow-list", path=rel)
    path = resolve(root, rel)
    try:
        path.rmdir()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SysfsError(f"cannot remove {path}: {exc.strerror or exc}", path=rel) from exc


def list_dir(root: str | os.PathLike, rel: str, pattern: str = "*") -> list[str]:
    """Sorted names in ``rel`` matching ``pattern`` (empty when ``rel`` is absent)."""
    try:
        path = resolve(root, rel)
    except SysfsError:
        return []
    if not path.is_dir():
        return []
    return sorted((n for n in os.listdir(path) if fnmatch.fnmatchcase(n, pattern)), key=_natural)


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
