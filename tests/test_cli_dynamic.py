"""``edgert compile / validate / bench`` on a dynamic zoo model, end to end through the CLI."""
import json
from pathlib import Path

import pytest
from conftest import run_cli, with_external_weights

ZOO = Path(__file__).resolve().parents[1] / "edgert" / "zoo" / "dynamic"


def test_compile_validate_and_bench_a_bundle(tmp_path):
    model = ZOO / "early_exit_cnn.onnx"
    bundle = tmp_path / "ee.edgert"
    proc = run_cli("compile", str(model), "-o", str(bundle), "--backend", "ort")
    assert proc.returncode == 0, proc.stderr
    assert "segments on ort" in proc.stdout

    report = tmp_path / "v.json"
    proc = run_cli("validate", str(bundle), "--reference", str(model), "--cases",
                   str(ZOO / "early_exit_cnn.npz"), "--force-paths", "--json", str(report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    v = json.loads(report.read_text())
    assert v["status"] == "pass" and len(v["paths"]) >= 2 and not v["segments_not_exercised"]
    # zoo names where compile and bench take them: the reference and its cases
    proc = run_cli("validate", str(bundle), "--reference", "zoo:early_exit_cnn", "--cases",
                   "zoo:early_exit_cnn.npz", "--force-paths")
    assert proc.returncode == 0 and proc.stdout.startswith("pass: "), proc.stdout + proc.stderr

    out = tmp_path / "r.json"
    proc = run_cli("bench", str(bundle), "--runs", "30", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["backend"]["name"] == "bundle"
    assert sum(p["n"] for p in r["paths"].values()) == 30  # every measured run has its path
    assert r["segments_ms"] and r["host_overhead_us"]["p50"] > 0
    assert set(r["segments_ms"]) <= set(r["backend"]["options"]["segments"])


def test_validate_reports_a_mismatch_and_a_reference_that_does_not_fit(tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    bundle = tmp_path / "ee.edgert"
    assert run_cli("compile", str(ZOO / "early_exit_cnn.onnx"), "-o", str(bundle),
                   "--backend", "ort").returncode == 0
    # the same graph with one weight changed: outputs must differ, and validate must say so
    model = onnx.load(ZOO / "early_exit_cnn.onnx")
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    onnx.save(model, tmp_path / "changed.onnx")
    proc = run_cli("validate", str(bundle), "--reference", str(tmp_path / "changed.onnx"),
                   "--cases", str(ZOO / "early_exit_cnn.npz"))
    assert proc.returncode == 1 and proc.stdout.startswith("fail"), proc.stdout + proc.stderr

    proc = run_cli("validate", str(bundle), "--reference", str(ZOO / "moe_top1.onnx"), "--random", "2")
    assert proc.returncode == 1 and "cannot run the bundle's inputs" in proc.stderr
    assert "Traceback" not in proc.stderr
    symbolic = tmp_path / "sb.edgert"
    assert run_cli("compile", str(ZOO / "symbolic_batch.onnx"), "-o", str(symbolic), "--backend", "ort").returncode == 0
    proc = run_cli("validate", str(symbolic), "--reference", str(ZOO / "moe_top1.onnx"),
                   "--cases", str(ZOO / "symbolic_batch.npz"))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # ORT's: 3 lines


def test_run_refuses_the_null_backend(tmp_path):
    """It said the model has no input 'input', its inputs being the null backend's own 'x'."""
    import numpy as np

    np.save(tmp_path / "in.npy", np.zeros((1, 3, 64, 64), np.float32))
    proc = run_cli("run", "zoo:resnet", "--backend", "null", "--input", f"input={tmp_path / 'in.npy'}",
                   "-o", str(tmp_path / "o.npz"))
    assert proc.returncode == 2 and "the null backend runs no model" in proc.stderr, proc.stderr


def test_compile_refuses_a_target_that_is_not_a_cpu(tmp_path):
    """A bundle for --backend ort was written claiming a CUDA target."""
    proc = run_cli("compile", "zoo:resnet", "--backend", "ort", "--target", '{"kind": "cuda"}',
                   "-o", str(tmp_path / "r.edgert"))
    assert proc.returncode == 2 and "needs \"kind\": \"llvm\", not 'cuda'" in proc.stderr, proc.stderr
    assert not (tmp_path / "r.edgert").exists()


def test_bundle_refuses_another_backend(tmp_path):
    bundle = tmp_path / "ee.edgert"
    assert run_cli("compile", str(ZOO / "early_exit_cnn.onnx"), "-o", str(bundle),
                   "--backend", "ort").returncode == 0
    proc = run_cli("bench", str(bundle), "--backend", "tvm", "--runs", "2")
    assert proc.returncode != 0 and "is a bundle" in proc.stderr


def test_whole_model_bundle_through_validate_bench_and_inspect(tmp_path, monkeypatch):
    """auto's whole-model choice: one ORT call, so the path is that segment's, hidden from
    the host; validate says so and refuses --force-paths, bench reports one path."""
    import edgert.dynamic as dyn
    from test_dynamic_zoo import compile_auto_keeping

    model = ZOO / "greedy_decoder.onnx"
    bundle = compile_auto_keeping("whole_model", model, tmp_path / "g.edgert", monkeypatch,
                                  tmp_path / "tvm-cache")
    manifest = dyn.inspect(bundle)
    assert manifest["auto"]["chosen"] == "whole_model" and manifest["consts"] == {}
    assert manifest["program"]["body"]["steps"] == [{
        "op": "call", "segment": "whole_model", "inputs": manifest["segments"][0]["inputs"],
        "outputs": [o["name"] for o in manifest["outputs"]], "control_flow": ["decode_loop"]}]

    report = tmp_path / "v.json"
    proc = run_cli("validate", str(bundle), "--reference", str(model), "--cases",
                   str(ZOO / "greedy_decoder.npz"), "--json", str(report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "branches not visible): decode_loop" in proc.stdout
    v = json.loads(report.read_text())
    assert v["paths"] == {"whole_model=hidden": len(v["cases"])}
    assert v["control_flow_in_engine"] == ["decode_loop"] and not v["segments_not_exercised"]
    proc = run_cli("validate", str(bundle), "--reference", str(model), "--random", "1",
                   "--force-paths")
    assert proc.returncode == 2 and "cannot check path coverage" in proc.stderr, proc.stderr

    out = tmp_path / "r.json"
    proc = run_cli("bench", str(bundle), "--runs", "20", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert list(r["paths"]) == ["whole_model=hidden"] and r["paths"]["whole_model=hidden"]["n"] == 20
    assert list(r["segments_ms"]) == ["whole_model"] and r["host_overhead_us"]["p50"] > 0


def test_bench_a_bundle_over_its_cases_gives_per_case_and_per_path_latency(tmp_path):
    import json

    import numpy as np

    bundle = tmp_path / "eec.edgert"
    assert run_cli("compile", "zoo:early_exit_cnn", "-o", str(bundle), "--backend", "ort",
                   "--quiet").returncode == 0
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(bundle), "--cases", "zoo:early_exit_cnn.npz", "--runs", "24", "--warmup", "2",
                   "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    with np.load(ZOO / "early_exit_cnn.npz") as arrays:
        names = sorted({key.rpartition("/")[0] or "case0" for key in arrays.files})
    assert sorted(r["cases_ms"]) == names
    assert sum(c["n"] for c in r["cases_ms"].values()) == 24 == sum(p["n"] for p in r["paths"].values())
    assert len(r["paths"]) >= 2  # the cases take different exits
    assert f"input {names[0]}" in proc.stdout
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    proc = run_cli("bench", str(bundle), "--cases", str(bad))
    assert proc.returncode == 2 and "bad.npz" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bench_over_cases_needs_no_shape_for_a_symbolic_dimension_they_set(tmp_path):
    """symbolic_batch's cases have batch sizes 1, 5 and 3: no random default input (which
    would need --shape N=...) is made for an input every case gives."""
    import json

    bundle = tmp_path / "sb.edgert"
    assert run_cli("compile", "zoo:symbolic_batch", "-o", str(bundle), "--backend", "ort",
                   "--quiet").returncode == 0
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(bundle), "--cases", "zoo:symbolic_batch.npz", "--runs", "8",
                   "--warmup", "4", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert {c: v["n"] for c, v in json.loads(out.read_text())["cases_ms"].items()} == {
        "case0": 2, "case1": 2, "case2": 2, "case3": 2}
    proc = run_cli("bench", str(bundle), "--runs", "2", "--quiet")  # no cases: --shape is needed
    assert proc.returncode != 0 and proc.stderr.strip().endswith("set it with --shape N=SIZE")


def test_every_bundled_model_has_a_zoo_name():
    import pytest

    from edgert.errors import UsageError
    from edgert.zoo import ZOO_DIR, all_models, resolve

    for path in ZOO_DIR.rglob("*.onnx"):
        assert resolve(f"zoo:{path.stem}") == path and all_models()[path.stem] == path
    assert resolve("zoo:early_exit_cnn.npz") == ZOO / "early_exit_cnn.npz"
    with pytest.raises(UsageError, match=r"early_exit_cnn\[.npz\].*resnet\[.tflite\]"):
        resolve("zoo:nope")


def test_compile_for_litert_puts_segments_on_litert_and_validates(tmp_path):
    """An If model for LiteRT: segments the converters take run on LiteRT (their NCHW
    outputs restored by the layout sidecar), the rest on ORT, and validate passes."""
    import pytest

    pytest.importorskip("ai_edge_litert", reason="needs edgert[tflite]")
    model = ZOO / "early_exit_cnn.onnx"
    bundle = tmp_path / "ee.edgert"
    proc = run_cli("compile", str(model), "-o", str(bundle), "--backend", "tflite",
                   "--cache-dir", str(tmp_path / "cache"),
                   env={"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert proc.returncode == 0, proc.stderr
    from edgert.dynamic.runtime import inspect

    segments = inspect(bundle)["segments"]
    on_litert = [s for s in segments if s["engine"] == "tflite"]
    assert on_litert and all(s["artifact"].endswith(".tflite") for s in on_litert)
    assert all(s["choice"]["fallback_from"] == "tflite" for s in segments if s["engine"] == "ort")
    proc = run_cli("validate", str(bundle), "--reference", str(model), "--cases",
                   str(ZOO / "early_exit_cnn.npz"), "--force-paths", "--json", str(tmp_path / "v.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "v.json").read_text())["status"] == "pass"


def test_run_writes_to_the_names_it_reports(tmp_path):
    """`-o out` wrote out.npz while saying 'wrote out'; `--json -` made a file named '-';
    `--json DIR` failed after the outputs were written."""
    import json

    import numpy as np

    from conftest import run_cli

    cases = ("--cases", "zoo:early_exit_cnn.npz")
    proc = run_cli("run", "zoo:early_exit_cnn", *cases, "-o", str(tmp_path / "out"))
    assert proc.returncode == 0 and f"wrote {tmp_path / 'out'} " in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and np.load(tmp_path / "out").files
    proc = run_cli("run", "zoo:early_exit_cnn", *cases, "-o", str(tmp_path / "o.npz"), "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["schema"] == "edgert.run/1"
    assert not (tmp_path / "-").exists()
    (tmp_path / "dir").mkdir()
    proc = run_cli("run", "zoo:early_exit_cnn", *cases, "-o", str(tmp_path / "p.npz"), "--json", str(tmp_path / "dir"))
    assert proc.returncode == 2 and "is a directory" in proc.stderr and not (tmp_path / "p.npz").exists()


def test_compile_refuses_a_bad_target_or_keep_dir_before_any_progress(tmp_path):
    """A CPU LLVM does not know was refused only after 'compiling ...' was shown; a
    --keep-candidates path that cannot be a directory was a traceback after compiling."""
    (tmp_path / "afile").write_text("")
    for args, says in (
            (["--backend", "ort", "--keep-candidates", str(tmp_path / "afile" / "sub")], "--keep-candidates"),
            (["--backend", "tvm", "--target", '{"kind":"llvm","mcpu":"cortex-a99","mtriple":"aarch64-linux-gnu"}'],
             "LLVM does not know CPU 'cortex-a99'")):
        proc = run_cli("compile", str(ZOO / "symbolic_batch.onnx"), "-o", str(tmp_path / "x.edgert"), *args)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
        assert says in proc.stderr and "compiling" not in proc.stderr + proc.stdout


def test_run_refuses_a_bad_case_before_running_any(tmp_path):
    """A bad second case ran the first, then said 'case1/was refused by the bundle'."""
    import numpy as np

    bundle = tmp_path / "sb.edgert"
    assert run_cli("compile", str(ZOO / "symbolic_batch.onnx"), "-o", str(bundle), "--backend", "ort").returncode == 0
    np.savez(tmp_path / "mix.npz", **{"case0/x": np.zeros((2, 32), np.float32),
                                      "case1/x": np.zeros((2, 31), np.float32)})
    proc = run_cli("run", str(bundle), "--cases", str(tmp_path / "mix.npz"), "-o", str(tmp_path / "o.npz"))
    assert proc.returncode == 1 and "case 'case1' of the input cases" in proc.stderr, proc.stderr
    assert "case0" not in proc.stdout and not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("backend", ["ort", "tvm"])
def test_a_model_with_external_weights_compiles_from_another_directory_into_a_whole_bundle(
        tmp_path, backend):
    if backend == "tvm":
        pytest.importorskip("tvm")
    model = with_external_weights(ZOO / "early_exit_cnn.onnx", tmp_path / "model")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bundle = tmp_path / "ee.edgert"
    proc = run_cli("compile", str(model), "-o", str(bundle), "--backend", backend, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("validate", str(bundle), "--reference", str(model), "--cases",
                   str(ZOO / "early_exit_cnn.npz"), cwd=elsewhere)
    assert proc.returncode == 0 and proc.stdout.startswith("pass: "), proc.stdout + proc.stderr
    (tmp_path / "model" / "early_exit_cnn.onnx.data").unlink()  # the bundle holds the weights
    proc = run_cli("bench", str(bundle), "--runs", "3", "--quiet", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_compile_names_a_missing_or_truncated_weight_file_in_one_line(tmp_path, damage):
    model = with_external_weights(ZOO / "early_exit_cnn.onnx", tmp_path / "model")
    data = tmp_path / "model" / "early_exit_cnn.onnx.data"
    if damage == "missing":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[:-100])
    proc = run_cli("compile", str(model), "-o", str(tmp_path / "ee.edgert"), "--backend", "ort",
                   cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("compiling ")]
    assert proc.returncode == 1 and len(errors) == 1 and errors[0].startswith("edgert: error: "), proc.stderr
    assert "early_exit_cnn.onnx.data" in errors[0], errors[0]


def _embedding(path: Path) -> Path:
    """ids (int64 [2, 5]) -> Gather from a 20 x 4 table."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(80, dtype=np.float32).reshape(20, 4), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["rows"])], "embedding",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [2, 5, 4])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_engine_chatter_stays_off_the_terminal(tmp_path: Path) -> None:
    """TVM printed 'Warning: Fast mode segfaults when there are out-of-bounds indices' on any
    Gather even with --quiet; ORT printed its own coloured '[E:onnxruntime:...]' line before
    edgert's error line."""
    import numpy as np

    model = _embedding(tmp_path / "emb.onnx")
    proc = run_cli("compile", str(model), "-o", str(tmp_path / "emb.tvm.edgert"), "--backend", "tvm", "--quiet")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert run_cli("compile", str(model), "-o", str(tmp_path / "emb.ort.edgert"), "--backend", "ort").returncode == 0
    np.save(tmp_path / "ids.npy", np.full((2, 5), 25, np.int64))
    proc = run_cli("run", str(tmp_path / "emb.ort.edgert"), "--input", f"ids={tmp_path / 'ids.npy'}",
                   "-o", str(tmp_path / "out.npz"))
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("edgert: error: ") and "out of data bounds" in proc.stderr


def test_a_tvm_segment_refuses_an_empty_batch_in_one_line(tmp_path: Path) -> None:
    """A batch of 0 ran TVM's kernels on no data: an If's condition (the mean of an empty
    tensor) took the other branch than PyTorch and ORT, and the output was uninitialised memory."""
    import numpy as np

    import edgert
    from conftest import make_matmul_model
    from edgert.errors import BackendError

    model = make_matmul_model(tmp_path / "m.onnx", size=8)
    bundle = tmp_path / "m.edgert"
    assert run_cli("compile", str(model), "-o", str(bundle), "--backend", "tvm", "--quiet").returncode == 0
    runtime = edgert.load(bundle)
    assert runtime.run({"x": np.ones((2, 8), np.float32)})[0].shape == (2, 8)
    with pytest.raises(BackendError, match=r"TVM cannot run input 'x' of shape \[0, 8\]: .*empty tensors"):
        runtime.run({"x": np.ones((0, 8), np.float32)})
