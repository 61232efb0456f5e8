"""``edgert report``: result files in, one self-contained HTML page out (plots embedded).

Each result kind is dispatched on the file's ``schema`` key to a module that turns it into
plots, tables and warnings (``edgert.report.model``); ``page`` writes the HTML. Layouts of
the kinds are documented in docs/report.md.
"""
from __future__ import annotations

from typing import Any

import dataclasses
import json
from pathlib import Path
from typing import Callable

import edgert
from edgert import result
from edgert.atomic import replace_file
from edgert.errors import UsageError
from edgert.finite import is_finite_number
from edgert.report import bench, calibration, page, summary, sweep
from edgert.report.model import Built, Loaded

KINDS: dict[str, Callable[[list[Loaded]], Built]] = {
    bench.SCHEMA: bench.build,
    sweep.SCHEMA: sweep.build,
    calibration.SCHEMA: calibration.build,
}

__all__ = ["KINDS", "load", "render_report"]


def load(path: Path) -> Loaded:
    """Read one result file; UsageError when it is missing, not JSON or of an unknown kind."""
    path = Path(path)
    if path.suffix not in (".json", ""):
        converted = _aio_calibration(path)
        if converted is not None:
            return Loaded(path, converted)
    data = result.parse_json_file(path)
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema in result.OLD_SCHEMAS:
        data, schema = result.upgrade(data), result.SCHEMA
    if schema == result.SCHEMA:
        result.check_samples(data, path)
    if schema not in KINDS:
        raise UsageError(f"{path} has schema {schema!r}; the report reads "
                         f"{', '.join((*result.OLD_SCHEMAS, *KINDS))}", path=str(path), schema=schema)
    summaries = [("latency_ms", data.get("latency_ms"))] if schema == bench.SCHEMA else \
        [(f"point {i + 1}'s latency_ms", p.get("latency_ms") if isinstance(p, dict) else None)
         for i, p in enumerate(data.get("points") or [])
         if not (isinstance(p, dict) and p.get("error"))] if schema == sweep.SCHEMA else []  # errors: no timing
    for where, block in summaries:
        _check_latency(block, where, path)
    if schema == sweep.SCHEMA:
        _check_amounts(data.get("points"), path)
    if schema == calibration.SCHEMA:
        calibration.check_settings(data, path)
    return Loaded(path, data)


_AMOUNTS = ("power_w", "idle_power_w", "energy_per_inference_mj", "runs", "duration_s")


def _check_amounts(points: Any, path: Path) -> None:
    """A sweep point's power, energy and throughput inputs: finite and >= 0, or null (a
    hand-edited -5 mJ was shown, and ranked least energy, as given). Energy above idle may be
    negative: a sensor's noise at a clock that draws little more than idle."""
    for i, point in enumerate(points if isinstance(points, list) else []):
        bad = [k for k in _AMOUNTS if isinstance(point, dict) and point.get(k) is not None
               and not result.is_amount(point[k])]
        if bad:
            raise UsageError(f"{path} is inconsistent: point {i + 1}'s {bad[0]} is {point[bad[0]]!r}, "
                             "not a finite number >= 0 or null", path=str(path))


def _check_latency(summary: Any, where: str, path: Path) -> None:
    """The numbers the plots draw: a finite median inside its confidence interval."""
    p50 = summary.get("p50") if isinstance(summary, dict) else None
    ci = summary.get("ci95") if isinstance(summary, dict) else None
    if not is_finite_number(p50) or p50 <= 0:  # 0 ms: every "× fastest" divided by it
        raise UsageError(f"{path} is inconsistent: {where} has no finite median (p50) above 0 ms", path=str(path))
    if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(is_finite_number(v) for v in ci)
                               and ci[0] <= p50 <= ci[1]):
        raise UsageError(f"{path} is inconsistent: {where} has a 95% CI of {ci!r}, which does not "
                         f"contain its median {p50}", path=str(path))


