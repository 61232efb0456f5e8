"""Seeded single-byte flips at every offset of a file, written in place (two pwrites per offset)."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable, Iterator


def flips(path: Path, seed: int = 0) -> Iterator[int]:
    """For each offset of ``path``: XOR that byte with a seeded non-zero value, yield the offset
    (the file is damaged while the caller runs), then restore it."""
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDWR)
    try:
        for offset in range(os.fstat(fd).st_size):
            (byte,) = os.pread(fd, 1, offset)
            os.pwrite(fd, bytes([byte ^ rng.randrange(1, 256)]), offset)
            try:
                yield offset
            finally:
                os.pwrite(fd, bytes([byte]), offset)
    finally:
        os.close(fd)


def survivors(path: Path, attempt: Callable[[], object], refused: type[BaseException]) -> dict[int, object]:
    """Offsets whose flip ``attempt`` did not refuse with ``refused``, with what it returned.
    Any other exception propagates (that is the bug these tests look for)."""
    kept = {}
    for offset in flips(path):
        try:
            kept[offset] = attempt()
        except refused:
            continue
    return kept
