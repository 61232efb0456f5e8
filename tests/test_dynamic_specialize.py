"""Segment specialisation before TVM import: shape arithmetic folded, ranks from a sample
run, kernel-less segments moved into the host program, loop-carried shapes proved static."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgert.dynamic as dyn
from edgert.backends import backend_class
from edgert.dynamic.carry import static_shape
from edgert.dynamic.normalize import iter_graphs, normalize
from edgert.dynamic.partition import partition
from edgert.dynamic.specialize import fold_constants, specialize


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


def test_ort_folds_what_the_reference_evaluator_gets_wrong():
    """BERT's position ids: GatherElements of two constants (onnx's reference evaluator fails
    on it), then Expand; left unfolded, onnx2tf cannot convert the Expand."""
    table = np.arange(64, dtype=np.int64).reshape(1, 64) * 3
    index = np.arange(16, dtype=np.int64).reshape(1, 16)
    nodes = [helper.make_node("GatherElements", ["table", "index"], ["ids"], name="gather", axis=1),
             helper.make_node("Expand", ["ids", "shape"], ["wide"], name="expand"),
             helper.make_node("Cast", ["wide"], ["wide_f"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "wide_f"], ["y"], name="add")]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(index, "index"),
             numpy_helper.from_array(np.array([2, 16], np.int64), "shape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    special = specialize(model.SerializeToString())
    assert [n.op_type for n in special.model.graph.node] == ["Add"]
    x = np.ones((2, 16), np.float32)
    got = ort.InferenceSession(special.model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, x + np.broadcast_to(table[:, :16], (2, 16)))


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
    """The If's condition is `size(x) > 4` on a static x: no engine call needed for it, and
    the If itself resolves at compile time (its else branch is dead)."""
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
    kernel_less, dead = manifest["host_folded"]
    assert kernel_less["ops"] == ["Size", "Greater"] and kernel_less["reason"].startswith("kernel-less")
    assert dead["ops"] == ["Neg"] and dead["reason"].startswith("dead branch: If if's condition")
    assert [seg["ops"] for seg in manifest["segments"]] == [["Relu"]]
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    with dyn.load(bundle) as runtime:
        (y,) = runtime.run({"x": x})
        assert runtime.last_path.key() == "straight"
        assert runtime.last_path.segments == [manifest["segments"][0]["id"]]
    np.testing.assert_array_equal(y, np.maximum(x, 0))


def _branch(name: str, op: str, shape: list[int]) -> onnx.GraphProto:
    """x op 1, and a target shape for it, as If branch outputs."""
    nodes = [helper.make_node(op, ["x", "one"], [f"{name}_v"], name=f"{name}_op"),
             helper.make_node("Constant", [], [f"{name}_s"], name=f"{name}_shape",
                              value=numpy_helper.from_array(np.array(shape, np.int64)))]
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_v", F, None),
                                               helper.make_tensor_value_info(f"{name}_s", I64, None)])


def test_a_constant_condition_if_becomes_its_branch_and_its_outputs_fold_downstream(tmp_path: Path):
    """cond = rank(x) == 2 is a constant; the branches give different target shapes, so ONNX
    cannot type the Reshape after the If, but once the If resolves its shape is a constant."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Size", ["s"], ["rank"], name="rank"),
             helper.make_node("Equal", ["rank", "two"], ["is_2d"], name="equal"),
             helper.make_node("If", ["is_2d"], ["v", "target"], name="if",
                              then_branch=_branch("then", "Add", [3, 2]),
                              else_branch=_branch("else", "Sub", [-1])),
             helper.make_node("Reshape", ["v", "target"], ["y"], name="reshape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [2, 3])],
                              [helper.make_tensor_value_info("y", F, None)],
                              [numpy_helper.from_array(np.array(2, np.int64), "two"),
                               numpy_helper.from_array(np.array(1, np.float32), "one")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    part = partition(normalize(path))
    assert any(step["op"] == "if" for step in part.program["body"]["steps"])
    removed = fold_constants(part)
    assert [r["ops"] for r in removed] == [["Shape", "Size", "Equal"], ["Sub"]]
    assert not any(step["op"] == "if" for step in part.program["body"]["steps"])
    reshape = next(seg for seg in part.segments if "Reshape" in seg.ops)
    assert "target" not in reshape.inputs  # a constant now: an initializer of the segment
    model = onnx.load_from_string(reshape.model_bytes)
    assert static_shape(model.graph.input[0].type) == (2, 3)  # typed from the Add segment's output
    bundle = dyn.compile(path, backend="ort", out=tmp_path / "m.edgert")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with dyn.load(bundle) as runtime:
        (y,) = runtime.run({"x": x})
    (want,) = ort.InferenceSession(str(path)).run(None, {"x": x})
    np.testing.assert_array_equal(y, want)
    assert y.shape == (3, 2)


# -- loop-carried shapes (edgert.dynamic.carry) ---------------------------------------------
F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _loop(name: str, initial: str, out: str, step: list, carried: str = "s") -> onnx.NodeProto:
    """Loop(trips=3) carrying one float value; ``step`` maps ``{carried}_in`` to ``{carried}_out``.

    The body declares the carried value without a shape, as exporters do."""
    body = helper.make_graph(
        [helper.make_node("Identity", [f"{name}_go"], [f"{name}_more"], name=f"{name}_cond")] + step,
        f"{name}_body",
        [helper.make_tensor_value_info(f"{name}_i", I64, []),
         helper.make_tensor_value_info(f"{name}_go", B, []),
         helper.make_tensor_value_info(f"{carried}_in", F, None)],
        [helper.make_tensor_value_info(f"{name}_more", B, []),
         helper.make_tensor_value_info(f"{carried}_out", F, None)])
    return helper.make_node("Loop", ["trips", "yes", initial], [out], name=name, body=body)


def _loop_model(tmp_path: Path, loop: onnx.NodeProto) -> Path:
    graph = helper.make_graph(
        [loop], "g", [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, None)],
        [numpy_helper.from_array(np.array(3, np.int64), "trips"),
         numpy_helper.from_array(np.array(True), "yes")])
    path = tmp_path / "loop.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _carried_shapes(path: Path) -> dict[str, tuple[int, ...] | None]:
    """Static shape (or None) of every loop body's carried input after normalize."""
    norm = normalize(path)
    return {key: static_shape(sub.input[2].type) for key, sub in iter_graphs(norm.model.graph)
            if key.endswith("/body")}


def _run_on_ort(path: Path, tmp_path: Path) -> np.ndarray:
    x = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    with dyn.load(dyn.compile(path, backend="ort", out=tmp_path / "loop.edgert")) as runtime:
        (got,) = runtime.run({"x": x})
        assert runtime.last_path.key() != "straight"
    np.testing.assert_allclose(got, want, rtol=1e-6)
    return got


def test_a_body_that_keeps_the_shape_carries_the_initial_static_shape(tmp_path: Path):
    path = _loop_model(tmp_path, _loop("loop", "x", "y", [helper.make_node("Add", ["s_in", "x"], ["s_out"])]))
    assert _carried_shapes(path) == {"loop/body": (2, 3)}
    assert static_shape(normalize(path).model.graph.output[0].type) == (2, 3)
    _run_on_ort(path, tmp_path)


def test_a_body_that_grows_the_value_keeps_it_symbolic(tmp_path: Path):
    grow = helper.make_node("Concat", ["s_in", "x"], ["s_out"], axis=0)
    path = _loop_model(tmp_path, _loop("loop", "x", "y", [grow]))
    assert _carried_shapes(path) == {"loop/body": None}
    assert _run_on_ort(path, tmp_path).shape == (8, 3)  # 2 + 3 * 2 rows


def test_a_value_whose_shape_follows_a_growing_one_is_not_kept(tmp_path: Path):
    """a_out = b_in while b grows: under "both keep [2, 3]" a's output checks out, but b's
    does not; once b's assumption is dropped, a's no longer holds either."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["b_in"], ["a_out"]),
         helper.make_node("Concat", ["b_in", "x"], ["b_out"], axis=0)],
        "body",
        [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("cond_in", B, []),
         helper.make_tensor_value_info("a_in", F, None), helper.make_tensor_value_info("b_in", F, None)],
        [helper.make_tensor_value_info("cond_out", B, []),
         helper.make_tensor_value_info("a_out", F, None), helper.make_tensor_value_info("b_out", F, None)])
    loop = helper.make_node("Loop", ["trips", "yes", "x", "x"], ["y", "unused"], name="loop", body=body)
    path = _loop_model(tmp_path, loop)
    inputs = next(sub for _, sub in iter_graphs(normalize(path).model.graph)).input
    assert [static_shape(i.type) for i in inputs[2:]] == [None, None]
    assert _run_on_ort(path, tmp_path).shape == (6, 3)  # a ends as b after two trips: 2 + 2 * 2 rows


def _nested(inner_step: onnx.NodeProto) -> onnx.NodeProto:
    """An outer loop whose carried value is an inner loop's result (the inner loop starts
    from the outer carried value)."""
    inner = _loop("inner", "s_in", "s_out", [inner_step], carried="t")
    return _loop("outer", "x", "y", [inner])


def test_nested_loops_are_proved_inside_out(tmp_path: Path):
    path = _loop_model(tmp_path, _nested(helper.make_node("Mul", ["t_in", "x"], ["t_out"])))
    assert _carried_shapes(path) == {"outer/body": (2, 3), "outer/body/inner/body": (2, 3)}
    _run_on_ort(path, tmp_path)


def test_an_inner_loop_that_grows_its_value_keeps_both_symbolic(tmp_path: Path):
    path = _loop_model(tmp_path, _nested(helper.make_node("Concat", ["t_in", "x"], ["t_out"], axis=0)))
    assert _carried_shapes(path) == {"outer/body": None, "outer/body/inner/body": None}
    assert _run_on_ort(path, tmp_path).shape == (20, 3)  # each outer trip adds 3 * 2 rows


def test_a_loop_inside_an_if_branch_is_proved(tmp_path: Path):
    loop = _loop("loop", "x", "y_then", [helper.make_node("Add", ["s_in", "x"], ["s_out"])])
    then = helper.make_graph([loop], "then", [], [helper.make_tensor_value_info("y_then", F, None)])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["y_else"])], "else", [],
                              [helper.make_tensor_value_info("y_else", F, None)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Less", ["total", "zero"], ["negative"]),
             helper.make_node("If", ["negative"], ["y"], name="if", then_branch=then,
                              else_branch=other)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, None)],
        [numpy_helper.from_array(np.array(3, np.int64), "trips"),
         numpy_helper.from_array(np.array(True), "yes"),
         numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    path = tmp_path / "if_loop.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert _carried_shapes(path) == {"if/then_branch/loop/body": (2, 3)}
    _run_on_ort(path, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not backend_class("tvm").available(), reason="TVM is not installed")
def test_nested_loop_bodies_run_on_tvm(tmp_path: Path):
    """With the carried shapes proved, TVM builds both loop bodies (no ORT fallback)."""
    path = _loop_model(tmp_path, _nested(helper.make_node("Mul", ["t_in", "x"], ["t_out"])))
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    bundle = dyn.compile(path, backend="tvm", out=tmp_path / "nested.edgert")
    with dyn.load(bundle) as runtime:
        (got,) = runtime.run({"x": x})
        assert runtime.last_path.key() == "inner=3;inner=3;inner=3;outer=3"
        assert {s["engine"] for s in runtime.manifest["segments"]} == {"tvm"}
    np.testing.assert_allclose(got, ort.InferenceSession(str(path)).run(None, {"x": x})[0], rtol=1e-5)


def _growing_loop_model() -> onnx.ModelProto:
    """x grows by one column per iteration; the body slices x's last column at an index
    computed from its symbolic length, which TVM's importer cannot take (GPT-2's decode
    step in small)."""
    body = helper.make_graph(
        [helper.make_node("Shape", ["x_in"], ["s"]),
         helper.make_node("Gather", ["s", "axis"], ["n"]),
         helper.make_node("Sub", ["n", "axis"], ["last"]),
         helper.make_node("Slice", ["x_in", "last", "n", "axis"], ["tail"]),
         helper.make_node("Add", ["x_in", "tail"], ["y"]),
         helper.make_node("ReduceSum", ["y", "axis"], ["total"], keepdims=1),
         helper.make_node("Concat", ["y", "total"], ["x_out"], axis=1),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, "m"])],
        [numpy_helper.from_array(np.array([1], np.int64), "axis")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["steps", "keep_going", "x"], ["grown"], name="grow", body=body)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"]),
         helper.make_tensor_value_info("steps", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("grown", TensorProto.FLOAT, [1, "k"])],
        [numpy_helper.from_array(np.array(True), "keep_going")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _count_runs(session, name: str, ran: dict[str, int]) -> None:
    run = session.run

    def counted(feeds):
        ran[name] += 1
        return run(feeds)
    session.run = counted


@pytest.mark.skipif(not backend_class("tvm").available(), reason="TVM is not installed")
def test_a_growing_loop_body_runs_on_tvm_variants_per_shape(tmp_path: Path):
    path = tmp_path / "grow.onnx"
    onnx.save(_growing_loop_model(), path)
    sample = {"x": np.array([[0.5, -1.0]], np.float32), "steps": np.array(3, np.int64)}
    bundle = dyn.compile(path, backend="tvm", out=tmp_path / "g.edgert", cache_dir=tmp_path / "cache",
                         samples=[sample])
    (body,) = [s for s in dyn.inspect(bundle)["segments"] if s.get("variants")]
    assert body["engine"] == "ort" and body["choice"]["fallback_from"] == "tvm"
    assert [v["shapes"]["x_in"] for v in body["variants"]] == [[1, n] for n in (2, 3, 4)]
    assert {v["engine"] for v in body["variants"]} == {"tvm"}
    reference = ort.InferenceSession(str(path))
    with dyn.load(bundle) as runtime:
        ran = {name: 0 for name in runtime._sessions}  # counts the variants' calls
        for name, session in runtime._sessions.items():
            _count_runs(session, name, ran)
        np.testing.assert_allclose(runtime.run(sample)[0], reference.run(None, sample)[0], rtol=1e-6)
        variants = [f"{body['id']}.v{i}" for i in range(3)]
        assert [ran[name] for name in variants] == [1, 1, 1]
        # lengths 5 and 6 were never built: the general (ORT) segment runs them, not a variant
        other = {"x": np.array([[1.0, 2.0, 3.0, 4.0, 5.0]], np.float32), "steps": np.array(2, np.int64)}
        np.testing.assert_allclose(runtime.run(other)[0], reference.run(None, other)[0], rtol=1e-6)
        assert [ran[name] for name in variants] == [1, 1, 1]
