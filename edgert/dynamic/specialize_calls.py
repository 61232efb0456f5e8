"""Static variants of a segment, one per input shape the sample run called it with (host only).

GPT-2's greedy decode loop feeds its body a sequence one token longer every iteration:
the body segment's input has a symbolic length, which TVM's importer (``Slice`` needs a
static rank and shape arithmetic) and LiteRT cannot take, so the segment falls back to
ORT. Its shapes are symbolic but known per call: the sample run records every input
shape combination each segment was called with. For a segment the engine could not build
in general, and at most ``MAX_VARIANTS`` such combinations, the compiler builds one
static artifact per combination (the sizes written into the segment's inputs, then
folded by ``specialize``). The runtime runs the variant whose shapes equal the call's,
and the general (ORT) segment for any other shape, so a shape the samples never showed
is slower, never wrong.

Chosen over padding to a bucket size: attention over padded positions changes the
result unless a mask is threaded through the segment, which exported loop bodies lack.
Compile with the inputs you will run (``edgert compile --samples``; ``bench`` passes its
``--input``) so the decode lengths you run are the ones built.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from edgert.errors import EdgertError

from .partition import Segment

MAX_VARIANTS = 32  # more distinct shapes than this: a size-dependent segment, left on ORT

Shapes = tuple[tuple[str, tuple[int, ...]], ...]  # (input, shape) pairs, sorted by input


def call_shapes(feeds: dict[str, Any]) -> Shapes:
    """The key of one call: each input's shape, sorted by input name."""
    import numpy as np

    return tuple(sorted((name, tuple(int(d) for d in np.shape(v))) for name, v in feeds.items()))


def static_segment(seg: Segment, shapes: Shapes, index: int) -> Segment:
    """``seg`` with ``shapes`` written into its inputs' dims, as variant ``index``."""
    import onnx

    model = onnx.load_from_string(seg.model_bytes)
    sizes = dict(shapes)
    for info in model.graph.input:
        if info.name not in sizes:
            continue
        tensor = info.type.tensor_type
        del tensor.shape.dim[:]
        for size in sizes[info.name]:
            tensor.shape.dim.add().dim_value = size
    return dataclasses.replace(seg, id=f"{seg.id}.v{index}",
                               model_bytes=model.SerializeToString(deterministic=True))


@dataclasses.dataclass
class Variants:
    """What was built: (shapes, artifact) per combination, and the combinations that failed."""

    built: list[tuple[Shapes, Any]]
    failed: dict[str, str]  # "x=[1, 5]" -> the engine's first error line

    def entries(self, members: dict[str, bytes]) -> list[dict[str, Any]]:
        """Manifest ``variants`` records; their artifacts are added to ``members``."""
        records = []
        for shapes, art in self.built:
            members.update(art.members)
            record = {"shapes": {name: list(shape) for name, shape in shapes}, "engine": art.engine,
                      "artifact": art.artifact,
                      "extra_members": sorted(set(art.members) - {art.artifact})}
            if art.specialized:
                record["specialized"] = art.specialized
            records.append(record)
        return records


def build(seg: Segment, combos: Sequence[Shapes],
          prepare: Callable[[Segment, dict[str, set[tuple[int, ...]]]], Any]) -> Variants:
    """One artifact per combination (``prepare(static_seg, observed)``), in size order."""
    variants = Variants([], {})
    if len(combos) > MAX_VARIANTS:
        variants.failed["*"] = (f"{len(combos)} distinct input shapes in the sample run, more than "
                                f"{MAX_VARIANTS}: left on ORT")
        return variants
    for index, shapes in enumerate(sorted(combos)):
        static = static_segment(seg, shapes, index)
        try:
            art = prepare(static, {name: {shape} for name, shape in shapes})
        except EdgertError as exc:  # static shapes did not help: the others would fail alike
            label = ", ".join(f"{name}={list(shape)}" for name, shape in shapes)
            variants.failed[label] = exc.message.strip().splitlines()[0][:300]
            if len(combos) > index + 1:
                variants.failed["*"] = f"the other {len(combos) - index - 1} shapes were not tried"
            break
        variants.built.append((shapes, art))
    return variants


def has_symbolic_inputs(seg: Segment) -> bool:
    """True when some input of ``seg`` has a dim without a size (or no shape at all)."""
    import onnx

    model = onnx.load_from_string(seg.model_bytes)
    weights = {t.name for t in model.graph.initializer}
    for info in model.graph.input:
        tensor = info.type.tensor_type
        if info.name in weights:
            continue
        if not tensor.HasField("shape") or any(not d.HasField("dim_value") for d in tensor.shape.dim):
            return True
    return False
