"""The bundled model zoo: valid ONNX, runs in ONNX Runtime, reproducible from its script."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgert.backends.ort import OrtBackend
from edgert.backends.base import TensorSpec
from edgert.errors import ModelError, UsageError
from edgert.zoo import ZOO_DIR, resolve, zoo_models

REPO = Path(__file__).resolve().parents[1]
NAMES = ["mobilenet_v2", "resnet"]


def _ops(name: str) -> list[onnx.NodeProto]:
    return list(onnx.load(str(ZOO_DIR / f"{name}.onnx")).graph.node)


def test_zoo_lists_the_models() -> None:
    assert sorted(zoo_models()) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_checker_passes_with_opset_17(name: str) -> None:
    model = onnx.load(str(ZOO_DIR / f"{name}.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]


@pytest.mark.parametrize("name", NAMES)
def test_runs_in_onnxruntime(name: str) -> None:
    with OrtBackend().load(ZOO_DIR / f"{name}.onnx") as session:
        assert session.inputs == [TensorSpec("input", (1, 3, 160, 160), "float32")]
        assert session.outputs == [TensorSpec("logits", (1, 10), "float32")]
        x = np.random.default_rng(0).standard_normal((1, 3, 160, 160)).astype(np.float32)
        (logits,) = session.run({"input": x})
    assert logits.shape == (1, 10)
    # He init plus sane BN statistics: logits neither vanish nor explode
    assert np.all(np.isfinite(logits)) and 0.05 < np.abs(logits).max() < 100
    assert np.ptp(logits) > 0.05  # the classifier actually discriminates between inputs


@pytest.mark.parametrize("name", NAMES)
def test_batchnorm_kept_with_positive_variance_and_varied_scales(name: str) -> None:
    model = onnx.load(str(ZOO_DIR / f"{name}.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) >= 10
    for bn in bns:
        gamma, var = inits[bn.input[1]], inits[bn.input[4]]
        assert np.all(var > 0)
        assert gamma.std() > 0.1  # pruning ranks channels by |gamma|; equal scales would tie


def test_mobilenet_has_inverted_residual_structure() -> None:
    nodes = _ops("mobilenet_v2")
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1)
              for n in nodes if n.op_type == "Conv"]
    assert sum(g > 1 for g in groups) >= 6  # depthwise convs
    clips = [n for n in nodes if n.op_type == "Clip"]
    assert len(clips) >= 10
    assert sum(n.op_type == "Add" for n in nodes) >= 3
    assert [n.op_type for n in nodes[-3:]] == ["GlobalAveragePool", "Flatten", "Gemm"]


def test_resnet_has_projection_shortcut_and_maxpool() -> None:
    model = onnx.load(str(ZOO_DIR / "resnet.onnx"))
    nodes = list(model.graph.node)
    inits = {t.name: t.dims for t in model.graph.initializer}
    projections = [n for n in nodes if n.op_type == "Conv" and list(inits[n.input[1]][2:]) == [1, 1]
                   and any(a.name == "strides" and list(a.ints) == [2, 2] for a in n.attribute)]
    assert len(projections) >= 1
    assert sum(n.op_type == "MaxPool" for n in nodes) == 1
    assert sum(n.op_type == "Add" for n in nodes) >= 4


def test_make_zoo_reproduces_committed_files_byte_for_byte(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "make_zoo.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in ZOO_DIR.iterdir() if p.suffix in (".onnx", ".tflite"))
    for name in made:
        assert (tmp_path / name).read_bytes() == (ZOO_DIR / name).read_bytes(), name


def test_resolve_zoo_names_and_paths(tmp_path: Path) -> None:
    assert resolve("zoo:resnet") == ZOO_DIR / "resnet.onnx"
    assert resolve("mobilenet_v2") == ZOO_DIR / "mobilenet_v2.onnx"
    assert resolve("zoo:resnet.tflite") == ZOO_DIR / "resnet.tflite"
    own = tmp_path / "resnet.onnx"
    own.write_bytes(b"x")
    assert resolve(own) == own  # an existing file wins over the zoo name


@pytest.mark.parametrize("spec", ["zoo:vgg", "vgg"])
def test_unknown_zoo_name_lists_the_zoo(spec: str) -> None:
    with pytest.raises(UsageError) as info:
        resolve(spec)
    assert "mobilenet_v2" in info.value.message and "resnet" in info.value.message
    assert info.value.fields["model"] == "vgg"


def test_missing_path_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        resolve(tmp_path / "absent.onnx")


def test_a_directory_is_not_called_an_unknown_zoo_model(tmp_path, monkeypatch) -> None:
    from edgert.errors import ModelError
    from edgert.zoo import resolve

    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="adir is a directory"):
        resolve("adir")


def test_a_fifo_as_model_or_input_is_refused_without_blocking(tmp_path) -> None:
    """`run --input x=FIFO` hung for ever; `push FIFO` said 'no such model file'."""
    import os

    from conftest import run_cli

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    model = run_cli("bench", str(fifo), timeout=60)
    assert model.returncode != 0 and "is not a regular file" in model.stderr
    given = run_cli("run", "zoo:resnet", "--input", f"input={fifo}", "-o", str(tmp_path / "o.npz"), timeout=60)
    assert given.returncode != 0 and "not a regular file" in given.stderr and "Traceback" not in given.stderr
