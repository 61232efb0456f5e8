"""Tensor signatures (``TensorSpec``) and input feeds: checked against a model's signature,
or made up from a seed.

Device-side: numpy only. ``TensorSpec`` lives here, in the lowest floor, because engines,
runtimes and the host all speak it.
"""
from __future__ import annotations

import dataclasses
import math
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgert.errors import InputError, UsageError
from edgert.files import not_a_file

MAX_RANDOM_FEED_BYTES = 4 << 30

Dim = int | str  # a concrete size, or the name of a symbolic dimension


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or strings for symbolic dims) and numpy dtype name of a graph tensor."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TensorSpec":
        return cls(data["name"], tuple(data["shape"]), data["dtype"])


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


def check_dims(specs: list[TensorSpec], dims: Mapping[str, int]) -> None:
    """Every ``--shape`` name must be a symbolic dimension of an input: a typo would otherwise
    be ignored silently (and the run measure something else than asked)."""
    known = sorted({d for spec in specs for d in spec.shape if isinstance(d, str)})
    unknown = sorted(set(dims) - set(known))
    if unknown:
        raise UsageError(f"--shape {unknown[0]}: the model has no symbolic dimension {unknown[0]!r} "
                         f"(its symbolic dimensions: {', '.join(known) or 'none'})", dim=unknown[0])


def check_given_dims(specs: list[TensorSpec], dims: Mapping[str, int], feeds: Mapping[str, Any]) -> None:
    """An input file whose size of a symbolic dimension is not its ``--shape`` size: one of the
    two was a mistake, and keeping either silently measures something else than asked."""
    for spec in specs:
        value = feeds.get(spec.name)
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) != len(spec.shape):
            continue  # not given, or the wrong rank: the feed check names it
        for d, size in zip(spec.shape, shape):
            if isinstance(d, str) and d in dims and dims[d] != size:
                raise InputError(f"input {spec.name!r} has {d}={size} but --shape says {d}={dims[d]}: "
                                 "give one of them", input=spec.name, dim=d)


