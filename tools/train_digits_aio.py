"""Accuracy of All-in-One levels, for real: a small residual CNN on scikit-learn's digits.

1. Train the CNN (PyTorch), export it to ONNX with BatchNormalization kept.
2. ``edgert.variants.prune`` it to ratios 0, 0.25, 0.5, 0.75 and measure every level's
   test accuracy with the edgert runtime (ONNX Runtime): *pruned only*.
3. Same weights, with each level's BatchNorm statistics re-estimated on training data
   (stored in the file as per-level auxiliary tensors): *+ BN recalibration*.
4. All-in-One fine-tuning: one shared weight set trained over every level at once (the
   sandwich rule with in-place distillation: the full level learns from the labels, the
   others, and ``--random-configs`` random per-layer width configurations per batch as
   Once-for-All samples them, from the full level's soft outputs), then per-level BN
   recalibration: *fine-tuned (shared)*.

Accuracies always come from running the written .aio file through ``edgert.variants``; the
fine-tuned file stores its levels' accuracy in its metadata (``accuracy``, docs/aio-format.md).

    pip install torch==2.13.0 scikit-learn
    python tools/train_digits_aio.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from edgert.variants import aiofile, open as open_variants  # noqa: E402
from edgert.variants import config as C  # noqa: E402
from edgert.variants.accuracy import store_accuracy  # noqa: E402
from edgert.variants.prune import prune, replace_weights  # noqa: E402

RATIOS = [0.0, 0.25, 0.5, 0.75]
WIDTHS = (32, 64)
BN_NAMES = ("running_mean", "running_var")


class DigitsNet(nn.Module):
    """Stem, a residual block, a strided conv, a residual block, GAP, linear head."""

    def __init__(self) -> None:
        super().__init__()
        c1, c2 = WIDTHS
        self.stem, self.stem_bn = nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1)
        self.b1a, self.b1a_bn = nn.Conv2d(c1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1)
        self.b1b, self.b1b_bn = nn.Conv2d(c1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1)
        self.down, self.down_bn = nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c2)
        self.b2a, self.b2a_bn = nn.Conv2d(c2, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2)
        self.b2b, self.b2b_bn = nn.Conv2d(c2, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2)
        self.fc = nn.Linear(c2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = F.relu(x + self.b1b_bn(self.b1b(F.relu(self.b1a_bn(self.b1a(x))))))
        x = F.relu(self.down_bn(self.down(x)))
        x = F.relu(x + self.b2b_bn(self.b2b(F.relu(self.b2a_bn(self.b2a(x))))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def sliced_forward(x: torch.Tensor, p: Callable[[str], torch.Tensor], bn: Callable[..., torch.Tensor]
                   ) -> torch.Tensor:
    """``DigitsNet.forward`` with every tensor taken through ``p`` (the level's slice)."""
    def conv(x: torch.Tensor, name: str, stride: int = 1) -> torch.Tensor:
        return bn(F.conv2d(x, p(f"{name}.weight"), stride=stride, padding=1), f"{name}_bn")

    x = F.relu(conv(x, "stem"))
    x = F.relu(x + conv(F.relu(conv(x, "b1a")), "b1b"))
    x = F.relu(conv(x, "down", 2))
    x = F.relu(x + conv(F.relu(conv(x, "b2a")), "b2b"))
    return F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), p("fc.weight"), p("fc.bias"))


