"""Segment specialisation before TVM import: shape arithmetic folded, ranks from a sample
run, kernel-less segments moved into the host program."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import edgert.dynamic as dyn
from edgert.dynamic.specialize import specialize


def _reshape_by_shape_model() -> onnx.ModelProto:
    """y = Reshape(x, concat(shape(x)[0:1], [-1])): shape arithmetic TVM cannot import."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Slice", ["s", "zero", "one"], ["batch"], name="slice"),
        helper.make_node("Concat", ["batch", "minus_one"], ["new_shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "new_shape"], ["y"], name="reshape"),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    inits = [numpy_helper.from_array(np.array([v], np.int64), n)
             for n, v in (("zero", 0), ("one", 1), ("minus_one", -1))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_arithmetic_folds_into_a_constant_shape():
    model = _reshape_by_shape_model()
    special = specialize(model.SerializeToString())
    ops = [n.op_type for n in special.model.graph.node]
    assert ops == ["Reshape", "Relu"] and special.folded == 3
    shape = {t.name: numpy_helper.to_array(t) for t in special.model.graph.initializer}["new_shape"]
    assert shape.tolist() == [2, -1]
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    got = ort.InferenceSession(special.model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(got[0], want[0])


def _untyped_input_model() -> bytes:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_rank_comes_from_the_sample_run_only_when_every_call_agreed():
    agreed = specialize(_untyped_input_model(), {"x": {(2, 3), (5, 3)}})
    dims = agreed.model.graph.input[0].type.tensor_type.shape.dim
    assert agreed.ranks_from_sample == ["x"]
    assert len(dims) == 2 and all(d.dim_param and not d.HasField("dim_value") for d in dims)
    disagreed = specialize(_untyped_input_model(), {"x": {(2, 3), (4,)}})
    assert disagreed.ranks_from_sample == []
    assert not disagreed.model.graph.input[0].type.tensor_type.HasField("shape")


def test_a_segment_that_folds_away_becomes_host_consts(tmp_path: Path):
    """The If's condition is `size(x) > 4` on a static x: no engine call needed for it."""
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["a"], name="relu")], "then", [],
                             [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["b"], name="neg")], "else", [],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Size", ["x"], ["n"], name="size"),
             helper.make_node("Greater", ["n", "four"], ["big"], name="greater"),
             helper.make_node("If", ["big"], ["y"], name="if", then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.array(4, np.int64), "four")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    bundle = dyn.compile(path, backend="ort", out=tmp_path / "m.edgert")
    manifest = dyn.inspect(bundle)
    (record,) = manifest["host_folded"]
    assert record["ops"] == ["Size", "Greater"] and record["reason"].startswith("kernel-less")
    assert all(seg["ops"] != ["Size", "Greater"] for seg in manifest["segments"])
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    with dyn.load(bundle) as runtime:
        (y,) = runtime.run({"x": x})
        assert runtime.last_path.key() == "if=then"
        assert runtime.last_path.segments == [manifest["segments"][0]["id"]]
    np.testing.assert_array_equal(y, np.maximum(x, 0))
