"""Value-guarded specialisation: user samples at compile time, a program specialised to
their small integer inputs' values, and the guard that picks a program per call."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgert.dynamic as dyn
from edgert.backends import TensorSpec, backend_class
from conftest import run_cli
from edgert.dynamic.bundle import Bundle
from edgert.dynamic.guard import MAX_ELEMENTS, fixed_inputs
from edgert.dynamic.tune import tvm_sources
from edgert.errors import InputError


def _affine_grid(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """ONNX's affine_grid 2-D case: the grid's shape comes from the values of ``size``."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = next(c for c in collect_testcases(None) if c.name == "test_affine_grid_2d_expanded")
    path = tmp_path / "affine_grid.onnx"
    onnx.save(case.model, path)
    return path, dict(zip([i.name for i in case.model.graph.input], case.data_sets[0][0]))


def _reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_fixed_inputs_are_small_integers_with_one_value_in_every_sample():
    specs = [TensorSpec("size", (4,), "int64"), TensorSpec("flag", (), "bool"),
             TensorSpec("x", (2,), "float32"), TensorSpec("ids", (MAX_ELEMENTS + 1,), "int32"),
             TensorSpec("step", (), "int64")]
    big = np.arange(MAX_ELEMENTS + 1, dtype=np.int32)
    samples = [{"size": np.array([2, 3, 5, 6]), "flag": np.array(True), "x": np.zeros(2, np.float32),
                "ids": big, "step": np.array(k)} for k in range(2)]
    fixed = fixed_inputs(specs, samples)
    assert sorted(fixed) == ["flag", "size"]  # x is float, ids too large, step varies
    assert fixed["size"].tolist() == [2, 3, 5, 6]


def test_samples_that_do_not_fit_the_model_are_refused(tmp_path: Path):
    path, feeds = _affine_grid(tmp_path)
    with pytest.raises(InputError, match="sample 1: missing input 'size'"):
        dyn.compile(path, backend="ort", out=tmp_path / "b.edgert",
                    samples=[feeds, {"theta": feeds["theta"]}])


@pytest.fixture(scope="module")
def tvm_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tvm-cache")


needs_tvm = pytest.mark.skipif(not backend_class("tvm").available(), reason="TVM is not installed")


@pytest.mark.slow
@needs_tvm
def test_the_guarded_program_runs_for_the_samples_values_and_the_general_one_otherwise(
        tmp_path: Path, tvm_cache):
    path, feeds = _affine_grid(tmp_path)
    bundle = dyn.compile(path, backend="tvm", out=tmp_path / "b.edgert", cache_dir=tvm_cache,
                         samples=[feeds])
    manifest = dyn.inspect(bundle)
    engine = {s["id"]: s["engine"] for s in manifest["segments"]}
    assert list(manifest["guarded"]["guard"]) == ["size"]
    guarded = [seg for seg in engine if seg.startswith("g_")]
    assert guarded and all(engine[seg] == "tvm" for seg in guarded)
    assert any(e == "ort" for e in engine.values())  # the general program keeps its fallbacks
    other = dict(feeds, size=np.array([2, 3, 4, 7], np.int64))
    with dyn.load(bundle) as runtime:
        got = runtime.run(feeds)
        assert runtime.last_path.program == "guarded"
        assert runtime.last_path.key().startswith("program=guarded")
        assert set(runtime.last_path.segments) <= set(guarded)
        np.testing.assert_allclose(got[0], _reference(path, feeds)[0], rtol=1e-5, atol=1e-6)
        got = runtime.run(other)
        assert runtime.last_path.program == "main"
        ran = runtime.last_path.segments
        assert not any(seg.startswith("g_") for seg in ran)
        assert any(engine[seg] == "ort" for seg in ran)
        assert got[0].shape == (2, 4, 7, 2)
        np.testing.assert_allclose(got[0], _reference(path, other)[0], rtol=1e-5, atol=1e-6)
    report = dyn.validate(bundle, path, cases=[feeds, other])
    assert report["status"] == "pass" and report["programs"] == {"guarded": 1, "main": 1}
    assert set(tvm_sources(Bundle(bundle))) == {s for s, e in engine.items() if e == "tvm"}


@pytest.mark.slow
@needs_tvm
def test_no_guarded_program_when_the_samples_disagree_on_every_integer_input(tmp_path: Path, tvm_cache):
    path, feeds = _affine_grid(tmp_path)
    other = dict(feeds, size=np.array([2, 3, 4, 7], np.int64))
    bundle = dyn.compile(path, backend="tvm", out=tmp_path / "b.edgert", cache_dir=tvm_cache,
                         samples=[feeds, other])
    manifest = dyn.inspect(bundle)
    assert "guarded" not in manifest and "had one value across the samples" in manifest["guard_skipped"]
    assert not any(s["id"].startswith("g_") for s in manifest["segments"])
    with dyn.load(bundle) as runtime:
        got = runtime.run(feeds)
        assert runtime.last_path.program == "main"
    np.testing.assert_allclose(got[0], _reference(path, feeds)[0], rtol=1e-5, atol=1e-6)


def test_without_fallback_no_guarded_program_is_built(tmp_path: Path):
    """backend="ort": nothing falls back, so samples only drive the sample run."""
    path, feeds = _affine_grid(tmp_path)
    manifest = dyn.inspect(dyn.compile(path, backend="ort", out=tmp_path / "b.edgert", samples=[feeds]))
    assert "guarded" not in manifest and "guard_skipped" not in manifest


@pytest.mark.slow
@needs_tvm
def test_cli_compile_takes_samples_from_an_npz(tmp_path: Path, tvm_cache):
    path, feeds = _affine_grid(tmp_path)
    samples = tmp_path / "samples.npz"
    np.savez(samples, **{f"case0/{name}": value for name, value in feeds.items()})
    proc = run_cli("compile", str(path), "-o", str(tmp_path / "b.edgert"), "--backend", "tvm",
                   "--cache-dir", str(tvm_cache), "--samples", str(samples))
    assert proc.returncode == 0, proc.stderr
    assert "guarded program (segments g_*, all TVM) runs when size equal" in proc.stdout
    proc = run_cli("validate", str(tmp_path / "b.edgert"), "--reference", str(path),
                   "--cases", str(samples))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "programs run: guarded x1" in proc.stdout
