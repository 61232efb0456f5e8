"""LiteRT backend and the ONNX -> .tflite converter, checked against real ONNX Runtime."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgert.backends.base import BackendOptions
from edgert.backends.ort import OrtBackend
from edgert.backends.tflite import TfliteBackend
from edgert.compilers import compile_for
from edgert.compilers.tflite import convert
from edgert.errors import ModelError
from edgert.zoo import ZOO_DIR

RTOL, ATOL = 1e-4, 1e-5


def _feeds(session, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in session.inputs}


def _compare(onnx_path: Path, tflite_path: Path) -> float:
    """Run both engines on the same NCHW feeds; returns the max abs difference."""
    with OrtBackend().load(onnx_path) as ort_s, TfliteBackend().load(tflite_path) as tfl_s:
        assert tfl_s.inputs == ort_s.inputs
        assert tfl_s.outputs == ort_s.outputs
        worst = 0.0
        for seed in range(3):
            feeds = _feeds(ort_s, seed)
            for want, got in zip(ort_s.run(feeds), tfl_s.run(feeds), strict=True):
                np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
                worst = max(worst, float(np.abs(got - want).max()))
    return worst


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet"])
def test_committed_tflite_agrees_with_onnxruntime(name: str) -> None:
    worst = _compare(ZOO_DIR / f"{name}.onnx", ZOO_DIR / f"{name}.tflite")
    print(f"{name}: max |tflite - ort| = {worst:.3g}")


def test_onnx_path_is_converted_once_into_the_cache(tmp_path: Path) -> None:
    backend = TfliteBackend()
    x = np.random.default_rng(1).standard_normal((1, 3, 160, 160)).astype(np.float32)
    options = BackendOptions(cache_dir=tmp_path)
    with backend.load(compile_for("tflite", ZOO_DIR / "resnet.onnx", options).path) as session:
        first = session.run({"input": x})[0]
    (cached,) = (tmp_path / "tflite").iterdir()
    assert cached.name.startswith("resnet-") and cached.suffix == ".tflite"
    assert cached.read_bytes() == (ZOO_DIR / "resnet.tflite").read_bytes()
    stamp = cached.stat().st_mtime_ns
    with backend.load(compile_for("tflite", ZOO_DIR / "resnet.onnx", options).path) as session:
        np.testing.assert_array_equal(session.run({"input": x})[0], first)
    assert cached.stat().st_mtime_ns == stamp  # a hit, not a rewrite


def test_threads_and_delegate_are_recorded() -> None:
    backend = TfliteBackend(BackendOptions(threads=2))
    described = backend.describe()
    assert described["options"]["num_threads"] == 2
    assert described["options"]["delegate"] == "xnnpack"
    assert described["version"].startswith("ai-edge-litert ")


@pytest.mark.parametrize("content", [b"not a model\n", ZOO_DIR.joinpath("resnet.onnx").read_bytes()])
def test_non_tflite_file_is_a_model_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="LiteRT cannot load"):
        TfliteBackend().load(path)


def test_runs_a_tflite_file_without_onnx_or_the_converter() -> None:
    """Device side: a board has LiteRT and numpy, not onnx."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('onnx', 'onnxruntime', 'flatbuffers') "
        "or name.startswith('edgert.compilers'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from edgert.backends.tflite import TfliteBackend\n"
        "s = TfliteBackend().load(Path(sys.argv[1]))\n"
        "print(s.run({'input': np.zeros((1, 3, 160, 160), np.float32)})[0].shape)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(ZOO_DIR / "mobilenet_v2.tflite")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(1, 10)"
    # an ONNX file is the host's to convert: say so instead of an ImportError traceback
    proc = subprocess.run([sys.executable, "-c", code, str(ZOO_DIR / "mobilenet_v2.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "edgert.errors.ModelError: LiteRT loads .tflite files, not mobilenet_v2.onnx; " \
           "convert it on the host first" in proc.stderr


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        TfliteBackend().load(tmp_path / "absent.tflite")


# -- converter paths the zoo does not take ------------------------------------------------

def _save(tmp_path: Path, nodes, inputs, outputs, inits=()) -> Path:
    graph = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def _value(name: str, shape: list[int]):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _const(name: str, value: np.ndarray):
    return numpy_helper.from_array(value.astype(np.float32), name)


def _convert_and_compare(tmp_path: Path, onnx_path: Path) -> None:
    tflite_path = convert(onnx_path, tmp_path / "m.tflite")
    _compare(onnx_path, tflite_path)


def test_maxpool_on_signed_input_pads_with_minus_infinity(tmp_path: Path) -> None:
    # no ReLU before the pool: zero padding would win over negative borders
    path = _save(tmp_path, [helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[3, 3],
                                             strides=[2, 2], pads=[1, 1, 1, 1])],
                 [_value("x", [1, 4, 10, 10])], [_value("y", [1, 4, 5, 5])])
    _convert_and_compare(tmp_path, path)


def test_conv_paddings_dilation_and_nchw_outputs_in_graph_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nodes = [
        # asymmetric explicit pads -> PAD + VALID, with a dilation
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv_pad", kernel_shape=[3, 3],
                         pads=[0, 2, 1, 0], dilations=[2, 1]),
        # SAME_UPPER with stride 2 -> tflite SAME
        helper.make_node("Conv", ["x", "w2"], ["b"], name="conv_same", kernel_shape=[3, 3],
                         strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["b"], ["c"], name="relu"),
    ]
    inits = [_const("w1", rng.standard_normal((5, 3, 3, 3))), _const("b1", rng.standard_normal(5)),
             _const("w2", rng.standard_normal((6, 3, 3, 3)))]
    path = _save(tmp_path, nodes, [_value("x", [1, 3, 9, 8])],
                 [_value("c", [1, 6, 5, 4]), _value("a", [1, 5, 6, 8])], inits)
    _convert_and_compare(tmp_path, path)


def test_flatten_of_spatial_map_and_gemm_with_alpha_beta(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", alpha=0.5, beta=2.0),
        helper.make_node("Clip", ["y", "lo", "hi"], ["z"], name="relu6"),
    ]
    inits = [_const("w", rng.standard_normal((2 * 3 * 3, 7))), _const("b", rng.standard_normal(7)),
             _const("lo", np.array(0.0)), _const("hi", np.array(6.0))]
    # the Conv puts x in NHWC inside tflite, so Flatten must restore ONNX element order
    conv = helper.make_node("Conv", ["img", "k"], ["x"], name="conv", kernel_shape=[1, 1])
    path = _save(tmp_path, [conv, *nodes], [_value("img", [1, 2, 3, 3])], [_value("z", [1, 7])],
                 [*inits, _const("k", rng.standard_normal((2, 2, 1, 1)))])
    _convert_and_compare(tmp_path, path)


def test_unsupported_op_names_op_and_node(tmp_path: Path) -> None:
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["r"], name="act"),
                            helper.make_node("Softmax", ["r"], ["y"], name="probs")],
                 [_value("x", [1, 10])], [_value("y", [1, 10])])
    with pytest.raises(ModelError) as info:
        convert(path, tmp_path / "m.tflite")
    assert "Softmax" in info.value.message and "'probs'" in info.value.message
    assert info.value.fields == {"op": "Softmax", "node": "probs"}
    assert not (tmp_path / "m.tflite").exists()


