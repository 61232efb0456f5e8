"""Where a channel axis goes through a Reshape: dimension algebra over symbolic dims.

A tensor's channels lie along one *axis*; each index along it covers *unit* channels (1 for
plain channels, a head's width after attention splits its projection into heads, a third
of a fused Q/K/V projection). Those unit channels lie along the *inner* axis when one axis
holds them alone. An *outer* factor (a batch dim the exporter folded into the heads axis,
``(B, H, S, W) -> (B*H, S, W)``) may precede the channel indices on the axis.

Reshape keeps C order, so an axis survives a Reshape exactly when the product of the dims
before it is the same on both sides and its size is too. Three moves are followed:

- *keep*: the channel indices stay one axis (possibly folded with a different outer factor);
- *split*: plain channels become (indices, unit) on two adjacent axes — heads and their
  width, or Q/K/V chunks;
- *merge*: (indices, unit) on adjacent axes become plain channels again.

Folding the unit axis *ahead* of the indices (a channel shuffle's interleave) comes out as a
keep with that width as the outer factor, which every op but Transpose and Reshape refuses.

Dims are sympy expressions (``"2*batch"`` from ONNX Runtime's symbolic shape inference),
so the rules hold for dynamic sequence lengths. Host-only: imports sympy.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

Dim = Any  # a sympy expression, or None when shape inference left the dim unknown


@dataclasses.dataclass(frozen=True)
class Layout:
    axis: int
    unit: int = 1  # channels per index along ``axis``
    inner: int | None = None  # the axis holding those ``unit`` channels, if one does alone
    outer: Dim = 1  # a factor folded into ``axis`` ahead of the channel indices


@dataclasses.dataclass(frozen=True)
class Move:
    """The layout after a Reshape; ``entry`` is the output dim counting channel indices (a
    level rewrites its shape constant there), ``unit_entry`` the one counting channels per
    index (a split's; Q/K/V chunks prune within, so that one is rewritten instead)."""

    kind: str  # "keep", "split" or "merge"
    layout: Layout
    entry: int
    unit_entry: int | None = None


def dim(value: int | str | None) -> Dim:
    """A sympy dim from an ONNX dim_value (int) or dim_param (str); None stays None."""
    import sympy

    if value is None or value == "":
        return None
    if isinstance(value, int):
        return sympy.Integer(value)
    try:
        return sympy.sympify(value)
    except (sympy.SympifyError, SyntaxError, TypeError):
        return sympy.Symbol(value)


def rest(din: Sequence[Dim], others: Sequence[Dim]) -> Dim:
    """A Reshape's -1 entry: what the other output dims leave of the input's size."""
    import sympy

    return sympy.cancel(_prod(din) / _prod(others))


def _prod(dims: Sequence[Dim]) -> Dim:
    import sympy

    return sympy.Mul(*dims) if dims else sympy.Integer(1)


def _equal(a: Dim, b: Dim) -> bool:
    import sympy

    return sympy.expand(a - b) == 0


def _whole(value: Dim) -> bool:
    """True for an integer or a product of symbols with an integer coefficient (no fraction)."""
    import sympy

    return sympy.fraction(sympy.cancel(value))[1] == 1


def follow(din: Sequence[Dim], dout: Sequence[Dim], layout: Layout, channels: int) -> Move | None:
    """Where ``layout`` (of a tensor shaped ``din`` with ``channels`` channels) lands in the
    Reshape's output ``dout``; None when the channels get mixed with other dims."""
    if any(d is None for d in din) or any(d is None for d in dout):
        return None
    c, unit = layout.axis, layout.unit
    indices = channels // unit
    before = _prod(din[:c]) * layout.outer
    for j in range(len(dout)):  # keep: the indices stay one axis
        if _equal(_prod(dout[:j + 1]), before * indices) and _whole(dout[j] / indices):
            outer = dout[j] / indices
            if unit == 1:
                return Move("keep", Layout(j, 1, None, outer), j)
            inner = _inner(din, dout, c, j, layout.inner)
            return Move("keep", Layout(j, unit, inner, outer), j)
    if layout.outer != 1:
        return None
    after = _prod(din[c + 1:])
    if unit == 1:  # split: (..., C, ...) -> (..., indices, unit, ...)
        for j in range(len(dout) - 1):
            size = dout[j]
            if not (_equal(_prod(dout[:j]), before) and size.is_Integer and 1 < int(size) < channels
                    and channels % int(size) == 0 and _equal(_prod(dout[j + 1:]), (channels // int(size)) * after)):
                continue
            per = channels // int(size)
            if dout[j + 1] != per:  # one index's channels spread over several dims: not followed
                return None
            return Move("split", Layout(j, per, j + 1), j, j + 1)
        return None
    if layout.inner == c + 1 and din[c + 1] == unit:  # merge: (..., indices, unit, ...) -> (..., C, ...)
        for j in range(len(dout)):
            if _equal(_prod(dout[:j]), before) and dout[j] == channels:
                return Move("merge", Layout(j), j)
    return None


def _inner(din: Sequence[Dim], dout: Sequence[Dim], c: int, j: int, inner: int | None) -> int | None:
    """Where the axis of one index's channels lands when the indices stay at ``j``."""
    if inner is None or inner <= c:
        return None
    between = _prod(din[c + 1:inner])
    for k in range(j + 1, len(dout)):
        if _equal(_prod(dout[j + 1:k]), between) and _equal(dout[k], din[inner]):
            return k
    return None


def shifted(axis: int | None, removed: Sequence[int] = (), added: Sequence[int] = ()) -> int | None:
    """An axis index after Squeeze (``removed``, input positions) or Unsqueeze (``added``,
    output positions)."""
    if axis is None:
        return None
    axis -= sum(1 for r in removed if r < axis)
    for a in sorted(added):
        if a <= axis:
            axis += 1
    return axis
