"""ONNX's own node conformance cases that contain If, Loop or Scan (anywhere, including the
function-expanded ones), compiled through edgert with ORT segments."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgert.dynamic as dyn
from edgert.dynamic.normalize import CONTROL_FLOW, iter_graphs
from edgert.errors import ModelError

# Cases edgert refuses on purpose, with the reason its ModelError must give.
REFUSED = {
    "test_if_seq": "sequence", "test_if_opt": "optional", "test_loop13_seq": "sequence",
    "test_loop16_seq_none": "optional", "test_scan_sum": "opset-8",
    "test_sequence_map_identity_1_sequence_expanded": "sequence",
    "test_sequence_map_identity_2_sequences_expanded": "sequence",
    "test_sequence_map_identity_1_sequence_1_tensor_expanded": "sequence",
    "test_sequence_map_add_2_sequences_expanded": "sequence",
    "test_sequence_map_add_1_sequence_1_tensor_expanded": "sequence",
    "test_sequence_map_extract_shapes_expanded": "sequence",
}


def _has_control_flow(model: onnx.ModelProto) -> bool:
    graphs = [model.graph] + [g for _, g in iter_graphs(model.graph)]
    nodes = [n for g in graphs for n in g.node] + [n for f in model.functions for n in f.node]
    return any(n.op_type in CONTROL_FLOW for n in nodes)


def _collect() -> list:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators warn about overflow in casts
        found = collect_testcases(None)
    return [c for c in found if c.kind == "node" and _has_control_flow(c.model)]


CASES = {c.name: c for c in _collect()}


def test_enough_control_flow_cases_are_found():
    assert {"test_if", "test_loop11", "test_scan9_sum"} <= set(CASES)
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_conformance_case(name, tmp_path: Path):
    case = CASES[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(case.model, path)
    if name in REFUSED:
        with pytest.raises(ModelError, match=REFUSED[name]):
            dyn.compile(path, backend="ort", out=tmp_path / "b.edgert")
        return
    inputs, expected = case.data_sets[0]
    if any(np.asarray(v).dtype.name == "bfloat16" for v in inputs):
        pytest.skip("ONNX Runtime's Python API takes no bfloat16 numpy inputs")
    names = [i.name for i in case.model.graph.input]
    with dyn.load(dyn.compile(path, backend="ort", out=tmp_path / "b.edgert")) as runtime:
        got = runtime.run(dict(zip(names, inputs)))
        assert len(got) == len(expected)
        for g, want in zip(got, expected):
            np.testing.assert_allclose(g, np.asarray(want), rtol=1e-3, atol=1e-4)
        assert runtime.last_path.key() != "straight"
