"""PyTorch eager versions of the dynamic zoo (edgert/zoo/dynamic), with the ONNX models' weights.

Each module mirrors tools/make_dynamic_zoo.py with Python control flow (what a PyTorch
user would write) and reads every weight and threshold from the ONNX file's
initializers, so the benchmark compares the same network. ``check`` runs the zoo's
path-covering cases through PyTorch and ONNX Runtime and raises if they differ.

    python tools/dynamic_torch.py        # checks every zoo model against ONNX Runtime
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "edgert" / "zoo" / "dynamic"
EOS = 1  # tools/make_dynamic_zoo.py


def weights(onnx_path: Path) -> dict[str, torch.Tensor]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}


class _Zoo(torch.nn.Module):
    def __init__(self, w: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.w = w

    def conv(self, x: torch.Tensor, name: str, stride: int = 1) -> torch.Tensor:
        return F.conv2d(x, self.w[name + ".w"], self.w[name + ".b"], stride=stride, padding=1)

    def dense(self, x: torch.Tensor, name: str) -> torch.Tensor:  # ONNX Gemm with W as (in, out)
        return torch.addmm(self.w[name + ".b"], x, self.w[name + ".w"])

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def block(self, h: torch.Tensor, i: int) -> torch.Tensor:
        y = self.conv(F.relu(self.conv(h, f"block{i}_conv1")), f"block{i}_conv2")
        return F.relu(h + y)


class EarlyExitCNN(_Zoo):
    def head(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(self.dense(self.pool(x), name + "_fc"), dim=1)
        return probs, probs.max()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c1 = F.relu(self.conv(x, "conv1"))
        p1, conf1 = self.head(c1, "exit1")
        if conf1 > self.w["t1"]:
            return p1, torch.tensor([0])
        c2 = F.relu(self.conv(c1, "conv2", stride=2))
        p2, conf2 = self.head(c2, "exit2")
        if conf2 > self.w["t2"]:
            return p2, torch.tensor([1])
        p3, _ = self.head(F.relu(self.conv(c2, "conv3")), "exit3")
        return p3, torch.tensor([2])


class SkipNet(_Zoo):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.conv(x, "stem"))
        gates = []
        for i in range(3):
            gate = torch.sigmoid(self.dense(self.pool(h), f"gate{i}_fc"))
            gates.append(gate)
            if gate.squeeze() > self.w[f"half{i}"]:
                h = self.block(h, i)
        return self.dense(self.pool(h), "logits"), torch.cat(gates, dim=1)


class BlockDrop(_Zoo):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.conv(x, "stem"))
        policy = torch.sigmoid(self.dense(self.pool(F.relu(self.conv(x, "policy_conv"))), "policy_fc"))
        for i in range(policy.shape[1]):
            if policy[0, i] > self.w[f"half{i}"]:
                h = self.block(h, i)
        return self.dense(self.pool(h), "logits"), policy


class MoETop1(_Zoo):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.dense(x, "router")
        k = int(logits.argmax(dim=1))
        hidden = F.relu(self.dense(x, f"expert{k}_fc1"))
        return x + self.dense(hidden, f"expert{k}_fc2"), logits


class GreedyDecoder(_Zoo):
    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.w
        tok = w["bos"]
        tokens = []
        for _ in range(int(w["max_steps"])):
            h = torch.tanh(h @ w["w_h"] + w["embed"][tok])
            tok = (h @ w["w_out"] + w["b_out"]).argmax(dim=1)
            tokens.append(tok)
            if int(tok) == EOS:
                break
        return torch.stack(tokens), h


class SymbolicBatch(_Zoo):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.dense(x, "fc1"))
        score = h.mean()
        if score > self.w["t"]:
            return self.dense(F.relu(self.dense(h, "fc_deep")), "head_deep"), score
        return self.dense(h, "head_shallow"), score


MODULES: dict[str, Callable[[dict[str, torch.Tensor]], _Zoo]] = {
    "early_exit_cnn": EarlyExitCNN, "skipnet": SkipNet, "blockdrop": BlockDrop,
    "moe_top1": MoETop1, "greedy_decoder": GreedyDecoder, "symbolic_batch": SymbolicBatch,
}


def load(name: str, zoo: Path = ZOO) -> _Zoo:
    return MODULES[name](weights(zoo / f"{name}.onnx")).eval()


def cases(name: str, zoo: Path = ZOO) -> list[dict[str, np.ndarray]]:
    with np.load(zoo / f"{name}.npz") as arrays:
        grouped: dict[str, dict[str, np.ndarray]] = {}
        for key in arrays.files:
            case, _, value = key.partition("/")
            grouped.setdefault(case, {})[value] = arrays[key]
    return [grouped[c] for c in sorted(grouped)]


def run(module: _Zoo, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.inference_mode():
        outs = module(*(torch.from_numpy(v) for v in feeds.values()))
    return [o.numpy() for o in outs]


def check(name: str, zoo: Path = ZOO, rtol: float = 1e-3, atol: float = 1e-4) -> int:
    """Compare PyTorch with ONNX Runtime on every case; returns the number of cases checked."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(zoo / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    module = load(name, zoo)
    found = cases(name, zoo)
    for index, feeds in enumerate(found):
        want = session.run(None, feeds)
        got = run(module, feeds)
        for g, w in zip(got, want):
            if g.shape != w.shape or not np.allclose(g, w, rtol=rtol, atol=atol):
                raise AssertionError(f"{name} case{index}: PyTorch and ONNX Runtime differ "
                                     f"(shapes {g.shape} vs {w.shape})")
    return len(found)


if __name__ == "__main__":
    for model in MODULES:
        print(f"{model}: {check(model)} cases match ONNX Runtime")
