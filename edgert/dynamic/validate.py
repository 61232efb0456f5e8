"""Compare a bundle, run here or on a device, with ONNX Runtime on the original model here.

The report says how far the outputs are apart, which paths and segments the inputs
exercised, which If decisions were within numerical noise of flipping (a mismatch there
is a different path, not a wrong kernel), and an exit status for the CLI.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from edgert.backends import TensorSpec
from edgert.errors import ModelError, UsageError
from edgert.files import not_a_file
from edgert.tensors import check_cases, check_dims, load_cases, random_feeds

from .runtime import inspect

REPORT_SCHEMA = "edgert.validate/1"
MAX_RANDOM_CASES = 100_000


def _branches(block: dict[str, Any], program: str = "main") -> Iterable[tuple[str, str]]:
    """Every (If node, branch) in a program block, nested blocks included; nodes of the
    guarded program are named ``guarded:<node>``."""
    for step in block["steps"]:
        if step["op"] == "if":
            for taken in ("then", "else"):
                yield step["node"] if program == "main" else f"{program}:{step['node']}", taken
                yield from _branches(step[taken], program)
        elif step["op"] in ("loop", "scan"):
            yield from _branches(step["body"], program)


def _engine_control_flow(block: dict[str, Any]) -> Iterable[str]:
    """If/Loop/Scan nodes that call steps run inside an engine (whole-model bundles)."""
    for step in block["steps"]:
        if step["op"] == "call":
            yield from step.get("control_flow", [])
        for key in ("then", "else", "body"):
            if key in step:
                yield from _engine_control_flow(step[key])


def _errors(got: np.ndarray, want: np.ndarray, atol: float) -> tuple[float, float]:
    """Max absolute and relative error; relative to max(|want|, atol) so zeros do not explode.
    NaN where the reference has NaN, or the same infinity, is no error (the bundle computed what
    the model computes); NaN against a number is an infinite one."""
    if got.shape != want.shape:
        return float("inf"), float("inf")
    if got.size == 0:
        return 0.0, 0.0
    g, w = got.astype(np.float64), want.astype(np.float64)
    same = (g == w) | (np.isnan(g) & np.isnan(w))
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, counted as infinite below
        diff = np.where(same, 0.0, np.abs(g - w))
    diff = np.where(np.isnan(diff), np.inf, diff)
    rel = diff / np.maximum(np.abs(np.nan_to_num(w, nan=0.0)), atol)
    return float(diff.max()), float(rel.max())


def _mismatch(got: list[Any], want: list[Any], names: list[str]) -> str | None:
    """What makes the outputs incomparable (count or a shape), in words; None when they match."""
    if len(got) != len(want):
        return f"{len(got)} outputs, the reference has {len(want)}"
    for name, g, w in zip(names, got, want):
        if np.shape(g) != np.shape(w):
            return f"output {name} has shape {np.shape(g)}, the reference {np.shape(w)}"
    return None


def _reference_session(path: Path) -> Any:
    """ONNX Runtime on the reference model; a missing or unreadable file is a ModelError."""
    import onnxruntime as ort

    why = not_a_file(path)
    if why or not path.exists():
        raise ModelError(f"the reference model {path} {why or 'does not exist'}", path=str(path))
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise ModelError(f"ONNX Runtime cannot load the reference model {path}: {exc}", path=str(path)) from exc


Runner = Callable[[list[dict[str, np.ndarray]]], list[dict[str, Any]]]


def validate(bundle: Path, reference_model: Path, cases: Any = None, random: int = 0,
             force_paths: bool = False, *, dims: Mapping[str, int] | None = None,
             seed: int = 0, rtol: float = 1e-3, atol: float = 1e-4,
             noise: float = 1e-4, runner: Runner | None = None,
             device: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``cases`` (feeds or an .npz) and ``random`` seeded inputs through both and compare.

    ``force_paths``: fail unless every If branch in the program was taken by some input; a
    bundle whose control flow runs inside an engine (auto's whole-model choice) cannot show
    which branches ran, so asking for it there is a UsageError.
    ``noise``: an If whose compared operands are closer than this is reported as near
    its threshold; a mismatch on such an input does not fail validation.
    ``runner``: runs the bundle on a list of feeds (``edgert.execute.run_cases`` records);
    default: on this machine. ``device``: facts about where it ran, copied into the report.
    """

    from edgert.execute import run_cases

    if not (0 <= rtol <= 1 and 0 <= atol < math.inf):  # NaN failed every output, inf passed every one
        raise UsageError(f"tolerances must be finite, rtol in [0, 1] and atol >= 0 (rtol={rtol}, atol={atol})")
    if not 0 <= random <= MAX_RANDOM_CASES:  # each case is kept: 1e11 grew memory until it ran out
        raise UsageError(f"--random must be 0..{MAX_RANDOM_CASES}, got {random}")
    todo = load_cases(cases)
    manifest = inspect(bundle)
    hidden = sorted(set(_engine_control_flow(manifest["program"]["body"])))
    if force_paths and hidden:
        raise UsageError(
            f"cannot check path coverage of {Path(bundle).name}: its control flow "
            f"({', '.join(hidden)}) runs inside one engine call, out of the host's sight; "
            f"compile with --backend ort or tvm for a bundle whose branches can be checked",
            control_flow=hidden)
    inputs = [TensorSpec.from_dict(d) for d in manifest["inputs"]]
    check_dims(inputs, dims or {})
    check_cases(inputs, todo)  # a case that does not fit is the file's fault, not the bundle's
    todo += [(f"random{i}", random_feeds(inputs, dims or {}, seed + i)) for i in range(random)]
    if not todo:
        raise UsageError("nothing to validate: pass --cases F.npz or --random N")
    reference = _reference_session(Path(reference_model))
    ref_names = [o.name for o in reference.get_outputs()]
    runner = runner or (lambda feeds: run_cases(Path(bundle), "bundle", feeds))
    records = runner([feeds for _, feeds in todo])
    results, taken, exercised = [], set(), set()
    programs: dict[str, int] = {}  # runs per program ("guarded": the specialised one)
    for (case, feeds), record in zip(todo, records):
        if "error" in record:
            results.append({"case": case, "ok": False, "error": record["error"]})
            continue
        try:
            want = reference.run(ref_names, feeds)
        except Exception as exc:  # ORT's untyped errors: the reference does not fit the bundle
            raise ModelError(f"the reference model {Path(reference_model).name} cannot run the "
                             f"bundle's inputs (is it the model the bundle was compiled from?): "
                             f"{exc}", reference=str(reference_model)) from exc
        got = record["outputs"]
        errs = [_errors(np.asarray(g), np.asarray(w), atol) for g, w in zip(got, want)]
        mismatch = _mismatch(got, want, ref_names)
        ok = mismatch is None and all(np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
                                      for g, w in zip(got, want))
        path = record["path"]
        near = [{"node": e["node"], "margin": e["margin"]} for e in path["events"]
                if e["kind"] == "if" and e.get("margin", np.inf) <= noise]
        prefix = "" if path["program"] == "main" else f"{path['program']}:"
        taken.update((prefix + e["node"], e["branch"]) for e in path["events"] if e["kind"] == "if")
        programs[path["program"]] = programs.get(path["program"], 0) + 1
        exercised.update(path["segments"])
        results.append({"case": case, "ok": ok, "path": path["key"],
                        "max_abs_error": max((a for a, _ in errs), default=0.0),
                        "max_rel_error": max((r for _, r in errs), default=0.0),
                        "near_threshold": near, **({"mismatch": mismatch} if mismatch else {})})
    all_branches = set(_branches(manifest["program"]["body"]))
    if "guarded" in manifest:
        all_branches.update(_branches(manifest["guarded"]["program"]["body"], "guarded"))
    all_segments = {s["id"] for s in manifest["segments"]}
    failed = [r for r in results if not r["ok"] and not r.get("near_threshold")]
    untaken = sorted(all_branches - taken)
    status = "fail" if failed or (force_paths and untaken) else "pass"
    paths: dict[str, int] = {}
    for r in results:
        if "path" in r:
            paths[r["path"]] = paths.get(r["path"], 0) + 1
    return {
        "schema": REPORT_SCHEMA, "bundle": str(bundle), "reference": str(reference_model),
        "device": dict(device) if device is not None else None,
        "tolerance": {"rtol": rtol, "atol": atol, "noise": noise},
        "cases": results,
        "max_abs_error": max((r.get("max_abs_error", 0.0) for r in results), default=0.0),
        "max_rel_error": max((r.get("max_rel_error", 0.0) for r in results), default=0.0),
        "paths": paths, "programs": programs,
        "branches_not_taken": [f"{node}={b}" for node, b in untaken],
        "control_flow_in_engine": hidden,
        "segments_exercised": sorted(exercised),
        "segments_not_exercised": sorted(all_segments - exercised),
        "near_threshold": [dict(n, case=r["case"]) for r in results for n in r.get("near_threshold", [])],
        "status": status, "exit_code": 0 if status == "pass" else 1,
    }
