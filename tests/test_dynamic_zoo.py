"""Every dynamic zoo model, compiled into a bundle, matches ONNX Runtime on the original
model for inputs that cover every path, and records the path each run took."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgert.dynamic as dyn
from backends import backend_class

ZOO = Path(dyn.__file__).resolve().parent.parent / "zoo" / "dynamic"
MODELS = ["early_exit_cnn", "skipnet", "blockdrop", "moe_top1", "greedy_decoder", "symbolic_batch"]


def cases(name: str) -> list[tuple[str, dict[str, np.ndarray], dict]]:
    arrays = np.load(ZOO / f"{name}.npz")
    expects = json.loads((ZOO / f"{name}.cases.json").read_text())
    out = []
    for case, expect in sorted(expects.items()):
        feeds = {k.split("/", 1)[1]: arrays[k] for k in arrays.files if k.startswith(case + "/")}
        out.append((case, feeds, expect))
    return out


def reference(name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(ZOO / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def check_model(name: str, bundle: Path) -> None:
    with dyn.load(bundle) as runtime:
        seen_paths = set()
        for case, feeds, expect in cases(name):
            got = runtime.run(feeds)
            want = reference(name, feeds)
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape, case
                np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4, err_msg=f"{name} {case}")
            path = runtime.last_path
            for node, branches in expect.get("branches", {}).items():
                assert path.branches.get(node) == branches, (case, path.key())
            for node, trips in expect.get("trips", {}).items():
                assert path.trip_counts.get(node) == trips, (case, path.key())
            assert path.segments, "every zoo model runs at least one engine segment"
            assert path.total_ns >= path.segment_ns > 0
            seen_paths.add(path.key())
        # the committed cases exercise more than one path through every model
        assert len(seen_paths) >= 2, seen_paths


def test_zoo_regenerates_byte_for_byte(tmp_path):
    script = ZOO.parents[2] / "tools" / "make_dynamic_zoo.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    committed = sorted(p.name for p in ZOO.iterdir() if p.suffix in (".onnx", ".npz", ".json"))
    assert committed == sorted(p.name for p in tmp_path.iterdir())
    for name in committed:
        assert (tmp_path / name).read_bytes() == (ZOO / name).read_bytes(), name


def test_zoo_has_cases_for_every_model():
    for name in MODELS:
        assert (ZOO / f"{name}.onnx").exists()
        assert len(cases(name)) >= 2


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_matches_onnxruntime_with_ort_segments(name, tmp_path):
    bundle = dyn.compile(ZOO / f"{name}.onnx", backend="ort", out=tmp_path / f"{name}.edgert")
    check_model(name, bundle)


@pytest.fixture(scope="session")
def tvm_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tvm-cache")


@pytest.mark.slow
@pytest.mark.skipif(not backend_class("tvm").available(), reason="TVM is not installed")
@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_matches_onnxruntime_with_auto_engines(name, tmp_path, tvm_cache):
    """auto: every segment TVM can build is timed against ORT; the faster one is bundled."""
    bundle = dyn.compile(ZOO / f"{name}.onnx", backend="auto", out=tmp_path / f"{name}.edgert",
                         cache_dir=tvm_cache)
    manifest = dyn.inspect(bundle)
    for seg in manifest["segments"]:
        assert seg["engine"] in ("ort", "tvm")
        assert seg["choice"]["reason"]
    check_model(name, bundle)


@pytest.mark.slow
@pytest.mark.skipif(not backend_class("tvm").available(), reason="TVM is not installed")
@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_matches_onnxruntime_with_tvm_segments(name, tmp_path, tvm_cache):
    bundle = dyn.compile(ZOO / f"{name}.onnx", backend="tvm", out=tmp_path / f"{name}.edgert",
                         cache_dir=tvm_cache)
    manifest = dyn.inspect(bundle)
    assert {seg["engine"] for seg in manifest["segments"]} == {"tvm"}
    assert manifest["engines"]["tvm"]
    check_model(name, bundle)


@pytest.mark.slow
@pytest.mark.skipif(not backend_class("tvm").available(), reason="TVM is not installed")
def test_tvm_segments_hand_tvm_tensors_to_each_other(tmp_path, tvm_cache):
    """keep_tensors (the default): a TVM segment's outputs reach the next TVM segment as TVM
    tensors, not numpy; the bundle's outputs are numpy and equal to the copying runtime's."""
    import tvm

    from edgert.dynamic.program import Interpreter

    bundle = dyn.compile(ZOO / "greedy_decoder.onnx", backend="tvm", out=tmp_path / "g.edgert",
                         cache_dir=tvm_cache)
    _, feeds, _ = cases("greedy_decoder")[-1]
    with dyn.load(bundle) as kept, dyn.load(bundle, keep_tensors=False) as copied:
        fed: list[type] = []

        def call(seg, seg_feeds):
            fed.extend(type(v) for v in seg_feeds.values())
            return kept._run_segment(seg, seg_feeds)

        Interpreter(kept.manifest["program"], call, kept._interp._consts).run(feeds)
        assert tvm.runtime.Tensor in fed
        got, want = kept.run(feeds), copied.run(feeds)
        for g, w in zip(got, want):
            assert isinstance(g, np.ndarray)
            np.testing.assert_array_equal(g, w)