def data(seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    return tuple(train_test_split(x, digits.target.astype(np.int64), test_size=0.25,
                                  random_state=seed, stratify=digits.target))


def train(model: DigitsNet, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    model.eval()


def export(model: DigitsNet, path: Path) -> None:
    """Legacy exporter in eval mode without constant folding, so BatchNormalization survives.

    torch 2.13's legacy exporter then leaves the BN running statistics out of the
    initializers and adds dangling Identity nodes; both are repaired here from the state dict.
    """
    import onnx
    from onnx import numpy_helper

    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"], do_constant_folding=False,
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})
    m = onnx.load(str(path))
    state = model.state_dict()
    have = {t.name for t in m.graph.initializer}
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    for node in [n for n in m.graph.node if n.op_type == "Identity" and not set(n.output) & used]:
        m.graph.node.remove(node)
    for node in m.graph.node:
        for name in node.input:
            if name not in have and name in state:
                m.graph.initializer.append(numpy_helper.from_array(state[name].numpy(), name))
                have.add(name)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def accuracy(aio: Path, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Test accuracy of every level, run by edgert's runtime from the file."""
    out = []
    with open_variants(aio, threads=1) as vm:
        for lv in vm.levels:
            vm.select_index(lv.index)
            logits = vm.run({"x": x})[0]
            out.append(float((logits.argmax(1) == y).mean()))
    return out


class Slimmable:
    """The file's shared (permuted) weights as torch parameters, sliced per level or per
    per-layer width configuration (``edgert.variants.config``)."""

    def __init__(self, aio: Path) -> None:
        f = aiofile.read(aio)
        self.meta = f.meta
        self.levels = f.meta["levels"]
        self.params = {k: nn.Parameter(torch.tensor(np.array(v))) for k, v in f.tensors.items()
                       if not k.startswith(("graph/", "level")) and not k.endswith(BN_NAMES)}
        self.stats = [{k: torch.tensor(np.array(v)) for k, v in f.tensors.items() if k.endswith(BN_NAMES)}
                      for _ in self.levels]
        f.close()

    @staticmethod
    def _slice(ranges: list[list[list[int]]], value: torch.Tensor) -> torch.Tensor:
        for axis, spans in enumerate(ranges):
            idx = torch.cat([torch.arange(a, b) for a, b in spans])
            if len(idx) != value.shape[axis]:
                value = value.index_select(axis, idx)
        return value

    def forward(self, x: torch.Tensor, level: int, train_bn: bool, momentum: float | None = 0.1
                ) -> torch.Tensor:
        ranges = {k: v["ranges"] for k, v in self.levels[level]["params"].items()}
        return self.forward_ranges(x, ranges, self.stats[level], train_bn, momentum)

    def forward_ranges(self, x: torch.Tensor, ranges: dict[str, Any], stats: dict[str, torch.Tensor],
                       train_bn: bool, momentum: float | None = 0.1) -> torch.Tensor:
        def p(name: str) -> torch.Tensor:
            return self._slice(ranges[name], self.params[name])

        def bn(h: torch.Tensor, name: str) -> torch.Tensor:
            c = h.shape[1]
            mean, var = stats[f"{name}.running_mean"], stats[f"{name}.running_var"]
            rm, rv = mean[:c].clone(), var[:c].clone()
            out = F.batch_norm(h, rm, rv, p(f"{name}.weight"), p(f"{name}.bias"), training=train_bn,
                               momentum=momentum if momentum is not None else 0.0, eps=1e-5)
            if train_bn:
                mean[:c], var[:c] = rm, rv
            return out

        return sliced_forward(x, p, bn)

    def random_ranges(self, rng: np.random.Generator) -> dict[str, Any]:
        """The slices of a random per-layer configuration (each group at one of its level widths)."""
        widths = C.candidate_widths(self.meta)
        config = C.make(self.meta, {g: int(rng.choice(ws)) for g, ws in widths.items()})
        return C.param_ranges(self.meta, config)

    def recalibrate(self, x: np.ndarray) -> None:
        """Per-level BN statistics as the exact mean/variance over the training set."""
        xt = torch.from_numpy(x)
        with torch.no_grad():
            for level in range(len(self.levels)):
                for k in self.stats[level]:
                    self.stats[level][k].fill_(0.0 if k.endswith("mean") else 1.0)
                self.forward(xt, level, train_bn=True, momentum=1.0)  # one batch: the whole set

    def write(self, src: Path, dst: Path, note: str) -> None:
        shared = {k: v.detach().numpy() for k, v in self.params.items()}
        per_level = {}
        for level, stats in enumerate(self.stats):
            per_level[level] = {k: self._slice(self.levels[level]["params"][k]["ranges"], v).numpy()
                                for k, v in stats.items()}
        replace_weights(src, dst, shared, per_level, note=note)

    def finetune(self, x: np.ndarray, y: np.ndarray, epochs: int, seed: int, random_configs: int = 0) -> None:
        """Sandwich rule over all levels with in-place distillation from the full level; with
        ``random_configs``, that many random per-layer configurations per batch learn from the
        full level too (Once-for-All's sampled sub-networks: the per-layer configurations a
        search picks were trained, not only the uniform levels). Their batch statistics go to a
        scratch copy: the levels' BN statistics are recalibrated afterwards anyway."""
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        scratch = {k: v.clone() for k, v in self.stats[0].items()}
        opt = torch.optim.Adam(self.params.values(), lr=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(epochs):
            for idx in torch.randperm(len(xt)).split(64):
                opt.zero_grad()
                full = self.forward(xt[idx], 0, train_bn=True)
                F.cross_entropy(full, yt[idx]).backward()
                soft = F.softmax(full.detach(), 1)
                for level in range(1, len(self.levels)):
                    logits = self.forward(xt[idx], level, train_bn=True)
                    F.kl_div(F.log_softmax(logits, 1), soft, reduction="batchmean").backward()
                for _ in range(random_configs):
                    logits = self.forward_ranges(xt[idx], self.random_ranges(rng), scratch, train_bn=True)
                    F.kl_div(F.log_softmax(logits, 1), soft, reduction="batchmean").backward()
                opt.step()
            sched.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgert-digits"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--base-onnx", type=Path, default=None,
                        help="start from this trained export (an earlier run's digits.onnx, same --seed)")
    parser.add_argument("--random-configs", type=int, default=2,
                        help="random per-layer configurations trained per batch besides the levels (OFA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-limit", type=int, default=None, help="use only this many training images")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    x_train, x_test, y_train, y_test = data(args.seed)
    x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    t0 = time.time()
    onnx_path = args.work / "digits.onnx"
    torch_acc = None
    if args.base_onnx is None:
        torch.manual_seed(args.seed)
        net = DigitsNet()
        train(net, x_train, y_train, args.epochs, args.seed)
        export(net, onnx_path)
        with torch.no_grad():
            torch_acc = float((net(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    else:  # the trained export of an earlier run with the same seed (its split): fine-tune only
        onnx_path = args.base_onnx

    pruned = args.work / "digits.aio"
    report = prune(onnx_path, RATIOS, pruned)
    rows: dict[str, list[float]] = {"pruned only": accuracy(pruned, x_test, y_test)}

    recal = Slimmable(pruned)
    recal.recalibrate(x_train)
    recal.write(pruned, args.work / "digits-recal.aio", "per-level BN recalibration, no training")
    rows["+ BN recalibration"] = accuracy(args.work / "digits-recal.aio", x_test, y_test)

    tuned = Slimmable(pruned)
    tuned.finetune(x_train, y_train, args.finetune_epochs, args.seed, args.random_configs)
    tuned.recalibrate(x_train)
    final = args.work / "digits-aio.aio"
    tuned.write(pruned, final, "All-in-One fine-tuned (sandwich rule, in-place distillation)")
    rows["All-in-One fine-tuned (shared weights)"] = accuracy(final, x_test, y_test)
    # The file carries its levels' test accuracy: the report's Pareto fronts read it.
    store_accuracy(final, dict(zip(RATIOS, rows["All-in-One fine-tuned (shared weights)"])))

    result: dict[str, Any] = {
        "schema": "edgert.variants.accuracy/1",
        "command": " ".join(["python tools/train_digits_aio.py", *(argv if argv is not None else sys.argv[1:])]),
        "dataset": {"name": "sklearn.datasets.load_digits", "train": len(y_train), "test": len(y_test)},
        "model": {"widths": list(WIDTHS), "torch_test_accuracy": torch_acc,
                  "onnx_weight_bytes": report.model_bytes, "aio_file_bytes": final.stat().st_size},
        "epochs": args.epochs, "finetune_epochs": args.finetune_epochs, "random_configs": args.random_configs,
        "seed": args.seed,
        "ratios": RATIOS,
        "level_weight_bytes": [lv["weight_bytes"] for lv in report.levels],
        "accuracy": rows,
        "measured": True,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "seconds": round(time.time() - t0, 1),
    }
    (args.out / "variants_accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# All-in-One accuracy: residual CNN on scikit-learn digits", "",
             f"Command: `{result['command']}` (test set: {len(y_test)} images"
             + ("" if torch_acc is None else f"; the trained torch model scores {torch_acc:.4f}")
             + "). Every number is measured by running the .aio file through `edgert.variants` (ONNX Runtime).", "",
             "| ratio removed | weight bytes | " + " | ".join(rows) + " |",
             "|---|---|" + "---|" * len(rows)]
    for i, ratio in enumerate(RATIOS):
        cells = " | ".join(f"{rows[k][i]:.4f}" for k in rows)
        lines.append(f"| {ratio:g} | {report.levels[i]['weight_bytes']} | {cells} |")
    (args.out / "variants_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
