"""What kind of file a user's path names, before it is opened: a FIFO blocks the read,
a device (/dev/zero) never ends, and a directory is not "no such file". Core: stdlib only."""
from __future__ import annotations

import stat
from pathlib import Path


def not_a_file(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a file ("is a directory", "is not a regular file (a FIFO
    or a device)"), or None: a regular file, or nothing there (the read then says which)."""
    try:
        mode = Path(path).stat().st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return "is a directory" if stat.S_ISDIR(mode) else "is not a regular file (a FIFO or a device)"
