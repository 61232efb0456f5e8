"""Replace a file whole, so no reader and no second writer ever sees half of it.

Each writer writes a temp file of its own beside the target (``mkstemp``: a symlink planted at
a fixed temp name is never followed, and two writers never share one) and renames it over the
target: with two writers at once the last rename wins and neither corrupts the file. The
file's mode and, as root, its owner are kept; a symlink's target is rewritten, the link stays.
A path naming a stream (``/dev/null``, ``/dev/stdout`` into a pipe, a FIFO) is written through
in place: renaming over it replaced the device node with a file (``--json /dev/null`` as root
broke /dev/null for the whole machine). Stdlib only (device-side).
"""
from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from edgert.errors import UsageError


def is_stream(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a character device, FIFO or socket (following symlinks, such as
    /dev/stdout): written in place, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def replace_file(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(file)``; returns the path written (a symlink's target)."""
    path = Path(path)
    if is_stream(path):
        try:
            with open(path, "wb") as stream:
                write(stream)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}", path=str(path)) from None
        return path
    target = path.resolve() if path.is_symlink() else path
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc} ({target.parent})", path=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
        try:
            st = os.stat(target)
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        except FileNotFoundError:  # a new file (mkstemp made it 0600): files are meant to be shared
            os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target
