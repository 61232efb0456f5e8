"""Check a decoded All-in-One header before anything uses it (docs/aio-format.md).

The header checksum catches accidental damage; this catches crafted files: every value the
reader and the runtime touch is checked for type, range and nesting depth here, so a hostile
header ends in one ``BundleError`` naming the file and the field instead of an
AttributeError, RecursionError or OverflowError somewhere later. Stdlib only.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgert.errors import BundleError, UsageError
from edgert.finite import is_finite_number

MAX_DEPTH = 32  # the deepest real header (ranges inside params inside levels) is 7
MAX_DIMS = 16


class _Bad(Exception):
    """A field is wrong; turned into a BundleError naming the file by ``parse_json``/``check``."""


def _fail(path: Path, where: str, problem: str) -> BundleError:
    return BundleError(f"{path} has a malformed header: {where} {problem}", path=str(path), field=where)


def parse_json(text: bytes | str, path: Path, where: str) -> Any:
    """JSON with bounded nesting; malformed or too deep -> BundleError."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise _fail(path, where, f"nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # includes UnicodeDecodeError
        raise _fail(path, where, f"is not valid JSON ({exc})") from exc
    depth = _depth(value)
    if depth > MAX_DEPTH:
        raise _fail(path, where, f"nests {depth} levels deep (at most {MAX_DEPTH})")
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, where: str, low: int = 0, high: int | None = None) -> int:
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise _Bad(f"{where} must be an integer {bound}, got {_show(value)}")
    return value


def _number(value: Any, where: str) -> float:
    if not is_finite_number(value):
        raise _Bad(f"{where} must be a finite number, got {_show(value)}")
    return float(value)


