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
