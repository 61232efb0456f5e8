"""Export real architectures to ONNX with seeded random weights: the real-model zoo.

Model code comes from torchvision and transformers (built from a config, so no weights are
ever downloaded); every model gets seeded random weights and opset 17. Control-flow
models wrap real model code in ``torch.cond`` (ONNX ``If``), ``while_loop`` (``Loop``)
or a scripted Python loop (``Loop`` with a growing sequence). Inputs are small so that
CI compiles stay quick. Beside each ``<name>.onnx`` is ``<name>.npz``, the seeded
inputs every engine is fed.

The files are large (ResNet-50 alone is ~100 MB) and are not committed: they go to a
cache directory keyed by the torch/torchvision/transformers versions and this file's
``ZOO_VERSION`` (``default_dir()``), and are exported again only when missing.

    python tools/make_real_zoo.py [--out DIR] [NAME ...]   # prints one path per model
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np

ZOO_VERSION = "2"  # bump when a model or its inputs change (2: ViT head no longer zero)
OPSET = 17
IMAGE = 64  # CNN input height/width: small for CI, large enough to keep every stride valid
SEQ = 16  # token count of the transformer inputs
VOCAB = 1000
SEED = 0


def import_torchvision() -> Any:
    """torchvision's model code without its compiled ops.

    The PyPI wheel that matches the CPU torch is a CUDA build whose ``_C`` fails to load,
    and its fake-op registrations then raise at import. The classification models never
    call those ops, so the two registration modules are replaced by empty ones.
    """
    if "torchvision" not in sys.modules:
        for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
            sys.modules.setdefault(name, types.ModuleType(name))
    import torchvision

    return torchvision


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "torchvision": import_torchvision().__version__,
            "transformers": transformers.__version__, "zoo": ZOO_VERSION}


def default_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = "-".join(f"{k}{v}" for k, v in versions().items()).replace("+", "_")
    return base / "edgert" / "real-zoo" / key


# ------------------------------------------------------------------ the models

@dataclasses.dataclass(frozen=True)
class Spec:
    """How to build one model: ``make()`` returns (module, example inputs, input names)."""

    make: Callable[[], tuple[Any, tuple[Any, ...], list[str]]]
    control_flow: str = ""  # "If" / "Loop" when the graph has one
    dynamic: dict[str, dict[int, str]] = dataclasses.field(default_factory=dict)
    legacy: bool = False  # TorchScript exporter (a scripted Python loop)


def _image(batch: int = 1) -> Any:
    import torch

    return torch.from_numpy(np.random.default_rng(SEED).standard_normal(
        (batch, 3, IMAGE, IMAGE)).astype(np.float32))


def _tokens() -> Any:
    import torch

    return torch.from_numpy(np.random.default_rng(SEED).integers(0, VOCAB, (1, SEQ)))


def _vision(name: str, **kwargs: Any) -> Callable[[], tuple[Any, tuple[Any, ...], list[str]]]:
    def make() -> tuple[Any, tuple[Any, ...], list[str]]:
        model = getattr(import_torchvision().models, name)(weights=None, **kwargs)
        return model, (_image(),), ["image"]
    return make


def _vit() -> tuple[Any, tuple[Any, ...], list[str]]:
    from torchvision.models.vision_transformer import VisionTransformer

    import_torchvision()  # ViT-Ti widths (192 wide, 3 heads, MLP 768), 4 layers, 8x8 patches
    model = VisionTransformer(image_size=IMAGE, patch_size=8, num_layers=4, num_heads=3,
                              hidden_dim=192, mlp_dim=768, num_classes=1000)
    return model, (_image(),), ["image"]


def _bert() -> tuple[Any, tuple[Any, ...], list[str]]:
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512, max_position_embeddings=64)

    class Bert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=False)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = _tokens()
    return Bert(), (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"]


def _gpt2_config(attention: str = "sdpa") -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=128, n_layer=2, n_head=2,
                      attn_implementation=attention)


def _gpt2() -> tuple[Any, tuple[Any, ...], list[str]]:
    import torch
    from transformers import GPT2LMHeadModel

    class Gpt2(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gpt = GPT2LMHeadModel(_gpt2_config())

        def forward(self, input_ids: Any) -> Any:
            return self.gpt(input_ids=input_ids, use_cache=False).logits

    return Gpt2(), (_tokens(),), ["input_ids"]


def _branchy_resnet() -> tuple[Any, tuple[Any, ...], list[str]]:
    """BranchyNet on torchvision's ResNet-18: an exit head after layer2, taken when confident."""
    import torch

    tv = import_torchvision()

    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tv.models.resnet18(weights=None)
            self.exit = torch.nn.Linear(128, 1000)
            self.threshold = 0.002  # softmax max over 1000 classes: ~1e-3 is chance

        def forward(self, x: Any) -> Any:
            n = self.net
            h = n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x))))))
            early = torch.softmax(self.exit(h.mean(dim=(2, 3))), dim=1)

            def leave(h: Any, early: Any) -> Any:
                return early.clone()

            def go_on(h: Any, early: Any) -> Any:
                z = n.avgpool(n.layer4(n.layer3(h))).flatten(1)
                return torch.softmax(n.fc(z), dim=1)

            return torch.cond(early.max() > self.threshold, leave, go_on, (h, early))

    return Branchy(), (_image(),), ["image"]


