"""Real architectures (tools/make_real_zoo.py) on ORT, TVM and LiteRT, compared with ORT.

CI runs a cross-section (a transformer whose shape arithmetic must be folded for TVM, a
decoding Loop run as a TVM bundle, a CNN through onnx2tf, a multi-engine bench with a
failing engine); ``pytest -m slow tests/test_real_models.py`` runs every model on every
engine (skipped unless ``-m`` names ``slow``: it takes tens of minutes on 2 cores). Outputs must be within
1e-3 of ORT relative to the largest ORT output (engines reorder float sums, so exact
bits are never compared).
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli

REL_BOUND = 1e-3


def _tool():
    """tools/make_real_zoo.py (imports only numpy at module level)."""
    spec = importlib.util.spec_from_file_location("make_real_zoo", REPO / "tools" / "make_real_zoo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _zoo():
    pytest.importorskip("torch", reason="the real-model zoo is exported with torch (edgert[torch])")
    pytest.importorskip("transformers", reason="BERT/GPT-2 come from transformers (edgert[torch])")
    return _tool()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Engine logs and caches under tmp_path, never the user's ~/.cache/edgert."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real_zoo")


def _model(zoo_dir: Path, name: str) -> tuple[Path, dict[str, np.ndarray]]:
    zoo = _zoo()
    path = zoo.build([name], zoo_dir)[name]
    return path, zoo.inputs(path)


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _assert_close(reference: list[np.ndarray], outputs: list[np.ndarray]) -> None:
    assert len(reference) == len(outputs)
    for ref, out in zip(reference, outputs):
        out = np.asarray(out).reshape(np.shape(ref)) if np.size(out) == np.size(ref) else out
        assert np.shape(out) == np.shape(ref)
        scale = max(float(np.abs(ref).max()), 1e-12)
        assert float(np.abs(np.asarray(out, np.float64) - ref).max()) / scale <= REL_BOUND


def _engine_outputs(engine: str, path: Path, feeds: dict[str, np.ndarray], cache: Path,
                    dims: dict[str, int]) -> list[np.ndarray]:
    from edgert.backends import BackendOptions
    from edgert.compilers import compile_for
    from edgert.runner import BUNDLE_SUFFIX, prepared_session
    from edgert.settings import BenchSettings

    options = BackendOptions(cache_dir=cache, dims=dims)
    # a control-flow model on TVM or LiteRT: a bundle, its sample run on these feeds
    artifact = compile_for(engine, path, options, samples=[feeds]).path
    name = "bundle" if artifact.suffix == BUNDLE_SUFFIX else engine
    run_dims = {} if artifact.suffix in (".so", ".tflite") else dims  # built for those sizes
    with prepared_session(artifact, name, BenchSettings(), options=options, dims=run_dims,
                          feeds=feeds) as (_, session, checked):
        return session.run(checked)


def _dims(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """The sizes of the model's symbolic input dims in ``feeds`` (what --shape would say)."""
    import onnx

    dims = {}
    for info in onnx.load(str(path), load_external_data=False).graph.input:
        for dim, size in zip(info.type.tensor_type.shape.dim, np.shape(feeds.get(info.name, ()))):
            if dim.dim_param:
                dims[dim.dim_param] = int(size)
    return dims


# ------------------------------------------------------------------ CI cross-section

def test_shape_arithmetic_is_folded_once_dims_are_known(zoo_dir):
    """BERT's Shape -> ConstantOfShape/Range/Expand chain (what TVM's importer cannot take)."""
    import onnx

    from edgert.compilers.shapes import fix_input_shapes

    path, _ = _model(zoo_dir, "bert_2l")
    model = onnx.load(str(path))
    shape_ops = {"Shape", "ConstantOfShape", "Range"}
    assert shape_ops & {n.op_type for n in model.graph.node}
    fixed = fix_input_shapes(model, {"batch": 1, "seq": 16})
    assert fixed.dims == {"batch": 1, "seq": 16} and fixed.open_dims == []
    assert not shape_ops & {n.op_type for n in fixed.model.graph.node}
    partial = fix_input_shapes(model, {"batch": 1})
    assert partial.open_dims == ["seq"]


def test_bad_shape_size_is_one_line(zoo_dir):
    path, _ = _model(zoo_dir, "bert_2l")
    proc = run_cli("bench", str(path), "--backend", "tvm", "--shape", "batch=0", "--shape", "seq=4",
                   "--runs", "2", "--quiet")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgert: error: --shape batch=0: "), proc.stderr


def test_shape_name_the_model_lacks_is_refused_before_compiling(zoo_dir):
    import onnx

    from edgert.compilers.shapes import fix_input_shapes
    from edgert.errors import InputError, UsageError

    path, _ = _model(zoo_dir, "bert_2l")
    model = onnx.load(str(path))
    with pytest.raises(UsageError, match="no symbolic dimension 'sq'.*batch, seq"):
        fix_input_shapes(model, {"batch": 1, "sq": 16})
    with pytest.raises(InputError, match="at least 1"):
        fix_input_shapes(model, {"batch": 0})


