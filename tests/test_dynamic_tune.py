"""Tuning a dynamic bundle's TVM segments into one database, then compiling with it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import needs

pytestmark = needs("tvm", "xgboost", "onnx", "onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgert.dynamic as dyn  # noqa: E402
from edgert.compilers.tvm_target import resolve_target  # noqa: E402
from edgert.compilers.tvm_db import RECORDS, database_dir  # noqa: E402
from conftest import run_cli  # noqa: E402
from edgert.dynamic.bundle import Bundle, write_bundle  # noqa: E402
from edgert.dynamic.tune import tune_bundle, tvm_sources  # noqa: E402
from edgert.errors import BundleError, UsageError  # noqa: E402

F = TensorProto.FLOAT


def _if_model(path: Path) -> Path:
    """if c: relu(x @ w1) else: relu(x @ w2) @ w3 -- the branches share the matmul+relu kernel."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), name)
               for name in ("w1", "w2", "w3")]
    out = helper.make_tensor_value_info

    then = helper.make_graph([helper.make_node("MatMul", ["x", "w1"], ["t1"], name="then_mm"),
                              helper.make_node("Relu", ["t1"], ["y_t"], name="then_relu")],
                             "then", [], [out("y_t", F, [16, 32])])
    other = helper.make_graph([helper.make_node("MatMul", ["x", "w2"], ["e1"], name="else_mm"),
                               helper.make_node("Relu", ["e1"], ["e2"], name="else_relu"),
                               helper.make_node("MatMul", ["e2", "w3"], ["y_e"], name="else_mm2")],
                              "else", [], [out("y_e", F, [16, 32])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="gate", then_branch=then, else_branch=other)], "g",
        [out("x", F, [16, 32]), out("c", TensorProto.BOOL, [])], [out("y", F, [16, 32])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The model, its untuned TVM bundle, and a database from ``edgert tune BUNDLE`` (8 trials)."""
    work = tmp_path_factory.mktemp("dyntune")
    model = _if_model(work / "if.onnx")
    cache = work / "cache"
    bundle = dyn.compile(model, backend="tvm", out=work / "untuned.edgert", cache_dir=cache)
    proc = run_cli("tune", str(bundle), "--db", str(work / "db"), "--trials", "8", "--trials-per-iter", "4",
                   "--seed", "0", "--json", str(work / "tune.json"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "TVM segments seg_000, seg_001" in proc.stdout
    return {"model": model, "bundle": bundle, "db": work / "db", "summary": work / "tune.json",
            "cache": cache, "work": work}


@pytest.mark.slow
def test_one_run_tunes_every_segment_and_shared_kernels_once(tuned: dict[str, Path]) -> None:
    summary = json.loads(tuned["summary"].read_text())
    tasks = {t["name"]: t for t in summary["tasks"]}
    # relu(x @ w) occurs in both branches: one task of weight 2, not two tasks
    assert set(tasks) == {"fused_matmul_relu", "matmul"}
    assert tasks["fused_matmul_relu"]["models"] == ["seg_000", "seg_001"]
    assert tasks["fused_matmul_relu"]["weight"] == 2
    assert tasks["matmul"]["models"] == ["seg_001"]
    assert summary["trials"] == 8 and all(t["best_us"] for t in tasks.values())
    assert summary["target"] == json.loads(Bundle(tuned["bundle"]).read("segments/seg_000.json"))["target"]
    records = database_dir(tuned["db"], resolve_target("host")) / RECORDS
    assert len(records.read_text().splitlines()) == 8


@pytest.mark.slow
def test_compile_with_the_database_tunes_segments_matches_ort_and_reuses_the_cache(
        tuned: dict[str, Path]) -> None:
    work, cache = tuned["work"], tuned["cache"]
    out = work / "tuned.edgert"
    proc = run_cli("compile", str(tuned["model"]), "-o", str(out), "--backend", "tvm",
                   "--tuning-db", str(tuned["db"]), "--cache-dir", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert "seg_001: 2/2 TVM kernels tuned" in proc.stdout
    segments = {s["id"]: s for s in dyn.inspect(out)["segments"]}
    assert segments["seg_000"]["tuning"]["tuned_functions"] == ["fused_matmul_relu"]
    assert segments["seg_001"]["tuning"]["tuned_functions"] == ["fused_matmul_relu", "matmul"]
    assert "tuning" not in dyn.inspect(tuned["bundle"])["segments"][0]

    import onnxruntime as ort

    reference = ort.InferenceSession(str(tuned["model"]), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((16, 32)).astype(np.float32)
    with dyn.load(out) as runtime:
        for c in (True, False):  # both branches, i.e. both tuned segments
            feeds = {"x": x, "c": np.array(c)}
            np.testing.assert_allclose(runtime.run(feeds)[0], reference.run(None, feeds)[0],
                                       rtol=1e-4, atol=1e-4)

    # the same database again: every segment library is a cache hit, the bundle is identical
    cached = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = dyn.compile(tuned["model"], backend="tvm", out=work / "again.edgert", cache_dir=cache,
                        tuning_db=tuned["db"])
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == cached
    assert again.read_bytes() == out.read_bytes()

    # auto builds its TVM candidates with the database too (the tuned libraries, from the cache)
    auto = dyn.compile(tuned["model"], backend="auto", out=work / "auto.edgert", cache_dir=cache,
                       tuning_db=tuned["db"])
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == cached
    for seg in dyn.inspect(auto)["segments"]:
        assert seg["engine"] == "ort" or seg["tuning"]["tuned_functions"]


def test_tvm_sources_are_what_tvm_compiled(tuned: dict[str, Path], tmp_path: Path) -> None:
    bundle = Bundle(tuned["bundle"])
    sources = tvm_sources(bundle)
    assert sorted(sources) == ["seg_000", "seg_001"]
    manifest = json.loads(json.dumps(bundle.manifest))
    manifest["segments"][0]["specialized"]["source_sha256"] = "0" * 64
    members = {name: bundle.read(name) for name in manifest["members"]}
    with pytest.raises(BundleError) as info:
        tvm_sources(Bundle(write_bundle(tmp_path / "changed.edgert", manifest, members)))
    assert "recompile" in info.value.message and info.value.fields["segment"] == "seg_000"


def test_a_bundle_for_another_target_or_without_tvm_segments_is_a_usage_error(
        tuned: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        tune_bundle(tuned["bundle"], tmp_path / "db", "aarch64", trials=4)
    assert "--target" in info.value.message
    ort_only = dyn.compile(tuned["model"], backend="ort", out=tmp_path / "ort.edgert")
    with pytest.raises(UsageError) as info:
        tune_bundle(ort_only, tmp_path / "db", trials=4)
    assert "no TVM segments" in info.value.message
    with pytest.raises(UsageError):
        dyn.compile(tuned["model"], backend="ort", out=tmp_path / "x.edgert", tuning_db=tuned["db"])


def test_ranks_taken_from_the_sample_run_are_rebuilt_from_the_manifest(tmp_path: Path) -> None:
    """compile() filled x's rank from shapes it saw; the bundle keeps only the rank (input_specs)."""
    from edgert.dynamic.bundle import sha256
    from edgert.dynamic.specialize import specialize

    out = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [out("x", F, None)], [out("y", F, None)])
    segment = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    compiled = specialize(segment, {"x": {(2, 3), (5, 3)}})  # what compile() saw in its sample runs
    assert compiled.ranks_from_sample == ["x"]
    source = compiled.model.SerializeToString(deterministic=True)
    manifest = {"segments": [{
        "id": "seg_000", "engine": "tvm", "onnx": "segments/seg_000.onnx",
        "input_specs": [{"name": "x", "shape": ["x__0", "x__1"], "dtype": "float32"}],
        "specialized": {"source_sha256": sha256(source), "ranks_from_sample": ["x"]}}]}
    bundle = Bundle(write_bundle(tmp_path / "b.edgert", manifest, {"segments/seg_000.onnx": segment}))
    assert tvm_sources(bundle) == {"seg_000": source}
    manifest["segments"][0]["specialized"]["ranks_from_sample"] = []  # without the rank: not what TVM saw
    with pytest.raises(BundleError):
        tvm_sources(Bundle(write_bundle(tmp_path / "c.edgert", manifest, {"segments/seg_000.onnx": segment})))
