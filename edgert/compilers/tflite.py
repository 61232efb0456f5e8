"""Convert small float32 ONNX CNNs to .tflite without TensorFlow: LiteRT's host step.

Why: boards that only have LiteRT should run the same models as ONNX Runtime, and
TensorFlow is far too heavy a dependency for that. The converter writes the flatbuffer
with LiteRT's own generated bindings and covers the op set of the edgert zoo:

    Conv (group 1 -> CONV_2D, group C -> DEPTHWISE_CONV_2D), BatchNormalization (folded
    into the Conv before it), Relu, Clip(0, 6) -> RELU6 (both fused into the op before
    them when possible), Add, MaxPool, GlobalAveragePool -> MEAN, Flatten, Reshape,
    Gemm -> FULLY_CONNECTED, Constant.

Layout: 4-D activations are NHWC inside the .tflite file, but its inputs and outputs keep
the ONNX names, shapes and NCHW layout (a TRANSPOSE follows each 4-D input), so the
same feeds run on both engines. ONNX pads become SAME when they match TensorFlow's rule,
otherwise an explicit PAD (for MaxPool: PADV2 with -inf unless a ReLU
makes zeros equivalent). Shapes must be static.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from edgert.errors import ModelError
from edgert.onnx_file import load_model

CONVERTER_VERSION = "1"  # part of the cache key: bump when the output for a model changes

_TO_NHWC = (0, 2, 3, 1)
_TO_NCHW = (0, 3, 1, 2)
_ACTIVATIONS = {"Relu": tfl.ActivationFunctionType.RELU, "Relu6": tfl.ActivationFunctionType.RELU6}
_TENSOR_TYPES = {np.dtype(np.float32): tfl.TensorType.FLOAT32,
                 np.dtype(np.int32): tfl.TensorType.INT32}


class _AlignedBuilder(flatbuffers.Builder):
    """Aligns constant buffers to 16 bytes, as TensorFlow's converter does, for SIMD kernels."""

    def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 (flatbuffers' name)
        payload = np.ascontiguousarray(x).tobytes()
        self.StartVector(1, len(payload), 16)
        self.head -= len(payload)
        self.Bytes[self.head:self.head + len(payload)] = payload
        return self.EndVector()


def convert(onnx_path: Path, out_path: Path) -> Path:
    """Convert ``onnx_path`` and write ``out_path`` atomically; returns ``out_path``."""
    write_atomic(out_path, convert_model(load_model(onnx_path)))
    return out_path


def write_atomic(out_path: Path, data: bytes) -> None:
    """Write ``out_path`` through a temporary file, so a cache never holds half a model."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out_path)


def convert_model(model: Any) -> bytes:
    """The .tflite flatbuffer for an in-memory ``onnx.ModelProto``."""
    import onnx

    for node in model.graph.node:  # before shape inference, which fails on unknown ops
        if node.op_type not in _Converter.HANDLERS or node.domain not in ("", "ai.onnx"):
            raise ModelError(
                f"the tflite converter does not support operator {node.op_type} "
                f"(node {node.name!r}); supported: {', '.join(supported_ops())}",
                op=node.op_type, node=node.name)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        raise ModelError(f"ONNX shape inference failed: {exc}") from exc
    return _Converter(model.graph, onnx.numpy_helper.to_array).run()


def supported_ops() -> list[str]:
    return sorted(_Converter.HANDLERS)


class _Converter:
    """One pass over a topologically sorted ONNX graph, emitting TFLite tensors and ops."""

    HANDLERS: dict[str, Callable[["_Converter", Any], None]] = {}

    def __init__(self, graph: Any, to_array: Callable[[Any], np.ndarray]) -> None:
        self.graph = graph
        self.consts = {t.name: to_array(t) for t in graph.initializer}
        self.shapes = {}
        for info in [*graph.input, *graph.value_info, *graph.output]:
            dims = info.type.tensor_type.shape.dim
            self.shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else -1
                                           for d in dims)
        self.nodes = list(graph.node)  # held, so id() of each node stays valid for ``skip``
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}
        self.skip: set[int] = set()  # ids of nodes already folded into an earlier op
        self.tensors: list[tfl.TensorT] = []
        self.buffers: list[tfl.BufferT] = [tfl.BufferT()]  # buffer 0: the empty sentinel
        self.opcodes: dict[int, int] = {}
        self.operators: list[tfl.OperatorT] = []
        self.values: dict[str, tuple[int, bool]] = {}  # ONNX name -> (tensor index, is NHWC)
        self.converted: dict[tuple[str, bool], int] = {}  # (name, want NHWC) -> transposed copy
        self.non_negative: set[int] = set()  # tensors after a ReLU: zero padding is -inf for MaxPool

    # -- driver -------------------------------------------------------------------------
    def run(self) -> bytes:
        inputs = []
        for info in self.graph.input:
            if info.name in self.consts:
                continue
            if info.type.tensor_type.elem_type != 1:  # TensorProto.FLOAT
                raise ModelError(f"input {info.name!r} is not float32; the tflite converter "
                                 "handles float32 models only", input=info.name)
            index = self._tensor(info.name, self._shape(info.name))
            inputs.append(index)
            self.values[info.name] = (index, False)
        for node in self.nodes:
            if id(node) not in self.skip:
                self.HANDLERS[node.op_type](self, node)
        outputs = []
        for info in self.graph.output:
            index = self._get(info.name, nhwc=True)
            if self.values[info.name][1] and len(self.tensors[index].shape) == 4:
                # hand back NCHW under the ONNX name; the NHWC tensor steps aside
                self.tensors[index].name = f"{info.name}/nhwc"
                index = self._emit_transpose(index, _TO_NCHW, info.name)
            outputs.append(index)
        return self._serialize(inputs, outputs)

    def _serialize(self, inputs: list[int], outputs: list[int]) -> bytes:
        subgraph = tfl.SubGraphT()
        subgraph.tensors, subgraph.operators = self.tensors, self.operators
        subgraph.inputs, subgraph.outputs = inputs, outputs
        subgraph.name = self.graph.name or "main"
        model = tfl.ModelT()
        model.version = 3
        model.description = f"edgert.tflite_convert {CONVERTER_VERSION}"
        model.subgraphs = [subgraph]
        model.buffers = self.buffers
        model.operatorCodes = []
        for code in self.opcodes:
            opcode = tfl.OperatorCodeT()
            opcode.builtinCode = code
            opcode.deprecatedBuiltinCode = min(code, tfl.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            model.operatorCodes.append(opcode)
        builder = _AlignedBuilder(1 << 20)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    # -- tensors ------------------------------------------------------------------------
    def _shape(self, name: str) -> tuple[int, ...]:
        shape = self.shapes.get(name)
        if shape is None or any(d < 0 for d in shape):
            raise ModelError(f"tensor {name!r} has no static shape; the tflite converter needs "
                             "fixed input shapes", tensor=name)
        return shape

    def _tensor(self, name: str, shape: tuple[int, ...], data: np.ndarray | None = None) -> int:
        """A new tensor: float32 activation, or a constant holding ``data``."""
        tensor = tfl.TensorT()
        tensor.name, tensor.shape = name, [int(d) for d in shape]
        dtype = np.dtype(np.float32)
        if data is not None:
            dtype = data.dtype
            buffer = tfl.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.buffers.append(buffer)
            tensor.buffer = len(self.buffers) - 1
        tensor.type = _TENSOR_TYPES[dtype]
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def _const(self, name: str, value: np.ndarray) -> int:
        return self._tensor(name, value.shape, data=value)

    def _get(self, name: str, nhwc: bool) -> int:
        """Tensor index of an ONNX value in the wanted layout (transposing once if needed)."""
        if name not in self.values:
            raise ModelError(f"tensor {name!r} is a constant where the tflite converter expects "
                             "an activation", tensor=name)
        index, is_nhwc = self.values[name]
        if is_nhwc == nhwc or len(self.tensors[index].shape) != 4:
            return index
        if (name, nhwc) not in self.converted:
            perm, suffix = (_TO_NHWC, "nhwc") if nhwc else (_TO_NCHW, "nchw")
            self.converted[(name, nhwc)] = self._emit_transpose(index, perm, f"{name}/{suffix}")
        return self.converted[(name, nhwc)]

    def _constant(self, node: Any, position: int) -> np.ndarray:
        name = node.input[position]
        if name not in self.consts:
            raise ModelError(f"input {position} of {node.op_type} node {node.name!r} must be a "
                             "constant for the tflite converter", op=node.op_type, node=node.name)
        return self.consts[name]

    # -- operators ----------------------------------------------------------------------
    def _emit(self, code: int, inputs: list[int], outputs: list[int],
              options_type: int = 0, options: Any = None) -> None:
        op = tfl.OperatorT()
        op.opcodeIndex = self.opcodes.setdefault(code, len(self.opcodes))
        op.inputs, op.outputs = inputs, outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        self.operators.append(op)
        act = getattr(options, "fusedActivationFunction", tfl.ActivationFunctionType.NONE)
        if code in (tfl.BuiltinOperator.RELU, tfl.BuiltinOperator.RELU6) or act in _ACTIVATIONS.values():
            self.non_negative.update(outputs)

    def _emit_transpose(self, index: int, perm: tuple[int, ...], name: str) -> int:
        shape = self.tensors[index].shape
        out = self._tensor(name, tuple(shape[p] for p in perm))
        perm_t = self._const(f"{name}/perm", np.array(perm, np.int32))
        self._emit(tfl.BuiltinOperator.TRANSPOSE, [index, perm_t], [out],
                   tfl.BuiltinOptions.TransposeOptions, tfl.TransposeOptionsT())
        return out

    def _output(self, name: str, nhwc: bool) -> int:
        shape = self._shape(name)
        index = self._tensor(name, tuple(shape[p] for p in _TO_NHWC) if nhwc else shape)
        self.values[name] = (index, nhwc)
        return index

    def _fuse_activation(self, name: str) -> tuple[str, int]:
        """Absorb a lone Relu / Clip(0,6) consumer of ``name``: (final ONNX name, act code)."""
        users = self.consumers.get(name, [])
        if name in self.graph_outputs or len(users) != 1:
            return name, tfl.ActivationFunctionType.NONE
        act = _activation_kind(users[0], self.consts)
        if act is None:
            return name, tfl.ActivationFunctionType.NONE
        self.skip.add(id(users[0]))
        return users[0].output[0], _ACTIVATIONS[act]

    def _spatial_padding(self, node: Any, in_hw: tuple[int, int], kernel: tuple[int, int],
                         strides: tuple[int, int], dilations: tuple[int, int],
                         x: int, pad_value: float) -> tuple[int, int]:
        """(input tensor, tfl Padding): SAME when ONNX pads match TF's split, else an explicit PAD."""
        pads = _pads(node, in_hw, kernel, strides, dilations)
        if not any(pads):
            return x, tfl.Padding.VALID
        same = []
        for size, k, s, d in zip(in_hw, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            same += [total // 2, total - total // 2]
        if [pads[0], pads[2], pads[1], pads[3]] == same:
            return x, tfl.Padding.SAME
        shape = self.tensors[x].shape
        padded_shape = (shape[0], shape[1] + pads[0] + pads[2], shape[2] + pads[1] + pads[3], shape[3])
        name = f"{_label(node)}/pad"
        out = self._tensor(name, padded_shape)
        paddings = self._const(f"{name}/paddings", np.array(
            [[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]], np.int32))
        if pad_value == 0.0:
            self._emit(tfl.BuiltinOperator.PAD, [x, paddings], [out],
                       tfl.BuiltinOptions.PadOptions, tfl.PadOptionsT())
        else:
            value = self._const(f"{name}/value", np.array(pad_value, np.float32))
            self._emit(tfl.BuiltinOperator.PADV2, [x, paddings, value], [out],
                       tfl.BuiltinOptions.PadV2Options, tfl.PadV2OptionsT())
        return out, tfl.Padding.VALID

    def conv(self, node: Any) -> None:
        attrs = _attrs(node)
        weight = self._constant(node, 1).astype(np.float32)
        cout, cin_per_group, kh, kw = weight.shape
        bias = (self._constant(node, 2).astype(np.float32) if len(node.input) > 2 and node.input[2]
                else np.zeros(cout, np.float32))
        out_name = node.output[0]
        users = self.consumers.get(out_name, [])
        if out_name not in self.graph_outputs and len(users) == 1 and users[0].op_type == "BatchNormalization":
            weight, bias = _fold_bn(weight, bias, users[0], self.consts)
            self.skip.add(id(users[0]))
            out_name = users[0].output[0]
        out_name, act = self._fuse_activation(out_name)
        x = self._get(node.input[0], nhwc=True)
        _, h, w, cin = self.tensors[x].shape
        group = attrs.get("group", 1)
        strides = tuple(attrs.get("strides", [1, 1]))
        dilations = tuple(attrs.get("dilations", [1, 1]))
        if len(strides) != 2:
            raise ModelError(f"Conv node {node.name!r} is not 2-D; the tflite converter handles "
                             "2-D convolutions only", op="Conv", node=node.name)
        x, padding = self._spatial_padding(node, (h, w), (kh, kw), strides, dilations, x, 0.0)
        name = _label(node)
        bias_t = self._const(f"{name}/bias", bias)
        if group == 1:
            filt = self._const(f"{name}/filter", weight.transpose(0, 2, 3, 1))  # OHWI
            options = tfl.Conv2DOptionsT()
            code, options_type = tfl.BuiltinOperator.CONV_2D, tfl.BuiltinOptions.Conv2DOptions
        elif group == cin and cin_per_group == 1:
            filt = self._const(f"{name}/filter", weight.transpose(1, 2, 3, 0))  # 1HWO
            options = tfl.DepthwiseConv2DOptionsT()
            options.depthMultiplier = cout // cin
            code = tfl.BuiltinOperator.DEPTHWISE_CONV_2D
            options_type = tfl.BuiltinOptions.DepthwiseConv2DOptions
        else:
            raise ModelError(f"Conv node {node.name!r} has group={group}; the tflite converter "
                             "handles group 1 and depthwise (group = input channels) only",
                             op="Conv", node=node.name)
        options.padding, options.strideH, options.strideW = padding, *strides
        options.dilationHFactor, options.dilationWFactor = dilations
        options.fusedActivationFunction = act
        self._emit(code, [x, filt, bias_t], [self._output(out_name, nhwc=True)], options_type, options)

    def batch_norm(self, node: Any) -> None:
        raise ModelError(f"BatchNormalization node {node.name!r} does not follow a Conv whose only "
                         "consumer it is, so the tflite converter cannot fold it",
                         op=node.op_type, node=node.name)

    def activation(self, node: Any) -> None:
        act = _activation_kind(node, self.consts)
        if act is None:
            raise ModelError(f"Clip node {node.name!r} is not Clip(0, 6); the tflite converter maps "
                             "only that Clip to RELU6", op=node.op_type, node=node.name)
        code = {"Relu": tfl.BuiltinOperator.RELU, "Relu6": tfl.BuiltinOperator.RELU6}[act]
        nhwc = self.values.get(node.input[0], (0, False))[1]
        x = self._get(node.input[0], nhwc)
        self._emit(code, [x], [self._output(node.output[0], nhwc)])

    def add(self, node: Any) -> None:
        a_name, b_name = node.input
        nhwc = self.values.get(a_name, (0, False))[1] or self.values.get(b_name, (0, False))[1]
        a, b = self._get(a_name, nhwc), self._get(b_name, nhwc)
        out_name, act = self._fuse_activation(node.output[0])
        options = tfl.AddOptionsT()
        options.fusedActivationFunction = act
        self._emit(tfl.BuiltinOperator.ADD, [a, b], [self._output(out_name, nhwc)],
                   tfl.BuiltinOptions.AddOptions, options)

    def max_pool(self, node: Any) -> None:
        attrs = _attrs(node)
        kernel = tuple(attrs["kernel_shape"])
        strides = tuple(attrs.get("strides", [1, 1]))
        if len(kernel) != 2 or attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise ModelError(f"MaxPool node {node.name!r} is not a plain 2-D pool (ceil_mode and "
                             "dilations are unsupported)", op="MaxPool", node=node.name)
        x = self._get(node.input[0], nhwc=True)
        _, h, w, _ = self.tensors[x].shape
        # PAD (zeros) stays inside one XNNPACK partition; PADV2 (-inf) splits the graph
        pad_value = 0.0 if x in self.non_negative else -np.inf
        x, padding = self._spatial_padding(node, (h, w), kernel, strides, (1, 1), x, pad_value)
        options = tfl.Pool2DOptionsT()
        options.padding, options.strideH, options.strideW = padding, *strides
        options.filterHeight, options.filterWidth = kernel
        self._emit(tfl.BuiltinOperator.MAX_POOL_2D, [x], [self._output(node.output[0], nhwc=True)],
                   tfl.BuiltinOptions.Pool2DOptions, options)

    def global_average_pool(self, node: Any) -> None:
        x = self._get(node.input[0], nhwc=True)
        axes = self._const(f"{_label(node)}/axes", np.array([1, 2], np.int32))
        options = tfl.ReducerOptionsT()
        options.keepDims = True
        self._emit(tfl.BuiltinOperator.MEAN, [x, axes], [self._output(node.output[0], nhwc=True)],
                   tfl.BuiltinOptions.ReducerOptions, options)

    def reshape(self, node: Any) -> None:
        """Flatten and Reshape act on ONNX (NCHW) order; skip the transpose when H = W = 1."""
        index, nhwc = self.values[node.input[0]]
        shape = self.tensors[index].shape
        if not (nhwc and shape[1] == shape[2] == 1):
            index = self._get(node.input[0], nhwc=False)
        out_shape = self._shape(node.output[0])
        new_shape = self._const(f"{_label(node)}/shape", np.array(out_shape, np.int32))
        options = tfl.ReshapeOptionsT()
        options.newShape = list(out_shape)
        self._emit(tfl.BuiltinOperator.RESHAPE, [index, new_shape],
                   [self._output(node.output[0], nhwc=False)],
                   tfl.BuiltinOptions.ReshapeOptions, options)

    def gemm(self, node: Any) -> None:
        attrs = _attrs(node)
        if attrs.get("transA", 0) or len(self._shape(node.input[0])) != 2:
            raise ModelError(f"Gemm node {node.name!r} has a transposed or non-2-D A input",
                             op="Gemm", node=node.name)
        weight = self._constant(node, 1).astype(np.float32) * np.float32(attrs.get("alpha", 1.0))
        if not attrs.get("transB", 0):
            weight = weight.T
        bias = np.zeros(weight.shape[0], np.float32)
        if len(node.input) > 2 and node.input[2]:
            bias = bias + self._constant(node, 2).astype(np.float32).reshape(-1) * np.float32(
                attrs.get("beta", 1.0))
        out_name, act = self._fuse_activation(node.output[0])
        x = self._get(node.input[0], nhwc=False)
        w = self._const(f"{_label(node)}/weights", np.ascontiguousarray(weight))
        b = self._const(f"{_label(node)}/bias", bias)
        options = tfl.FullyConnectedOptionsT()
        options.fusedActivationFunction = act
        self._emit(tfl.BuiltinOperator.FULLY_CONNECTED, [x, w, b],
                   [self._output(out_name, nhwc=False)],
                   tfl.BuiltinOptions.FullyConnectedOptions, options)

    def constant(self, node: Any) -> None:
        import onnx

        self.consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)


_Converter.HANDLERS = {
    "Conv": _Converter.conv, "BatchNormalization": _Converter.batch_norm,
    "Relu": _Converter.activation, "Clip": _Converter.activation, "Add": _Converter.add,
    "MaxPool": _Converter.max_pool, "GlobalAveragePool": _Converter.global_average_pool,
    "Flatten": _Converter.reshape, "Reshape": _Converter.reshape, "Gemm": _Converter.gemm,
    "Constant": _Converter.constant,
}


def _label(node: Any) -> str:
    """A name for the tensors an ONNX node adds (nodes may be unnamed)."""
    return node.name or node.output[0]


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads(node: Any, in_hw: tuple[int, int], kernel: tuple[int, int],
          strides: tuple[int, int], dilations: tuple[int, int]) -> list[int]:
    """ONNX pads as [top, left, bottom, right], resolving auto_pad."""
    attrs = _attrs(node)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", "VALID"):
        return list(attrs.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else [0, 0, 0, 0]
    before, after = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        before.append(small if auto_pad == "SAME_UPPER" else big)
        after.append(big if auto_pad == "SAME_UPPER" else small)
    return before + after


def _activation_kind(node: Any, consts: dict[str, np.ndarray]) -> str | None:
    """"Relu", "Relu6" (Clip(0, 6)), or None for anything else."""
    if node.op_type == "Relu":
        return "Relu"
    if node.op_type != "Clip":
        return None
    attrs = _attrs(node)
    bounds = [attrs.get("min"), attrs.get("max")]  # opset < 11 keeps them as attributes
    for i, name in enumerate(node.input[1:3]):
        bounds[i] = float(consts[name]) if name in consts else (None if name else bounds[i])
    if bounds == [0.0, 6.0]:
        return "Relu6"
    return None


def _fold_bn(weight: np.ndarray, bias: np.ndarray, bn: Any,
             consts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights and bias with an inference-mode BatchNormalization folded in."""
    try:
        gamma, beta, mean, var = (consts[n].astype(np.float64) for n in bn.input[1:5])
    except KeyError:
        raise ModelError(f"BatchNormalization node {bn.name!r} has non-constant parameters",
                         op=bn.op_type, node=bn.name) from None
    scale = gamma / np.sqrt(var + _attrs(bn).get("epsilon", 1e-5))
    folded_w = weight.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
    folded_b = (bias.astype(np.float64) - mean) * scale + beta
    return folded_w.astype(np.float32), folded_b.astype(np.float32)
