"""Which slices of a stored axis a width keeps: every prunable group is a prefix of its segment.

Device side (numpy only): the runtime slices levels' and configurations' weights with these,
and the host's channel analysis (``groups``) and pruner use the same functions.
"""
from __future__ import annotations

import numpy as np

EXTERNAL_LOCATION = "aio"  # where the level graphs declare their weights (prune.level_graph)
Segments = tuple[tuple[int, int], ...]  # (group id, channel count) along one axis


def group_offsets(segments: Segments, repeat: int = 1) -> list[tuple[int, int, int]]:
    """(group id, start, length) of each segment along its axis; with ``repeat`` every channel
    of a group spans that many consecutive entries (after a channel shuffle), and start and
    length count entries."""
    out, start = [], 0
    for gid, n in segments:
        out.append((gid, start, n * repeat))
        start += n * repeat
    return out


def kept_ranges(segments: Segments, kept: dict[int, int], repeat: int = 1) -> list[list[int]]:
    """The [start, stop) ranges one level keeps along an axis: a prefix of every segment
    (``repeat`` entries per kept channel: ``group_offsets``)."""
    ranges: list[list[int]] = []
    for gid, start, n in group_offsets(segments, repeat):
        k = kept[gid] * repeat if gid in kept else n
        if k == 0:
            continue
        if ranges and ranges[-1][1] == start:  # the previous segment was kept whole: extend it
            ranges[-1][1] = start + k
        else:
            ranges.append([start, start + k])
    return ranges


def shape_values(reshapes: dict[str, list[list]], kept: dict[int, int]) -> dict[str, dict[int, int]]:
    """The shape-constant entries a width writes (attention heads in Reshape targets, Split
    sizes, a channel shuffle's halves): ``reshapes`` is an All-in-One template's ``{constant:
    [[entry, segments, divisor(, multiple)], ...]}``; each entry gets the kept channels of its
    segments times the multiple (entries per channel after a shuffle; 1 when absent) over the
    divisor."""
    out = {}
    for name, entries in reshapes.items():
        if entries and isinstance(entries[0], int):  # files of earlier builds stored one [entry, segs, div]
            entries = [entries]
        out[name] = {int(entry): sum(kept.get(int(g), int(n)) for g, n in segs) * int(mult[0] if mult else 1)
                     // int(div) for entry, segs, div, *mult in entries}
    return out


def is_view(ranges: list[list[list[int]]], shape: tuple[int, ...]) -> bool:
    """True when the kept part is one contiguous block of the C-ordered tensor."""
    cut = [i for i, spans in enumerate(ranges) if spans != [[0, shape[i]]]]
    return not cut or (len(cut) == 1 and len(ranges[cut[0]]) == 1 and all(d == 1 for d in shape[:cut[0]]))


def slice_ranges(tensor: np.ndarray, ranges: list[list[list[int]]]) -> np.ndarray:
    """The level's part of ``tensor``: a view when contiguous, else a compact copy."""
    view = tensor
    for axis, spans in enumerate(ranges):
        if len(spans) == 1:
            a, b = spans[0]
            if (a, b) != (0, tensor.shape[axis]):
                view = view[(slice(None),) * axis + (slice(a, b),)]
        else:
            view = np.concatenate([view[(slice(None),) * axis + (slice(a, b),)] for a, b in spans], axis=axis)
    return view if view.flags.c_contiguous else np.ascontiguousarray(view)
