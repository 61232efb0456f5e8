"""Value-guarded specialisation: a second host program for the inputs' usual values (host only).

Some models compute shapes from the *values* of small integer inputs (affine_grid's
``size``): no engine that needs static shapes can build those segments, so with
``backend="tvm"`` they fall back to ORT. When the user's sample inputs gave such an input
one value every time, the compiler also builds the model with that value folded in as a
constant: constant-condition Ifs resolve, shapes fold, and every segment can be static.
The bundle keeps both programs; the runtime compares the guarded inputs with the recorded
values once per call and runs the specialised program only when they are equal, so
other values still get the general program (and its fallbacks): never a wrong result.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgert.backends import TensorSpec
from . import engines
from .normalize import NormalizedModel, with_constant_inputs
from .partition import Partition, Segment, partition
from .specialize import fold_constants

PREFIX = "g_"  # of the guarded program's segment and const ids
MAX_ELEMENTS = 16  # larger inputs are data, not configuration: never guarded

Builder = Callable[[Segment, dict[str, set[tuple[int, ...]]] | None], dict[str, engines.Artifact]]


def fixed_inputs(specs: Sequence[TensorSpec],
                 samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Integer or bool inputs of at most ``MAX_ELEMENTS`` elements that held one value in
    every sample (those a guarded program can be specialised to)."""
    fixed = {}
    for spec in specs:
        if np.dtype(spec.dtype).kind not in "iub" or not samples:
            continue
        first = np.asarray(samples[0][spec.name])
        if first.size <= MAX_ELEMENTS and all(
                np.array_equal(np.asarray(s[spec.name]), first) and np.shape(s[spec.name]) == first.shape
                for s in samples[1:]):
            fixed[spec.name] = first
    return fixed


@dataclasses.dataclass
class Guarded:
    """The program specialised to some inputs' values, and what the bundle records of it."""

    part: Partition  # ids prefixed PREFIX
    host_folded: list[dict[str, Any]]
    built: dict[str, dict[str, engines.Artifact]]  # segment id -> its TVM artifact
    guard: dict[str, str]  # guarded input -> const id of the value it must equal


def build(norm: NormalizedModel, values: dict[str, np.ndarray],
          samples: Sequence[Mapping[str, np.ndarray]], build_segment: Builder) -> Guarded:
    """The program specialised to ``values``, each segment built by ``build_segment`` (ranks
    from a sample run of the specialised program). ``build_segment`` raises ModelError when
    a segment cannot be built: a guarded program is worth its guard only without fallbacks."""
    special = with_constant_inputs(norm, values)
    part = partition(special, prefix=PREFIX)
    host_folded = fold_constants(part)
    feeds = [{k: v for k, v in s.items() if k not in values} for s in samples]
    seen = engines.probe(part, special.model.graph, samples=feeds)
    built = {seg.id: build_segment(seg, seen.shapes.get(seg.id)) for seg in part.segments}
    guard = {}
    for index, (name, value) in enumerate(values.items()):
        guard[name] = f"{PREFIX}guard_{index:03d}"
        part.consts[guard[name]] = value
    return Guarded(part, host_folded, built, guard)
