"""What a report section is made of: plots, tables and warnings, before any HTML exists.

Each result kind (bench, sweep, calibration) turns its files into these values; ``page``
alone knows HTML. Keeping the two apart lets a new kind be added without touching markup.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgert.result import is_emulated


@dataclasses.dataclass(frozen=True)
class Plot:
    """A rendered figure, embedded in the page as a data URI (``mime``: PNG or SVG)."""

    slug: str
    caption: str
    image: bytes
    mime: str = "image/png"


@dataclasses.dataclass(frozen=True)
class Table:
    """Plain cells (strings or numbers); ``page`` escapes and formats them."""

    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    caption: str = ""


@dataclasses.dataclass(frozen=True)
class Note:
    text: str


Block = Plot | Table | Note


@dataclasses.dataclass(frozen=True)
class Finding:
    """A reason to distrust numbers; ``emulated`` ones are shown first and in red."""

    source: str
    text: str
    emulated: bool = False


@dataclasses.dataclass
class Section:
    title: str
    blocks: list[Block] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Loaded:
    """One result file as read from disk."""

    path: Path
    data: dict[str, Any]
    name: str = ""  # from the contents (model, engine, device); the file name only as a fallback

    @property
    def label(self) -> str:
        return self.name or self.path.name


@dataclasses.dataclass
class Built:
    """What one result kind contributes to the page."""

    sections: list[Section] = dataclasses.field(default_factory=list)
    warnings: list[Finding] = dataclasses.field(default_factory=list)


EMULATED_PREFIX = "measured on an emulated device"  # the first warning result.build writes


def file_warnings(item: Loaded) -> list[Finding]:
    """The file's own ``warnings`` list; an emulated file's emulation warning is marked and first."""
    emulated = is_emulated(item.data)
    out = [Finding(item.label, str(text), emulated=emulated and str(text).startswith(EMULATED_PREFIX))
           for text in item.data.get("warnings") or []]
    if emulated and not any(w.emulated for w in out):
        out.insert(0, Finding(item.label, f"{EMULATED_PREFIX}: timings say nothing about real "
                                          "hardware", emulated=True))
    return out
