"""Real CNN architectures from torchvision's model code, seeded random weights, exported to
ONNX (opset 17, TorchScript exporter, eval mode: BatchNorm folded into the convs as users'
exports have it). Never downloads weights.

torchvision's wheel here is a CUDA build whose ``_C`` does not load; its model code is pure
Python, and only ``_meta_registrations`` (fake kernels for ``torchvision::nms``) needs ``_C``,
so that module is stubbed before import. Host-only: imports torch and torchvision.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

CNNS = ("resnet50", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0", "squeezenet1_1",
        "regnet_y_400mf", "convnext_tiny")


def torchvision_models():
    """``torchvision.models`` without its compiled ops (see the module docstring)."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision.models

    return torchvision.models


def export_cnn(name: str, path: Path, side: int = 64, seed: int = 0) -> Path:
    """``torchvision.models.<name>`` with seeded random weights, input ``x`` (1, 3, side, side)."""
    import torch

    torch.manual_seed(seed)
    model = getattr(torchvision_models(), name)(weights=None).eval()
    with torch.no_grad():  # random BN statistics, so folding BN is not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    torch.onnx.export(model, (torch.randn(1, 3, side, side),), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    return path


def export_vit(path: Path, seed: int = 0) -> Path:
    """torchvision's VisionTransformer in a tiny configuration: 32x32 input, 8x8 patches, two
    layers of two heads, width 64, MLP 128; input ``x`` (1, 3, 32, 32)."""
    import torch

    torch.manual_seed(seed)
    model = torchvision_models().VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                   hidden_dim=64, mlp_dim=128, num_classes=10).eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)  # zero-initialised: every output would be 0
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    return path


def export_bert(path: Path, seq: int = 16, seed: int = 0) -> Path:
    """A two-layer BERT from transformers' code (config only: four heads, width 64, MLP 128);
    inputs ``input_ids`` and ``attention_mask`` (1, seq) int64, output the last hidden state."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    model = BertModel(config).eval()
    ids = torch.randint(0, 100, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    torch.onnx.export(LastHidden().eval(), (ids, mask), str(path), opset_version=17, dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["y"])
    return path


def with_random_classifier(model: Path, out: Path, seed: int = 0, zero_bias: bool = False) -> Path:
    """A copy of ``model`` whose last Gemm/MatMul weight is seeded random: torchvision's ViT
    zero-initialises its classifier, and an all-zero output would hide a wrong pruned level.
    ``zero_bias`` zeroes the Gemm's bias too: randomly initialised ShuffleNetV2 x0.5 outputs
    its bias plus 1e-5, which would hide a wrong level as well."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(model)
    last = [n for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    bias = last.input[2] if zero_bias and len(last.input) > 2 else None
    for t in proto.graph.initializer:
        if t.name == last.input[1]:
            value = np.random.default_rng(seed).standard_normal(tuple(t.dims)).astype(np.float32) * 0.1
            t.CopyFrom(numpy_helper.from_array(value, t.name))
        elif t.name == bias:
            t.CopyFrom(numpy_helper.from_array(np.zeros(tuple(t.dims), np.float32), t.name))
    onnx.save(proto, out)
    return out
