"""Partitioning and the host program, on small hand-built graphs checked against ONNX Runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgert import backends
import edgert.dynamic as dyn
from edgert.dynamic.normalize import normalize
from edgert.dynamic.partition import partition
from edgert.errors import InputError, ModelError

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def save(tmp_path: Path, nodes, inputs, outputs, inits=(), opset=17) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def reference(path: Path, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def run_both(path: Path, feeds, tmp_path: Path):
    runtime = dyn.load(dyn.compile(path, backend="ort", out=tmp_path / "b.edgert"))
    got = runtime.run(feeds)
    for g, w in zip(got, reference(path, feeds)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    return runtime


def branch(name, nodes, outputs):
    return helper.make_graph(nodes, name, [], outputs)


def if_model(tmp_path: Path) -> Path:
    """a = Relu(x); if sum(a) > 0: y = a * 2 else y = a; b = Neg(x) (independent); out = y + b."""
    then = branch("then", [helper.make_node("Mul", ["a", "two"], ["y_t"], name="double")],
                  [vi("y_t", F, [2])])
    other = branch("else", [helper.make_node("Identity", ["a"], ["y_e"], name="keep")],
                   [vi("y_e", F, [2])])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("ReduceSum", ["a"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="positive"),
        helper.make_node("If", ["c"], ["y"], name="gate", then_branch=then, else_branch=other),
        helper.make_node("Neg", ["x"], ["b"], name="neg"),
        helper.make_node("Add", ["y", "b"], ["out"], name="add"),
    ]
    inits = [numpy_helper.from_array(np.float32(2.0), "two"),
             numpy_helper.from_array(np.float32(0.0), "zero")]
    return save(tmp_path, nodes, [vi("x", F, [2])], [vi("out", F, [2])], inits)


def test_static_nodes_are_hoisted_above_control_flow(tmp_path):
    part = partition(normalize(if_model(tmp_path)))
    steps = part.program["body"]["steps"]
    # the const is the threshold "zero", read by the host to report the decision's margin
    assert [s["op"] for s in steps] == ["const", "call", "if", "call"]
    assert steps[2]["probe"] == ["s", "zero"]
    first, last = part.segments[0], part.segments[-1]
    assert "neg" in first.nodes  # does not depend on the If, so it runs before it
    assert last.nodes == ["add"]
    assert set(first.outputs) == {"a", "c", "b", "s"}
    # the else branch is a pure alias: no engine call
    assert steps[2]["else"]["steps"] == [{"op": "alias", "src": "a", "dst": "y_e"}]
    # the then branch captures "a" from outside and copies the initializer "two" in
    then_seg = next(s for s in part.segments if s.nodes == ["double"])
    assert then_seg.inputs == ["a"]
    assert onnx.load_from_string(then_seg.model_bytes).graph.initializer[0].name == "two"


def test_captures_are_recorded(tmp_path):
    norm = normalize(if_model(tmp_path))
    assert norm.captures == {"gate/then_branch": ["a", "two"], "gate/else_branch": ["a"]}


@pytest.mark.parametrize("x, branch_taken", [([1.0, 2.0], "then"), ([-1.0, -2.0], "else")])
def test_if_matches_onnxruntime_and_records_branch(tmp_path, x, branch_taken):
    runtime = run_both(if_model(tmp_path), {"x": np.array(x, np.float32)}, tmp_path)
    assert runtime.last_path.branches == {"gate": [branch_taken]}
    calls = runtime.last_path.segments
    assert len(calls) == (3 if branch_taken == "then" else 2)
    assert runtime.segment_calls[calls[0]] == 1


def test_segment_hook_and_counters(tmp_path):
    runtime = dyn.load(dyn.compile(if_model(tmp_path), backend="ort", out=tmp_path / "b.edgert"))
    seen = []
    runtime.on_segment = lambda seg, ns: seen.append((seg, ns))
    runtime.run({"x": np.ones(2, np.float32)})
    runtime.run({"x": np.ones(2, np.float32)})
    assert [s for s, _ in seen] == runtime.last_path.segments * 2
    assert all(ns > 0 for _, ns in seen)
    assert sum(runtime.segment_ns.values()) == sum(ns for _, ns in seen)
    trace = runtime.last_path.to_dict()
    assert trace["host_overhead_ns"] == trace["total_ns"] - trace["segment_ns"] >= 0
    stats = {s["segment"]: s for s in runtime.segment_stats()}
    assert all(stats[seg]["calls"] == 2 and stats[seg]["engine"] == "ort"
               for seg in runtime.last_path.segments)
    runtime.reset_counters()
    assert set(runtime.segment_calls.values()) == {0}
    assert isinstance(runtime, backends.Session)


def nested_model(tmp_path: Path) -> Path:
    """Loop (M times) whose body holds an If whose then-branch holds a Scan (cumulative sum)."""
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "v"], ["acc_out"], name="acc"),
         helper.make_node("Identity", ["acc_out"], ["step_out"], name="emit")],
        "scan_body", [vi("acc_in", F, [2]), vi("v", F, [2])],
        [vi("acc_out", F, [2]), vi("step_out", F, [2])])
    then = branch("then", [
        helper.make_node("Scan", ["h_in", "rows"], ["h_scan", "steps"], name="cumsum",
                         num_scan_inputs=1, body=scan_body),
        helper.make_node("Mul", ["h_scan", "half"], ["h_t"], name="halve")], [vi("h_t", F, [2])])
    other = branch("else", [helper.make_node("Sub", ["h_in", "rows_mean"], ["h_e"], name="shift")],
                   [vi("h_e", F, [2])])
    body = helper.make_graph([
        helper.make_node("Cast", ["i"], ["i_f"], name="cast", to=F),
        helper.make_node("Mod", ["i", "two_i"], ["parity"], name="mod"),
        helper.make_node("Equal", ["parity", "zero_i"], ["even"], name="is_even"),
        helper.make_node("If", ["even"], ["h_branch"], name="even_if", then_branch=then,
                         else_branch=other),
        helper.make_node("Add", ["h_branch", "i_f"], ["h_out"], name="add_i"),
        helper.make_node("Less", ["i", "limit"], ["go"], name="keep_going"),
    ], "body", [vi("i", I64, []), vi("c", B, []), vi("h_in", F, [2])],
        [vi("go", B, []), vi("h_out", F, [2]), vi("h_out", F, [2])])
    nodes = [
        helper.make_node("ReduceMean", ["rows"], ["rows_mean"], name="mean", axes=[0], keepdims=0),
        helper.make_node("Loop", ["M", "", "h0"], ["h_final", "history"], name="outer", body=body),
    ]
    inits = [numpy_helper.from_array(np.float32(0.5), "half"),
             numpy_helper.from_array(np.int64(2), "two_i"),
             numpy_helper.from_array(np.int64(0), "zero_i"),
             numpy_helper.from_array(np.int64(3), "limit")]
    return save(tmp_path, nodes, [vi("M", I64, []), vi("h0", F, [2]), vi("rows", F, [3, 2])],
                [vi("h_final", F, [2]), vi("history", F, [None, 2])], inits, opset=13)


@pytest.mark.parametrize("trips", [0, 1, 3, 6])
def test_nested_loop_if_scan(tmp_path, trips):
    rng = np.random.default_rng(trips)
    feeds = {"M": np.array(trips, np.int64), "h0": rng.standard_normal(2).astype(np.float32),
             "rows": rng.standard_normal((3, 2)).astype(np.float32)}
    runtime = run_both(nested_model(tmp_path), feeds, tmp_path)
    ran = min(trips, 4)  # the body's condition (i < 3) turns false in the 4th trip
    assert runtime.last_path.trip_counts["outer"] == [ran]
    assert runtime.last_path.branches.get("even_if", []) == ["then" if i % 2 == 0 else "else"
                                                             for i in range(ran)]
    assert runtime.last_path.trip_counts.get("cumsum", []) == [3] * ((ran + 1) // 2)


def test_sequence_values_are_rejected_plainly(tmp_path):
    nodes = [helper.make_node("SequenceConstruct", ["x", "x"], ["seq"], name="pack"),
             helper.make_node("ConcatFromSequence", ["seq"], ["y"], name="unpack", axis=0)]
    path = save(tmp_path, nodes, [vi("x", F, [2])], [vi("y", F, [4])])
    with pytest.raises(ModelError, match="not supported yet") as err:
        dyn.compile(path, backend="ort", out=tmp_path / "b.edgert")
    assert err.value.fields.get("op") == "SequenceConstruct" or err.value.fields.get("kind") == "sequence"


def test_unknown_operator_names_op_node_and_segment(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("FancyNorm", ["a"], ["y"], name="my_norm")]
    path = save(tmp_path, nodes, [vi("x", F, [2])], [vi("y", F, [2])])
    with pytest.raises(ModelError) as err:
        dyn.compile(path, backend="ort", out=tmp_path / "b.edgert")
    assert err.value.fields == {"op": "FancyNorm", "node": "my_norm", "segment": "seg_000"}
    assert "FancyNorm" in err.value.message and "my_norm" in err.value.message


def test_custom_domain_op_engine_rejection_names_segment(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Frob", ["a"], ["y"], name="frob", domain="com.example")]
    graph = helper.make_graph(nodes, "g", [vi("x", F, [2])], [vi("y", F, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError) as err:
        dyn.compile(path, backend="ort", out=tmp_path / "b.edgert")
    assert err.value.fields["segment"] == "seg_000"
    assert "frob" in err.value.fields["nodes"] and "Frob" in err.value.fields["ops"]
    assert "Frob" in err.value.message


def test_a_program_of_one_call_runs_it_directly_with_the_same_trace_and_checks(tmp_path):
    """A static model is one segment called with every input for every output: the interpreter
    skips its environment then, and nothing else may change."""
    path = save(tmp_path, [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                           helper.make_node("Neg", ["r"], ["y"], name="neg")],
                [vi("x", F, ["n", 2])], [vi("y", F, ["n", 2])])
    runtime = dyn.load(dyn.compile(path, backend="ort", out=tmp_path / "b.edgert"))
    (step,) = runtime.manifest["program"]["body"]["steps"]
    assert step["op"] == "call" and runtime._interp._only_call is step
    got = runtime.run({"x": np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)})
    assert isinstance(got[0], np.ndarray) and got[0].dtype == np.float32
    np.testing.assert_array_equal(got[0], [[0, -2], [-3, 0]])
    trace = runtime.last_path.to_dict()
    assert runtime.last_path.segments == [step["segment"]]
    assert trace["host_overhead_ns"] == trace["total_ns"] - trace["segment_ns"] >= 0
    assert runtime.segment_calls[step["segment"]] == 1
    with pytest.raises(InputError, match="must be float32"):
        runtime.run({"x": np.ones((1, 2), np.float64)})
    with pytest.raises(InputError, match="no input 'z'"):
        runtime.run({"x": np.ones((1, 2), np.float32), "z": np.ones(1)})
    with pytest.raises(InputError, match="'x' must have shape"):
        runtime.run({"x": np.ones((1, 3), np.float32)})


def test_wrong_input_shape_is_an_input_error(tmp_path):
    runtime = dyn.load(dyn.compile(if_model(tmp_path), backend="ort", out=tmp_path / "b.edgert"))
    with pytest.raises(InputError, match="'x' must have shape"):
        runtime.run({"x": np.ones(3, np.float32)})
    with pytest.raises(InputError, match="missing input"):
        runtime.run({})


def test_inputs_with_initializer_defaults_are_weights(tmp_path):
    """Old exporters list weights as graph inputs too; they are not asked for at run time."""
    nodes = [helper.make_node("Mul", ["x", "w"], ["y"], name="scale")]
    path = save(tmp_path, nodes, [vi("x", F, [2]), vi("w", F, [2])], [vi("y", F, [2])],
                [numpy_helper.from_array(np.array([2.0, 3.0], np.float32), "w")])
    runtime = dyn.load(dyn.compile(path, backend="ort", out=tmp_path / "b.edgert"))
    assert [s.name for s in runtime.inputs] == ["x"]
    np.testing.assert_allclose(runtime.run({"x": np.ones(2, np.float32)})[0], [2.0, 3.0])


def test_value_outside_a_segments_compiled_shape_is_an_input_error(tmp_path):
    """A loop-carried value declared [1] that grows each trip: the body segment was built
    for [1], so the second trip is refused with the segment and value named."""
    body = helper.make_graph(
        [helper.make_node("Concat", ["v_in", "one"], ["v_out"], name="grow", axis=0),
         helper.make_node("Identity", ["c"], ["c_out"], name="keep")],
        "body", [vi("i", I64, []), vi("c", B, []), vi("v_in", F, [1])],
        [vi("c_out", B, []), vi("v_out", F, [None])])
    nodes = [helper.make_node("Loop", ["M", "", "v0"], ["v"], name="grow_loop", body=body)]
    path = save(tmp_path, nodes, [vi("M", I64, []), vi("v0", F, [1])], [vi("v", F, [None])],
                [numpy_helper.from_array(np.array([1.0], np.float32), "one")])
    runtime = dyn.load(dyn.compile(path, backend="ort", out=tmp_path / "b.edgert"))
    assert runtime.run({"M": np.array(1, np.int64), "v0": np.zeros(1, np.float32)})[0].shape == (2,)
    with pytest.raises(InputError) as err:
        runtime.run({"M": np.array(2, np.int64), "v0": np.zeros(1, np.float32)})
    assert err.value.fields["segment"] == "seg_000" and err.value.fields["value"] == "v_in"
    assert err.value.fields["got"] == [2]