def _cond_mobilenet() -> tuple[Any, tuple[Any, ...], list[str]]:
    """MobileNetV3-Small whose last feature blocks run only on bright-enough images."""
    import torch

    tv = import_torchvision()

    class CondMobileNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tv.models.mobilenet_v3_small(weights=None)
            self.skip = torch.nn.Conv2d(48, 96, 1, stride=2)

        def forward(self, x: Any) -> Any:
            f = self.net.features
            h = f[:9](x)  # up to 48 channels at 1/16 resolution

            def deep(h: Any) -> Any:
                return f[9:12](h)

            def shallow(h: Any) -> Any:
                return self.skip(h)

            h = torch.cond(x.mean() > 0.0, deep, shallow, (h,))
            return self.net.classifier(self.net.avgpool(f[12](h)).flatten(1))

    return CondMobileNet(), (_image(),), ["image"]


def _loop_resnet() -> tuple[Any, tuple[Any, ...], list[str]]:
    """A ResNet whose layer3 block repeats (``while_loop``) until its output settles, at most 4x."""
    import torch
    from torch._higher_order_ops.while_loop import while_loop

    tv = import_torchvision()

    class LoopResNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tv.models.resnet18(weights=None)
            self.repeat = tv.models.resnet.BasicBlock(256, 256)

        def forward(self, x: Any) -> Any:
            n = self.net
            h = n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x)))))))

            def again(i: Any, h: Any, change: Any) -> Any:
                return (i < 4) & (change > 0.05)

            def step(i: Any, h: Any, change: Any) -> Any:
                out = self.repeat(h)
                return i + 1, out, (out - h).abs().mean() / (h.abs().mean() + 1e-6)

            _, h, _ = while_loop(again, step, (torch.zeros((), dtype=torch.int64), h,
                                               torch.ones(())))
            return n.fc(n.avgpool(n.layer4(h)).flatten(1))

    return LoopResNet(), (_image(),), ["image"]