def _aio_calibration(path: Path) -> dict[str, Any] | None:
    """The calibration table ``edgert calibrate`` stored inside an All-in-One file, as a
    ``edgert.calibration/1`` result; None when ``path`` is not such a file."""
    from edgert.errors import BundleError
    from edgert.variants import aiofile
    from edgert.variants.accuracy import accuracy_of

    try:
        opened = aiofile.read(path, verify=False)
    except BundleError:
        if path.suffix == ".aio":
            raise  # an All-in-One file, but a broken one: say what is wrong with it
        return None
    try:
        raw = opened.metadata.get("calibration")
        meta = opened.meta
    finally:
        opened.close()
    if raw is None:
        raise UsageError(f"{path} is an All-in-One file without a calibration table: run "
                         "edgert calibrate on it first", path=str(path))
    table = json.loads(raw)
    warnings = ["emulated frequency settings (CPU-quota levels): not clock speeds"] \
        if table.get("emulated") else []
    units = {"khz": "kHz", "hz": "Hz", "emulated fraction": "share"}  # the table's unit -> the report's
    out = {"schema": "edgert.calibration/1", "emulated": table.get("emulated", False),
           "model": {"path": str(path), "sha256": (meta.get("source") or {}).get("sha256")},  # the pruned model's
           "device": table.get("device") or {},
           "frequency_unit": units.get(table.get("frequency_unit", "khz"), table.get("frequency_unit")),
           "frequencies": table["frequencies"],
           "levels": [{"ratio": r, "accuracy": accuracy_of(meta, r)} for r in table["ratios"]],
           "latency_ms": table["p50_ms"], "warnings": warnings + list(table.get("warnings") or [])}
    if "energy_mj" in table:
        out.update(energy_mj=table["energy_mj"], power_source=table.get("power_source"))
    if table.get("power"):
        out["power"] = table["power"]
    out["fixture"] = bool(table.get("fixture"))
    return out


KIND_OF_SCHEMA = {bench.SCHEMA: "bench", sweep.SCHEMA: "sweep", calibration.SCHEMA: "calibration"}


def content_names(items: list[Loaded]) -> list[Loaded]:
    """Each file named by what it holds (model · engine · device · kind), never by its file name;
    a repeat gets ``(2)``, ``(3)``."""
    named, seen = [], {}
    for item in items:
        kind = KIND_OF_SCHEMA[item.data["schema"]]
        d = item.data
        parts = [summary.model_name(d, item.path)]
        if kind == "bench":
            scenario = (d.get("scenario") or {}).get("name", "single-stream")
            parts += [summary._backend(d)] + ([scenario] if scenario != "single-stream" else [])
        else:
            parts += ["clock sweep" if kind == "sweep" else "All-in-One calibration"]
        parts.append(summary._host(d))
        name = " · ".join(parts)
        seen[name] = seen.get(name, 0) + 1
        named.append(dataclasses.replace(item, name=name if seen[name] == 1 else f"{name} ({seen[name]})"))
    return named


def render_report(result_paths: list[Path], out_html: Path) -> Path:
    """Write ``out_html``: one file, every plot embedded (nothing written beside it)."""
    if not result_paths:
        raise UsageError("give at least one result file to report on")
    items = content_names([load(p) for p in result_paths])
    try:
        text = _page(items)
    except _MALFORMED as exc:  # a hand-edited file: name it (the page of each file alone)
        for item in items:
            try:
                _page([item])
            except _MALFORMED as alone:
                raise UsageError(f"{item.path} has a field the report cannot read ({_what(alone)}): "
                                 "it is not as edgert wrote it", path=str(item.path)) from alone
        raise UsageError(f"the files cannot be reported together ({_what(exc)})") from exc
    out_html = Path(out_html)
    replace_file(out_html, lambda fh: fh.write(text.encode("utf-8")))
    return out_html


# what reading a field of the wrong kind raises (files are checked for the fields the report
# computes with; the rest is read as written)
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _what(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"


def _page(items: list[Loaded]) -> str:
    built = Built()
    for schema, build in KINDS.items():
        group = [i for i in items if i.data["schema"] == schema]
        if group:
            part = build(group)
            built.sections += part.sections
            built.warnings += part.warnings
    models = summary.configurations([(KIND_OF_SCHEMA[i.data["schema"]], i) for i in items])
    return page.render(items, models, built.sections, built.warnings, edgert.__version__)