def _of(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise _Bad(f"{where} must be a JSON {'object' if kind is dict else kind.__name__}, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def check(path: Path, check_fn: Any, *args: Any) -> Any:
    """Run ``check_fn(*args)``; a wrong field becomes a BundleError naming ``path``."""
    try:
        return check_fn(*args)
    except _Bad as exc:
        raise BundleError(f"{path} has a malformed header: {exc}", path=str(path)) from None


def check_table(name: str, check_fn: Any, value: Any, schema: str, *, given: bool = False) -> Any:
    """Run ``check_fn(value, schema)`` on a table stored in the data section (a wrong field is a
    BundleError naming the table) or, ``given``, passed by a caller instead (a UsageError)."""
    try:
        return check_fn(value, schema)
    except _Bad as exc:
        if given:
            raise UsageError(f"the {name} table given is malformed: {exc}", table=name) from None
        raise BundleError(f"table {name!r} in the file is malformed: {exc}", table=name) from None


def metadata(value: Any) -> dict[str, str]:
    """``__metadata__``: string -> string (safetensors' rule)."""
    _of(value, dict, "__metadata__")
    for key, item in value.items():
        _of(item, str, f"__metadata__[{key!r}]")
    return value


def tensor_entry(name: str, info: Any, dtypes: dict[str, Any]) -> tuple[str, list[int], int, int]:
    """(dtype code, shape, begin, end) of one tensor entry, each field checked."""
    where = f"tensor {name!r}"
    _of(info, dict, where)
    dtype = info.get("dtype")
    if not isinstance(dtype, str) or dtype not in dtypes:
        raise _Bad(f"{where} has dtype {_show(dtype)}; known: {', '.join(dtypes)}")
    shape = _of(info.get("shape"), list, f"{where} shape")
    if len(shape) > MAX_DIMS:
        raise _Bad(f"{where} has {len(shape)} dimensions (at most {MAX_DIMS})")
    dims = [_int(d, f"{where} shape[{i}]") for i, d in enumerate(shape)]
    offsets = _of(info.get("data_offsets"), list, f"{where} data_offsets")
    if len(offsets) != 2:
        raise _Bad(f"{where} data_offsets must be [begin, end], got {len(offsets)} numbers")
    lo, hi = (_int(x, f"{where} data_offsets") for x in offsets)
    return dtype, dims, lo, hi


def meta(value: Any, tensors: dict[str, Any]) -> dict[str, Any]:
    """The ``aio`` JSON: levels, their graphs and parameter slices (what the runtime reads)."""
    _of(value, dict, "aio")
    levels = _of(value.get("levels"), list, "aio.levels")
    for i, level in enumerate(levels):
        where = f"aio.levels[{i}]"
        _of(level, dict, where)
        _number(level.get("ratio"), f"{where}.ratio")
        _int(level.get("weight_bytes"), f"{where}.weight_bytes")
        for key, kept in _of(level.get("kept"), dict, f"{where}.kept").items():
            _int(kept, f"{where}.kept[{key!r}]")
        for key in ("graph", "sliced_graph"):
            name = level.get(key)
            if key == "graph" or name is not None:
                if not isinstance(name, str) or name not in tensors:
                    raise _Bad(f"{where}.{key} names {_show(name)}, which is not a tensor of the file")
        for param, spec in _of(level.get("params"), dict, f"{where}.params").items():
            _param(spec, tensors, f"{where}.params[{param!r}]")
    return value


def _param(spec: Any, tensors: dict[str, Any], where: str) -> None:
    _of(spec, dict, where)
    name = spec.get("tensor")
    if not isinstance(name, str) or name not in tensors:
        raise _Bad(f"{where}.tensor names {_show(name)}, which is not a tensor of the file")
    shape = tensors[name].shape
    ranges = _of(spec.get("ranges"), list, f"{where}.ranges")
    if len(ranges) != len(shape):
        raise _Bad(f"{where}.ranges has {len(ranges)} axes; tensor {name!r} has {len(shape)}")
    for axis, (spans, dim) in enumerate(zip(ranges, shape)):
        for span in _of(spans, list, f"{where}.ranges[{axis}]"):
            if not isinstance(span, list) or len(span) != 2:
                raise _Bad(f"{where}.ranges[{axis}] must hold [start, stop] pairs, got {_show(span)}")
            start = _int(span[0], f"{where}.ranges[{axis}] start", 0, dim)
            _int(span[1], f"{where}.ranges[{axis}] stop", start, dim)


def calibration(value: Any) -> dict[str, Any]:
    """The calibration table: p50_ms[level][setting] numbers, one row per calibrated ratio."""
    _of(value, dict, "calibration")
    frequencies = [_number(f, "calibration.frequencies[]")
                   for f in _of(value.get("frequencies"), list, "calibration.frequencies")]
    ratios = [_number(r, "calibration.ratios[]") for r in _of(value.get("ratios"), list, "calibration.ratios")]
    rows = _of(value.get("p50_ms"), list, "calibration.p50_ms")
    if len(rows) != len(ratios):
        raise _Bad(f"calibration.p50_ms has {len(rows)} rows for {len(ratios)} ratios")
    for i, row in enumerate(rows):
        if len(_of(row, list, f"calibration.p50_ms[{i}]")) != len(frequencies):
            raise _Bad(f"calibration.p50_ms[{i}] has {len(row)} values for {len(frequencies)} frequencies")
        for v in row:
            _number(v, f"calibration.p50_ms[{i}][]")
    return value


def _numbers(value: Any, where: str, count: int, low: float | None = 0.0) -> list[float]:
    """A list of ``count`` finite numbers (each at least ``low`` unless None)."""
    items = _of(value, list, where)
    if len(items) != count:
        raise _Bad(f"{where} has {len(items)} values for {count} frequencies")
    out = [_number(v, f"{where}[]") for v in items]
    if low is not None and any(v < low for v in out):
        raise _Bad(f"{where} has a value below {low:g}")
    return out


def _frequencies(value: Any, name: str) -> int:
    freqs = [_number(f, f"{name}.frequencies[]") for f in _of(value.get("frequencies"), list, f"{name}.frequencies")]
    if not freqs or freqs != sorted(set(freqs)):
        raise _Bad(f"{name}.frequencies must be distinct and ascending, got {_show(freqs)}")
    return len(freqs)


def lut_table(value: Any, schema: str) -> dict[str, Any]:
    """``ofa/lut``: every number ``predict`` and ``fit`` read, one per frequency, latencies >= 0."""
    _of(value, dict, "ofa/lut")
    if value.get("schema") != schema:
        raise _Bad(f"ofa/lut has schema {_show(value.get('schema'))}, this edgert reads {schema}")
    n = _frequencies(value, "ofa/lut")
    _numbers(value.get("overhead_ms"), "ofa/lut.overhead_ms", n)
    for i, block in enumerate(_of(value.get("blocks"), list, "ofa/lut.blocks")):
        where = f"ofa/lut.blocks[{i}]"
        _of(block, dict, where)
        for g in _of(block.get("groups"), list, f"{where}.groups"):
            _int(g, f"{where}.groups[]")
        for quantity in ("latency_ms", "energy_mj"):
            if quantity in block:
                for key, row in _of(block[quantity], dict, f"{where}.{quantity}").items():
                    _numbers(row, f"{where}.{quantity}[{key!r}]", n)
    for i, check in enumerate(_of(value.get("checks"), list, "ofa/lut.checks")):
        _of(_of(check, dict, f"ofa/lut.checks[{i}]").get("config"), str, f"ofa/lut.checks[{i}].config")
        _numbers(check.get("measured_ms"), f"ofa/lut.checks[{i}].measured_ms", n)
    correction = value.get("correction")
    if correction is not None:
        if len(_of(correction, list, "ofa/lut.correction")) != n:
            raise _Bad(f"ofa/lut.correction has {len(correction)} entries for {n} frequencies")
        for j, line in enumerate(correction):
            _of(line, dict, f"ofa/lut.correction[{j}]")
            _number(line.get("a"), f"ofa/lut.correction[{j}].a")
            _number(line.get("b"), f"ofa/lut.correction[{j}].b")
    return value


def pareto_table(value: Any, schema: str) -> dict[str, Any]:
    """``ofa/pareto``: one set per frequency, each entry a configuration with finite numbers."""
    _of(value, dict, "ofa/pareto")
    if value.get("schema") != schema:
        raise _Bad(f"ofa/pareto has schema {_show(value.get('schema'))}, this edgert reads {schema}")
    n = _frequencies(value, "ofa/pareto")
    fronts = _of(value.get("pareto"), list, "ofa/pareto.pareto")
    if len(fronts) != n:
        raise _Bad(f"ofa/pareto.pareto has {len(fronts)} sets for {n} frequencies")
    entries = [(f"ofa/pareto.pareto[{j}][{k}]", e) for j, front in enumerate(fronts)
               for k, e in enumerate(_of(front, list, f"ofa/pareto.pareto[{j}]"))]
    if value.get("best") is not None:
        entries.append(("ofa/pareto.best", value["best"]))
    for where, entry in entries:
        _of(entry, dict, where)
        _of(entry.get("config"), str, f"{where}.config")
        _of(entry.get("key"), str, f"{where}.key")
        _number(entry.get("accuracy"), f"{where}.accuracy")
        for quantity in ("latency_ms", "energy_mj"):
            if quantity in entry and _number(entry[quantity], f"{where}.{quantity}") < 0:
                raise _Bad(f"{where}.{quantity} is negative")
        if "latency_ms" not in entry:
            raise _Bad(f"{where} has no latency_ms")
    return value
