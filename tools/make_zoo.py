"""Build the static model zoo (edgert/zoo/*.onnx and their .tflite conversions) without torch.

The weights come from fixed seeds, so re-running this script reproduces the committed
files byte for byte (with the same numpy, onnx and flatbuffers versions); the zoo test
regenerates into a temporary directory and compares. That holds on any CPU: only
elementwise IEEE operations touch the weights (seeded draws times constants here,
BatchNorm folded in float64 by the converter), which round alike everywhere, and no
reduction or engine run, whose summation order a vector unit (AVX-512 or not) changes.

    python tools/make_zoo.py [--out edgert/zoo]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from edgert.compilers.tflite import convert  # noqa: E402

OPSET = 17
IR_VERSION = 8  # the oldest IR that carries opset 17, so older runtimes on boards load it
INPUT_SHAPE = (1, 3, 160, 160)
NUM_CLASSES = 10


class _Graph:
    """Accumulates nodes and seeded He-initialised weights for one model."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}

    def name(self, kind: str) -> str:
        n = self._count.get(kind, 0)
        self._count[kind] = n + 1
        return f"{kind}_{n}"

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        name = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1) -> str:
        """Bias-free conv (the BatchNormalization after it carries the shift)."""
        fan_in = cin // group * k * k
        w = self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)
        name = self.name("conv")
        weight = self.const(f"{name}.weight", w.astype(np.float32))
        pad = k // 2
        self.nodes.append(helper.make_node(
            "Conv", [x, weight], [name], name=name, kernel_shape=[k, k],
            strides=[stride, stride], pads=[pad, pad, pad, pad], group=group))
        return name

    def bn(self, x: str, channels: int) -> str:
        """BatchNormalization with varied scales (pruning ranks channels by |gamma|)."""
        name = self.name("bn")
        params = {
            "weight": self.rng.uniform(0.2, 1.2, channels),
            "bias": self.rng.normal(0.0, 0.1, channels),
            "running_mean": self.rng.normal(0.0, 0.1, channels),
            "running_var": self.rng.uniform(0.5, 1.5, channels),
        }
        inputs = [x] + [self.const(f"{name}.{k}", v.astype(np.float32)) for k, v in params.items()]
        self.nodes.append(helper.make_node(
            "BatchNormalization", inputs, [name], name=name, epsilon=1e-5))
        return name

    def relu6(self, x: str) -> str:
        lo = self.const(self.name("clip_min"), np.array(0.0, np.float32))
        hi = self.const(self.name("clip_max"), np.array(6.0, np.float32))
        return self.node("Clip", [x, lo, hi])

    def head(self, x: str, channels: int) -> None:
        """GlobalAveragePool, Flatten and a Gemm classifier writing ``logits``."""
        x = self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)
        w = self.rng.standard_normal((NUM_CLASSES, channels)) * np.sqrt(1.0 / channels)
        weight = self.const("fc.weight", w.astype(np.float32))
        bias = self.const("fc.bias", np.zeros(NUM_CLASSES, np.float32))
        self.nodes.append(helper.make_node(
            "Gemm", [x, weight, bias], ["logits"], name="fc", transB=1))

    def model(self, graph_name: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, graph_name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(INPUT_SHAPE))],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, NUM_CLASSES])],
            initializer=self.inits)
        model = helper.make_model(
            graph, producer_name="edgert.make_zoo", producer_version="1",
            opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


def mobilenet_v2(seed: int = 0) -> onnx.ModelProto:
    """Stem, thirteen inverted-residual blocks (1x1 expand unless t=1, 3x3 depthwise, 1x1 linear
    project; residual Add when the shape allows), 1x1 head conv to 512 channels."""
    g = _Graph(seed)
    x = g.relu6(g.bn(g.conv("input", 3, 32, 3, stride=2), 32))  # 80x80
    cin = 32
    # MobileNetV2's block table (t, c, n, s) up to the 96-channel stage
    for expand, cout, stride in [(1, 16, 1), (6, 24, 2), (6, 24, 1),
                                 (6, 32, 2), (6, 32, 1), (6, 32, 1),
                                 (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
                                 (6, 96, 1), (6, 96, 1), (6, 96, 1)]:
        hidden = cin * expand
        y = g.relu6(g.bn(g.conv(x, cin, hidden, 1), hidden)) if expand != 1 else x
        y = g.relu6(g.bn(g.conv(y, hidden, hidden, 3, stride=stride, group=hidden), hidden))
        y = g.bn(g.conv(y, hidden, cout, 1), cout)  # linear bottleneck: no activation
        x = g.node("Add", [x, y]) if stride == 1 and cin == cout else y
        cin = cout
    x = g.relu6(g.bn(g.conv(x, cin, 512, 1), 512))
    g.head(x, 512)
    return g.model("mobilenet_v2")


def resnet(seed: int = 1) -> onnx.ModelProto:
    """Stem with MaxPool, then basic blocks; the downsampling ones use a 1x1 projection."""
    g = _Graph(seed)
    x = g.node("Relu", [g.bn(g.conv("input", 3, 32, 3, stride=2), 32)])  # 80x80
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 40x40
    cin = 32
    for cout, stride in [(32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]:
        y = g.node("Relu", [g.bn(g.conv(x, cin, cout, 3, stride=stride), cout)])
        y = g.bn(g.conv(y, cout, cout, 3), cout)
        shortcut = x if stride == 1 and cin == cout else g.bn(g.conv(x, cin, cout, 1, stride), cout)
        x = g.node("Relu", [g.node("Add", [shortcut, y])])
        cin = cout
    g.head(x, cin)
    return g.model("resnet")


BUILDERS = {"mobilenet_v2": mobilenet_v2, "resnet": resnet}


def write_zoo(out_dir: Path) -> list[Path]:
    """Write every zoo model as .onnx and its .tflite conversion; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in BUILDERS.items():
        onnx_path = out_dir / f"{name}.onnx"
        onnx_path.write_bytes(build().SerializeToString())
        tflite_path = out_dir / f"{name}.tflite"
        convert(onnx_path, tflite_path)
        written += [onnx_path, tflite_path]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "edgert" / "zoo")
    args = parser.parse_args(argv)
    for path in write_zoo(args.out):
        print(f"{path}  {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
