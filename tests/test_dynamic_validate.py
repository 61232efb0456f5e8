"""validate(): bundle vs ONNX Runtime on the original model, with path coverage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgert.dynamic as dyn
from edgert.errors import UsageError

from conftest import run_cli
from test_dynamic_partition import if_model

ZOO = Path(dyn.__file__).resolve().parent.parent / "zoo" / "dynamic"


def test_zoo_cases_cover_every_branch(tmp_path):
    bundle = dyn.compile(ZOO / "early_exit_cnn.onnx", backend="ort", out=tmp_path / "b.edgert")
    report = dyn.validate(bundle, ZOO / "early_exit_cnn.onnx", cases=ZOO / "early_exit_cnn.npz",
                          random=2, force_paths=True)
    assert report["status"] == "pass" and report["exit_code"] == 0
    assert len(report["cases"]) == 8
    assert report["branches_not_taken"] == []
    assert report["segments_not_exercised"] == []
    assert len(report["paths"]) == 3
    assert report["max_abs_error"] <= 1e-4


def test_untaken_branch_fails_only_when_paths_are_forced(tmp_path):
    model = if_model(tmp_path)
    bundle = dyn.compile(model, backend="ort", out=tmp_path / "b.edgert")
    cases = [{"x": np.array([1.0, 2.0], np.float32)}]
    loose = dyn.validate(bundle, model, cases=cases)
    forced = dyn.validate(bundle, model, cases=cases, force_paths=True)
    assert loose["status"] == "pass"
    assert forced["status"] == "fail" and forced["exit_code"] == 1
    assert forced["branches_not_taken"] == ["gate=else"]


def test_decision_on_its_threshold_is_reported(tmp_path):
    model = if_model(tmp_path)
    bundle = dyn.compile(model, backend="ort", out=tmp_path / "b.edgert")
    # relu(x) sums to exactly 0, the threshold of "gate": noise could flip it
    report = dyn.validate(bundle, model, cases=[{"x": np.array([-1.0, -2.0], np.float32)},
                                                {"x": np.array([3.0, 1.0], np.float32)}])
    assert report["near_threshold"] == [{"node": "gate", "margin": 0.0, "case": "case0"}]
    assert report["cases"][1]["near_threshold"] == []


def test_wrong_reference_fails(tmp_path):
    bundle = dyn.compile(ZOO / "skipnet.onnx", backend="ort", out=tmp_path / "b.edgert")
    report = dyn.validate(bundle, ZOO / "blockdrop.onnx", random=2)
    assert report["status"] == "fail"
    assert report["max_abs_error"] > 1e-3


def test_nothing_to_validate_is_a_usage_error(tmp_path):
    model = if_model(tmp_path)
    bundle = dyn.compile(model, backend="ort", out=tmp_path / "b.edgert")
    with pytest.raises(UsageError):
        dyn.validate(bundle, model)
    for options in ({"rtol": float("nan")}, {"atol": float("inf")}, {"random": 99999999999}):
        with pytest.raises(UsageError):  # NaN failed every output, inf passed every one, 1e11 ate memory
            dyn.validate(bundle, model, **({"random": 1} | options))


def test_a_reference_or_cases_file_that_cannot_serve_is_named_as_such(tmp_path):
    """A directory or FIFO given as the reference was 'does not exist'; an .npz with no arrays
    was 'pass --cases' (it was passed); a case naming an input the bundle lacks failed as if
    the bundle had failed it."""
    import os

    from edgert.errors import InputError, ModelError

    model = if_model(tmp_path)
    bundle = dyn.compile(model, backend="ort", out=tmp_path / "b.edgert")
    os.mkfifo(tmp_path / "fifo")
    for reference, says in ((tmp_path, "is a directory"), (tmp_path / "fifo", "is not a regular file"),
                            (tmp_path / "gone.onnx", "does not exist")):
        with pytest.raises(ModelError, match=f"the reference model .* {says}"):
            dyn.validate(bundle, reference, random=1)
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(UsageError, match="empty.npz holds no inputs"):
        dyn.validate(bundle, model, cases=tmp_path / "empty.npz")
    np.savez(tmp_path / "other.npz", **{"c1/x": np.ones(2, np.float32), "c2/y": np.ones(2, np.float32)})
    with pytest.raises(InputError, match="case 'c2' of the input cases: the model has no input 'y'"):
        dyn.validate(bundle, model, cases=tmp_path / "other.npz")


def test_an_output_of_another_shape_is_named_in_the_report(tmp_path):
    """A 0-d output compared with a (1,) one is a shape mismatch said in words, not 'inf'."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(ZOO / "symbolic_batch.onnx")
    model.graph.initializer.append(helper.make_tensor("axes0", TensorProto.INT64, [1], [0]))
    model.graph.node.append(helper.make_node("Unsqueeze", ["score", "axes0"], ["score_1d"]))
    model.graph.output.pop()  # the 0-d "score"
    model.graph.output.append(helper.make_tensor_value_info("score_1d", TensorProto.FLOAT, [1]))
    reference = tmp_path / "score_1d.onnx"
    onnx.save(model, reference)
    bundle = dyn.compile(ZOO / "symbolic_batch.onnx", backend="ort", out=tmp_path / "b.edgert")
    report = dyn.validate(bundle, reference, cases=ZOO / "symbolic_batch.npz")
    assert report["status"] == "fail"
    assert {c["mismatch"] for c in report["cases"]} == {
        "output score_1d has shape (), the reference (1,)"}
    assert dyn.validate(bundle, ZOO / "symbolic_batch.onnx", cases=ZOO / "symbolic_batch.npz")[
        "status"] == "pass"
    proc = run_cli("validate", str(bundle), "--reference", str(reference), "--cases",
                   str(ZOO / "symbolic_batch.npz"))
    assert proc.returncode == 1 and proc.stdout.startswith("fail:")
    assert "failed: case0: output score_1d has shape (), the reference (1,) on path" in proc.stdout


def test_nan_where_the_reference_has_nan_passes_and_nan_against_a_number_fails(tmp_path):
    """x = [nan, 1]: the model's own output is NaN at 0, so the bundle's NaN there matches (it
    failed as a mismatch with error 'nan'); NaN or the other infinity against a number is an
    infinite error."""
    from edgert.dynamic.validate import _errors

    model = if_model(tmp_path)
    bundle = dyn.compile(model, backend="ort", out=tmp_path / "b.edgert")
    report = dyn.validate(bundle, model, cases=[{"x": np.array([np.nan, 1.0], np.float32)}])
    assert report["status"] == "pass" and report["max_abs_error"] == 0.0, report
    want = np.array([np.nan, np.inf, 1.0])
    assert _errors(want.copy(), want, 1e-4) == (0.0, 0.0)
    assert _errors(np.array([1.0, np.inf, 1.0]), want, 1e-4)[0] == np.inf
    assert _errors(np.array([np.nan, -np.inf, 1.0]), want, 1e-4)[0] == np.inf