def test_bert_runs_on_tvm_with_shape_folding(zoo_dir, tmp_path):
    path, feeds = _model(zoo_dir, "bert_2l")
    outputs = _engine_outputs("tvm", path, feeds, tmp_path, _dims(path, feeds))
    _assert_close(_ort(path, feeds), outputs)


def test_control_flow_model_benches_on_tvm_as_a_bundle(zoo_dir, tmp_path):
    """A greedy-decoding Loop around GPT-2: bench --backend tvm compiles a bundle and says so."""
    path, feeds = _model(zoo_dir, "greedy_gpt2")
    args = []
    for name, value in feeds.items():
        np.save(tmp_path / f"{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / name}.npy"]
    proc = run_cli("bench", str(path), "--backend", "ort", "--backend", "tvm", *args, "--runs", "3",
                   "--quiet", "--json", str(tmp_path / "r.json"),
                   env={"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgert:")]
    assert len(notes) == 1 and "has Loop: ran as a TVM bundle" in notes[0]
    tvm = json.loads((tmp_path / "r.tvm.json").read_text())
    assert tvm["agreement"]["max_abs"] == 0.0  # token ids: any difference is a wrong token
    # The decode step ran on TVM: one static variant per sequence length of this prompt
    from edgert.dynamic.runtime import inspect

    bundle = tvm["backend"]["options"]["note"].rsplit(", ", 1)[1]
    (body,) = [s for s in inspect(Path(bundle))["segments"] if s.get("variants")]
    prompt, steps = feeds["input_ids"].shape[1], int(feeds["steps"])
    assert sorted(v["shapes"][next(iter(v["shapes"]))][1] for v in body["variants"]) == \
        list(range(prompt, prompt + steps))
    assert {v["engine"] for v in body["variants"]} == {"tvm"}


def test_multi_engine_bench_keeps_the_engines_that_ran(zoo_dir, tmp_path):
    """LiteRT cannot build BERT without its sequence length: ORT's result is still shown and
    written, the error is one line."""
    path, feeds = _model(zoo_dir, "bert_2l")
    args = []
    for name, value in feeds.items():
        np.save(tmp_path / f"{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / name}.npy"]
    proc = run_cli("bench", str(path), "--backend", "ort", "--backend", "tflite", *args,
                   "--runs", "3", "--quiet", "--json", str(tmp_path / "r.json"),
                   env={"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("edgert: error: tflite: ") and "--shape batch=SIZE" in errors[0]
    assert "Traceback" not in proc.stderr
    ort = json.loads((tmp_path / "r.ort.json").read_text())
    assert ort["engine_failures"][0]["backend"] == "tflite"
    assert not (tmp_path / "r.tflite.json").exists()
    assert "ort" in proc.stdout  # the table of the engine that ran


def test_engine_chatter_goes_to_the_log(tmp_path, capfd, monkeypatch):
    """C-level writes (TVM's importer, TensorFlow) land in the log, not on the terminal."""
    import os

    from edgert.chatter import captured

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("EDGERT_DEBUG", raising=False)
    with captured("tvm", "test") as log:
        os.write(2, b"Error converting operator Slice\n")
        os.write(1, b"progress\n")
    out, err = capfd.readouterr()
    assert "Slice" not in err and "progress" not in out
    assert "Error converting operator Slice" in log.read_text()
    monkeypatch.setenv("EDGERT_DEBUG", "1")
    with captured("tvm", "debug"):
        os.write(2, b"shown with --debug\n")
    assert "shown with --debug" in capfd.readouterr().err


def test_cnn_converts_to_litert_through_onnx2tf(zoo_dir, tmp_path):
    pytest.importorskip("onnx2tf", reason="LiteRT conversion of real models needs edgert[convert]")
    path, feeds = _model(zoo_dir, "squeezenet1_1")
    outputs = _engine_outputs("tflite", path, feeds, tmp_path, {})
    _assert_close(_ort(path, feeds), outputs)
    tflite = next((tmp_path / "tflite").glob("*.tflite"))
    proc = run_cli("bench", str(tflite), "--backend", "tflite", "--runs", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr  # the converted file runs on its own


# --------------------------------------------------------------- everything (slow)

@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ort", "tvm", "tflite"])
@pytest.mark.parametrize("name", list(_tool().MODELS))
def test_every_model_on_every_engine(request, zoo_dir, tmp_path, name, engine):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the whole real-model set runs only when asked for: pytest -m slow "
                    "tests/test_real_models.py (tens of minutes of TVM compiles and conversions)")
    if engine == "tflite":
        pytest.importorskip("onnx2tf", reason="needs edgert[convert]")
    path, feeds = _model(zoo_dir, name)
    outputs = _engine_outputs(engine, path, feeds, tmp_path, _dims(path, feeds))
    _assert_close(_ort(path, feeds), outputs)