def test_clip_other_than_relu6_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip1")],
                 [_value("x", [1, 4])], [_value("y", [1, 4])],
                 [_const("lo", np.array(-1.0)), _const("hi", np.array(1.0))])
    with pytest.raises(ModelError, match="clip1") as info:
        convert(path, tmp_path / "m.tflite")
    assert info.value.fields["op"] == "Clip"


def test_unfoldable_batchnorm_is_refused(tmp_path: Path) -> None:
    ones = np.ones(2)
    path = _save(tmp_path, [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"],
                                             name="lonely_bn")],
                 [_value("x", [1, 2, 4, 4])], [_value("y", [1, 2, 4, 4])],
                 [_const("g", ones), _const("b", ones), _const("m", ones), _const("v", ones)])
    with pytest.raises(ModelError, match="lonely_bn"):
        convert(path, tmp_path / "m.tflite")


def test_custom_domain_op_is_named_before_shape_inference(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("FancyAct", ["x"], ["y"], name="fancy",
                                                domain="com.example")],
                              "t", [_value("x", [1, 4])], [_value("y", [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError) as info:
        convert(path, tmp_path / "m.tflite")
    assert info.value.fields == {"op": "FancyAct", "node": "fancy"}


def test_a_model_with_flex_ops_is_named_not_called_a_non_tflite_file(tmp_path: Path) -> None:
    """A .tflite converted with Select TensorFlow ops (what onnx2tf once wrote for ViT's Erf)
    loads nowhere without the Flex delegate: the error names the op, not the file type."""
    tf = pytest.importorskip("tensorflow", reason="writing a Flex model needs TensorFlow (edgert[convert])")

    @tf.function(input_signature=[tf.TensorSpec([4], tf.float32)])
    def erf(x):
        return tf.raw_ops.Erf(x=x)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([erf.get_concrete_function()], erf)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path = tmp_path / "flex.tflite"
    path.write_bytes(converter.convert())
    with pytest.raises(ModelError, match=r"TensorFlow \(Flex\) operator Flex\w+ \(node \d+\)") as info:
        TfliteBackend().load(path)
    assert "is it a .tflite file" not in info.value.message


def test_layout_sidecar_restores_onnx_order_and_dtype_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    """A bundle segment's .tflite carries <stem>.layout.json (compilers.litert.convert_segment)."""
    import json
    import shutil

    seg = tmp_path / "seg_000.tflite"
    shutil.copy(ZOO_DIR / "resnet.tflite", seg)
    x = np.random.default_rng(2).standard_normal((1, 3, 160, 160)).astype(np.float32)
    with TfliteBackend().load(seg) as plain:
        want = plain.run({"input": x})[0]
        name = plain.outputs[0].name
    sidecar = tmp_path / "seg_000.layout.json"
    layout = {"format": "edgert.tflite.layout/1",
              "outputs": [{"name": name, "perm": [0, 1], "shape": list(want.shape), "dtype": "float64"}]}
    sidecar.write_text(json.dumps(layout))
    with TfliteBackend().load(seg) as restored:
        (got,) = restored.run({"input": x})
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want.astype(np.float64))
    for bad in ({"perm": [0, 0]}, {"dtype": "float3"}, {"name": "nope"}, {"shape": ["n"]}):
        sidecar.write_text(json.dumps(dict(layout, outputs=[dict(layout["outputs"][0], **bad)])))
        with pytest.raises(ModelError, match="layout sidecar"):
            TfliteBackend().load(seg)


def test_output_layout_is_found_by_values_even_when_channels_equal_height_and_width() -> None:
    from edgert.compilers.litert import _matching_perm

    nchw = np.random.default_rng(3).standard_normal((1, 4, 4, 4)).astype(np.float32)
    nhwc = nchw.transpose(0, 2, 3, 1)
    assert _matching_perm(nhwc, nchw) == [0, 3, 1, 2]
    assert _matching_perm(nchw, nchw) == [0, 1, 2, 3]
    assert _matching_perm(nchw + 1.0, nchw) is None
    assert _matching_perm(np.float32(2.5).reshape(1), np.float32(2.5)) == [0]  # a scalar as [1]
