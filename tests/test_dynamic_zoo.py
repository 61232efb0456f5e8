"""Every dynamic zoo model, compiled into a bundle, matches ONNX Runtime on the original
model for inputs that cover every path, and records the path each run took."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgert.dynamic as dyn
from edgert.backends import backend_class

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
        # auto may keep the whole model as one ORT call: ORT runs the control flow, and the
        # host sees one call whose path it reports as hidden
        whole = runtime.manifest.get("auto", {}).get("chosen") == "whole_model"
        seen_paths = set()
        for case, feeds, expect in cases(name):
            got = runtime.run(feeds)
            want = reference(name, feeds)
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape, case
                np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4, err_msg=f"{name} {case}")
            path = runtime.last_path
            if whole:
                assert path.segments == ["whole_model"] and path.key() == "whole_model=hidden"
                assert not path.branches and not path.trip_counts
            for node, branches in ({} if whole else expect.get("branches", {})).items():
                assert path.branches.get(node) == branches, (case, path.key())
            for node, trips in ({} if whole else expect.get("trips", {})).items():
                assert path.trip_counts.get(node) == trips, (case, path.key())
            assert path.segments, "every zoo model runs at least one engine segment"
            assert path.total_ns >= path.segment_ns > 0
            seen_paths.add(path.key())
        # the committed cases exercise more than one path through every model
        assert len(seen_paths) == 1 if whole else len(seen_paths) >= 2, seen_paths


GENERATOR = ZOO.parents[2] / "tools" / "make_dynamic_zoo.py"


def assert_same_as_committed(out: Path) -> None:
    committed = sorted(p.name for p in ZOO.iterdir() if p.suffix in (".onnx", ".npz", ".json"))
    assert committed == sorted(p.name for p in out.iterdir())
    for name in committed:
        assert (out / name).read_bytes() == (ZOO / name).read_bytes(), name


def test_zoo_regenerates_byte_for_byte(tmp_path):
    done = subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_same_as_committed(tmp_path)


# How far each float output moves, in units in the last place. Vector units and ORT versions
# differ in summation order, so outputs differ by a few ulps: the first report of this was a
# gate bias 1 ulp apart between an AVX-512 machine and one without.
NOISE_ULPS = 16


@pytest.mark.slow
def test_zoo_bytes_do_not_depend_on_float_noise(tmp_path, monkeypatch):
    """Another CPU (with or without AVX-512) or ORT version changes the last bits of the
    ORT outputs the generator derives thresholds and biases from: with every float output
    moved by up to NOISE_ULPS, the regenerated files are still the committed bytes."""
    spec = importlib.util.spec_from_file_location("make_dynamic_zoo", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    exact, rng = generator._run, np.random.default_rng(13)

    def perturb(out: np.ndarray) -> np.ndarray:
        if out.dtype.kind != "f":
            return out
        steps = rng.integers(-NOISE_ULPS, NOISE_ULPS + 1, out.shape)
        return (out + steps * np.spacing(out)).astype(out.dtype)

    monkeypatch.setattr(generator, "_run", lambda model, feeds: [
        [perturb(np.asarray(o)) for o in outs] for outs in exact(model, feeds)])
    generator.build(tmp_path)
    assert_same_as_committed(tmp_path)


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
    """auto: every segment TVM can build is timed against ORT and the faster one kept; then
    that bundle is timed against the whole model on ORT, and the faster of the two bundled."""
    bundle = dyn.compile(ZOO / f"{name}.onnx", backend="auto", out=tmp_path / f"{name}.edgert",
                         cache_dir=tvm_cache)
    manifest = dyn.inspect(bundle)
    auto = manifest["auto"]
    times = auto["measured_ms"]
    assert set(times) == {"partitioned", "whole_model"} and min(times.values()) > 0
    from edgert.dynamic.whole import MARGIN

    split_wins = times["partitioned"] < (1 - MARGIN) * times["whole_model"]
    assert auto["chosen"] == ("partitioned" if split_wins else "whole_model")
    assert auto["probe_inputs"] >= 1
    if auto["chosen"] == "whole_model":
        assert [s["id"] for s in manifest["segments"]] == ["whole_model"]
        assert manifest["segments"][0]["engine"] == "ort" and manifest["target_arch"] == "any"
        assert manifest["program"]["body"]["steps"][0]["control_flow"]
    else:
        assert len(manifest["segments"]) == auto["partitioned_segments"]
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


def compile_auto_keeping(winner: str, model: Path, out: Path, monkeypatch: pytest.MonkeyPatch,
                         cache_dir: Path | None = None) -> Path:
    """backend="auto" with the whole-vs-partitioned decision fixed: both candidates are still
    built and run over the probe inputs by the real timer, whose result is then replaced."""
    from edgert.dynamic import whole

    real = whole.time_bundles_ms

    def timer(bundles: dict, inputs: list, threads: int | None) -> tuple[dict, dict]:
        times, failed = real(bundles, inputs, threads)
        assert set(times) == {"whole_model", "partitioned"} and min(times.values()) > 0, failed
        return {name: 1.0 if name == winner else 2.0 for name in bundles}, {}

    monkeypatch.setattr(whole, "time_bundles_ms", timer)
    return dyn.compile(model, backend="auto", out=out, cache_dir=cache_dir)


@pytest.mark.parametrize("winner", ["whole_model", "partitioned"])
def test_auto_keeps_the_faster_of_whole_model_and_partitioned(winner, tmp_path, tvm_cache,
                                                              monkeypatch):
    bundle = compile_auto_keeping(winner, ZOO / "moe_top1.onnx", tmp_path / "m.edgert",
                                  monkeypatch, tvm_cache)
    manifest = dyn.inspect(bundle)
    assert manifest["auto"]["chosen"] == winner
    assert manifest["auto"]["measured_ms"] == {winner: 1.0, ({"whole_model", "partitioned"} - {winner}).pop(): 2.0}
    ids = [s["id"] for s in manifest["segments"]]
    assert (ids == ["whole_model"]) == (winner == "whole_model")
    assert len(ids) == (1 if winner == "whole_model" else manifest["auto"]["partitioned_segments"])
    check_model("moe_top1", bundle)
