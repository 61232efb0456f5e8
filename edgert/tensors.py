"""Input feeds: checked against a model's signature, or made up from a seed.

Device-side: numpy only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from backends.base import Dim, TensorSpec
from edgert.errors import InputError, UsageError


def resolve_shape(spec: TensorSpec, dims: Mapping[str, int]) -> tuple[int, ...]:
    """Concrete shape of ``spec`` with symbolic dims taken from ``dims`` (``--shape N=4``)."""
    shape = []
    for dim in spec.shape:
        if isinstance(dim, int) and dim >= 0:
            shape.append(dim)
        elif isinstance(dim, str) and dim in dims:
            shape.append(int(dims[dim]))
        else:
            raise InputError(
                f"input {spec.name!r} has symbolic dimension {dim!r}: set it with --shape {dim}=SIZE",
                input=spec.name, dim=dim,
            )
    return tuple(shape)


def random_feeds(specs: list[TensorSpec], dims: Mapping[str, int], seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs: standard normal for floats, small non-negative integers, random booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = resolve_shape(spec, dims)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            value = rng.integers(0, 4, size=shape).astype(dtype)
        elif dtype.kind == "b":
            value = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise InputError(f"cannot make random data for input {spec.name!r} of dtype {dtype}",
                             input=spec.name)
        feeds[spec.name] = value
    return feeds


def load_feeds(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """Read ``--input name=file.npy`` arrays."""
    feeds = {}
    for name, path in files.items():
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise UsageError(f"cannot read input {name!r} from {path}: {exc}", input=name) from exc
    return feeds


def _dim_matches(want: Dim, got: int, bound: dict[str, int]) -> bool:
    if isinstance(want, int) and want >= 0:
        return want == got
    if isinstance(want, str):
        return bound.setdefault(want, got) == got
    return True  # unknown (-1): anything goes


def check_feeds(specs: list[TensorSpec], feeds: Mapping[str, np.ndarray]) -> None:
    """Raise ``InputError`` naming the first input whose name, rank, shape or dtype is wrong."""
    names = {s.name for s in specs}
    for extra in feeds:
        if extra not in names:
            raise InputError(
                f"the model has no input {extra!r}; its inputs are: {', '.join(sorted(names))}",
                input=extra,
            )
    bound: dict[str, int] = {}
    for spec in specs:
        if spec.name not in feeds:
            raise InputError(f"missing input {spec.name!r}", input=spec.name)
        value = np.asarray(feeds[spec.name])
        if value.dtype != np.dtype(spec.dtype):
            raise InputError(
                f"input {spec.name!r} must be {spec.dtype}, got {value.dtype}",
                input=spec.name, expected=spec.dtype, got=str(value.dtype),
            )
        want = spec.shape
        if len(want) != value.ndim or not all(
            _dim_matches(w, g, bound) for w, g in zip(want, value.shape)
        ):
            raise InputError(
                f"input {spec.name!r} must have shape {list(want)}, got {list(value.shape)}",
                input=spec.name, expected=list(want), got=list(value.shape),
            )