def _greedy_gpt2() -> tuple[Any, tuple[Any, ...], list[str]]:
    """Greedy decoding around GPT-2: a scripted loop over a traced decoder, the sequence grows."""
    import torch
    from transformers import GPT2LMHeadModel

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gpt = GPT2LMHeadModel(_gpt2_config("eager"))

        def forward(self, ids: Any) -> Any:
            # An explicit mask keeps transformers' packed-sequence detection (aten::diff,
            # which ONNX lacks) out of the trace.
            mask = torch.ones_like(ids)
            return self.gpt(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -1, :]

    prompt = _tokens()[:, :4]
    with _quiet():
        step = torch.jit.trace(Step().eval(), (prompt,), check_trace=False, strict=False)

    class Greedy(torch.nn.Module):
        def __init__(self, step: Any) -> None:
            super().__init__()
            self.step = step

        def forward(self, ids: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
            for _ in range(int(steps)):
                token = torch.argmax(self.step(ids), dim=-1, keepdim=True)
                ids = torch.cat([ids, token], dim=1)
            return ids

    return torch.jit.script(Greedy(step)), (prompt, torch.tensor(6)), ["input_ids", "steps"]


MODELS: dict[str, Spec] = {
    "resnet50": Spec(_vision("resnet50")),
    "mobilenet_v3_small": Spec(_vision("mobilenet_v3_small")),
    "efficientnet_b0": Spec(_vision("efficientnet_b0")),
    "shufflenet_v2": Spec(_vision("shufflenet_v2_x0_5")),
    "squeezenet1_1": Spec(_vision("squeezenet1_1")),
    "regnet_y_400mf": Spec(_vision("regnet_y_400mf")),
    "convnext_tiny": Spec(_vision("convnext_tiny")),
    "vit_tiny": Spec(_vit),
    "bert_2l": Spec(_bert, dynamic={"input_ids": {0: "batch", 1: "seq"},
                                    "attention_mask": {0: "batch", 1: "seq"}}),
    "gpt2_2l": Spec(_gpt2, dynamic={"input_ids": {0: "batch", 1: "seq"}}),
    "branchy_resnet18": Spec(_branchy_resnet, control_flow="If"),
    "cond_mobilenet_v3": Spec(_cond_mobilenet, control_flow="If"),
    "loop_resnet18": Spec(_loop_resnet, control_flow="Loop"),
    "greedy_gpt2": Spec(_greedy_gpt2, control_flow="Loop", legacy=True,
                        dynamic={"input_ids": {1: "prompt"}}),
}
# A quick cross-section for CI: a plain CNN, a transformer with shape arithmetic, an If.
QUICK = ("squeezenet1_1", "shufflenet_v2", "bert_2l", "branchy_resnet18")


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters print progress and warnings on stdout/stderr: keep the tool's output paths only."""
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export(name: str, out: Path) -> Path:
    """Export ``name`` to ``out/<name>.onnx`` (+ ``.npz`` inputs); reuse files already there."""
    import onnx
    import torch

    path = out / f"{name}.onnx"
    if path.is_file() and path.with_suffix(".npz").is_file():
        return path
    spec = MODELS[name]
    import_torchvision()  # before transformers, which imports torchvision when it is installed
    torch.manual_seed(SEED)
    with _quiet():
        module, args, names = spec.make()
        _no_zero_weights(module)
        module.eval()
        tmp = path.with_name(f".{name}.{os.getpid()}.onnx")
        with torch.no_grad():
            if spec.legacy:
                torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=OPSET,
                                  input_names=names, dynamic_axes=spec.dynamic or None)
            else:
                dims = {k: {axis: torch.export.Dim.AUTO for axis in axes} for k, axes in spec.dynamic.items()}
                program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET,
                                            input_names=names, dynamic_shapes=dims or None,
                                            optimize=True, verify=False)
                program.save(str(tmp))
    model = onnx.load(str(tmp))  # one file: the exporter may have split weights out
    _name_dims(model, spec.dynamic)
    _split_sizes(model)
    onnx.save(model, str(path.with_suffix(".tmp")))
    for leftover in out.glob(f".{name}.{os.getpid()}.onnx*"):
        leftover.unlink()
    np.savez(path.with_name(f".{name}.npz"),
             **{n: np.asarray(a.numpy() if hasattr(a, "numpy") else a) for n, a in zip(names, args)})
    os.replace(path.with_name(f".{name}.npz"), path.with_suffix(".npz"))
    os.replace(path.with_suffix(".tmp"), path)
    return path


def _no_zero_weights(module: Any) -> None:
    """Seeded random values for weights a model initialises to zero (ViT's head and class
    token): with them every output is 0 and an engine that computes garbage still matches."""
    import torch

    with torch.no_grad():
        for param in module.parameters():
            if param.ndim >= 2 and not param.any():
                torch.nn.init.normal_(param, std=0.02)


def _name_dims(model: Any, dynamic: dict[str, dict[int, str]]) -> None:
    """Give the dynamic input dims the names users pass to ``--shape`` (dynamo numbers them s0, s1)."""
    renames: dict[str, str] = {}
    for info in model.graph.input:
        for axis, name in dynamic.get(info.name, {}).items():
            dim = info.type.tensor_type.shape.dim[axis]
            if dim.dim_param:
                renames[dim.dim_param] = name
    for info in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]


def _split_sizes(model: Any) -> None:
    """Opset-17 ``Split`` takes sizes as an input: the exporter writes opset 18's ``num_outputs``."""
    import onnx
    from onnx import numpy_helper

    typed = onnx.shape_inference.infer_shapes(model)
    ranks = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
             for v in list(typed.graph.value_info) + list(typed.graph.input)}
    for node in model.graph.node:
        count = [a for a in node.attribute if a.name == "num_outputs"]
        if node.op_type != "Split" or not count:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        size = ranks[node.input[0]][axis]
        parts = count[0].i
        sizes = [-(-size // parts)] * (parts - 1)
        sizes.append(size - sum(sizes))
        name = f"{node.name}_sizes"
        model.graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), name))
        node.input.append(name)
        node.attribute.remove(count[0])


def build(names: list[str] | None = None, out: Path | None = None) -> dict[str, Path]:
    """Export ``names`` (all by default) into ``out`` (``default_dir()``); name -> .onnx path."""
    out = Path(out or default_dir())
    out.mkdir(parents=True, exist_ok=True)
    return {name: export(name, out) for name in names or MODELS}


def inputs(path: Path) -> dict[str, np.ndarray]:
    with np.load(Path(path).with_suffix(".npz")) as data:
        return {k: data[k] for k in data.files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"models to export (default: all): {', '.join(MODELS)}")
    parser.add_argument("--out", type=Path, default=None, help="directory (default: the versioned cache)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    for name, path in build(args.names or None, args.out).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