def random_feeds(specs: list[TensorSpec], dims: Mapping[str, int], seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs: standard normal for floats, small non-negative integers, random booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = resolve_shape(spec, dims)
        dtype = np.dtype(spec.dtype)
        if math.prod(shape) * dtype.itemsize > MAX_RANDOM_FEED_BYTES:
            raise InputError(f"input {spec.name!r} of shape {shape} would need "
                             f"{math.prod(shape) * dtype.itemsize / 2**30:.1f} GiB: choose smaller --shape sizes",
                             input=spec.name)
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


def _regular(path: str | Path, what: str) -> None:
    """A FIFO or device passed as a file would block the read or never end: refuse it."""
    why = not_a_file(path)
    if why:
        raise UsageError(f"cannot read {what} from {path}: it {why}", path=str(path))


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"  # .npz


def _magic(path: str | Path, magics: tuple[bytes, ...], what: str, kind: str) -> None:
    """numpy calls any file without its header 'pickled (object) data': say what it is not."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return  # missing or unreadable: the read says so
    if not head.startswith(magics):
        raise UsageError(f"cannot read {what} from {path}: it is not {kind}", path=str(path))


def load_feeds(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """Read ``--input name=file.npy`` arrays."""
    feeds = {}
    for name, path in files.items():
        _regular(path, f"input {name!r}")
        _magic(path, (NPY_MAGIC,), f"input {name!r}", "a .npy file (np.save)")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise UsageError(f"cannot read input {name!r} from {path}: {exc}", input=name) from exc
    return feeds


def load_cases(cases: Any) -> list[tuple[str, dict[str, np.ndarray]]]:
    """``cases``: None, a list of feed dicts, or an .npz (keys "input" or "case/input").

    The one input-file convention of ``validate --cases``, ``run --cases`` and
    ``compile --samples``."""
    if cases is None:
        return []
    if isinstance(cases, (str, Path)):
        _regular(cases, "input cases")
        _magic(cases, (ZIP_MAGIC,), "input cases", "an .npz of named inputs (np.savez)")
        grouped: dict[str, dict[str, np.ndarray]] = {}
        try:
            arrays = np.load(cases, allow_pickle=False)
            if not isinstance(arrays, np.lib.npyio.NpzFile):
                raise ValueError("it is one array, not an .npz of named inputs (np.savez)")
            with arrays:
                for key in arrays.files:
                    case, _, name = key.rpartition("/")
                    grouped.setdefault(case or "case0", {})[name] = arrays[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise UsageError(f"cannot read input cases from {cases}: {exc}", path=str(cases)) from exc
        if not grouped:  # else the command said "pass --cases", which was passed
            raise UsageError(f"{cases} holds no inputs: write them with np.savez(F, NAME=array) "
                             "or np.savez(F, **{'CASE/NAME': array})", path=str(cases))
        return sorted(grouped.items())
    return [(f"case{i}", dict(feed)) for i, feed in enumerate(cases)]


def check_cases(specs: list[TensorSpec], cases: list[tuple[str, Mapping[str, Any]]]) -> None:
    """Every case of an input-cases file fits ``specs`` (InputError naming the case): a case
    that does not is the file's fault, found before anything runs."""
    fits = FeedCheck(specs)
    for case, feeds in cases:
        try:
            fits(feeds)
        except InputError as exc:
            raise InputError(f"case {case!r} of the input cases: {exc.message}", case=case) from exc


def check_feeds(specs: list[TensorSpec], feeds: Mapping[str, np.ndarray]) -> None:
    """Raise ``InputError`` naming the first input whose name, rank, shape or dtype is wrong."""
    FeedCheck(specs)(feeds)


class FeedCheck:
    """``check_feeds`` for one signature, prepared once: a runtime that checks every run
    (a dynamic bundle) would otherwise pay microseconds a run re-deriving names, dtypes, dims."""

    def __init__(self, specs: list[TensorSpec]) -> None:
        self.names = {s.name for s in specs}
        # per input: spec, numpy dtype, (index, size) of fixed dims, (index, name) of symbolic
        # ones (a symbolic dim must be the same size in every input); -1 dims match anything
        self._specs = [
            (s, np.dtype(s.dtype),
             tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, int) and d >= 0),
             tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, str)))
            for s in specs]

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The feeds as numpy arrays (no copies), once they are known to fit."""
        if not isinstance(feeds, Mapping):
            raise InputError(f"feeds must map input names to arrays ({', '.join(sorted(self.names))}), "
                             f"not {type(feeds).__name__}")
        if not self.names.issuperset(feeds):
            extra = next(name for name in feeds if name not in self.names)
            raise InputError(
                f"the model has no input {extra!r}; its inputs are: "
                f"{', '.join(sorted(self.names))}", input=extra,
            )
        bound: dict[str, int] = {}
        arrays: dict[str, np.ndarray] = {}
        for spec, dtype, fixed, symbolic in self._specs:
            if spec.name not in feeds:
                raise InputError(f"missing input {spec.name!r}", input=spec.name)
            arrays[spec.name] = value = np.asarray(feeds[spec.name])
            if value.dtype != dtype:
                raise InputError(
                    f"input {spec.name!r} must be {spec.dtype}, got {value.dtype}",
                    input=spec.name, expected=spec.dtype, got=str(value.dtype),
                )
            shape = value.shape
            ok = len(shape) == len(spec.shape)
            if ok and shape != spec.shape:  # equal tuples: all fixed dims match, nothing to bind
                for i, size in fixed:
                    ok = ok and shape[i] == size
                for i, name in symbolic:
                    ok = ok and bound.setdefault(name, shape[i]) == shape[i]
            if not ok:
                raise InputError(
                    f"input {spec.name!r} must have shape {list(spec.shape)}, got {list(shape)}",
                    input=spec.name, expected=list(spec.shape), got=list(shape),
                )
        return arrays
