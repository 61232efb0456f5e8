"""TvmBackend against real TVM compiles and real ONNX Runtime sessions."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import needs

pytestmark = needs("tvm", "onnx")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgert.backends import BackendOptions, get_backend  # noqa: E402
from edgert.backends.tvm import TvmBackend  # noqa: E402
from edgert.compilers import compile_for  # noqa: E402
from edgert.compilers.tvm import cache_path, compile_onnx  # noqa: E402
from edgert.compilers.tvm_target import resolve_target, target_key  # noqa: E402
from edgert.errors import BackendError, BundleError, ModelError, UsageError  # noqa: E402
from edgert.tensors import random_feeds  # noqa: E402

ZOO = Path(__file__).resolve().parents[1] / "edgert" / "zoo"
EM_AARCH64 = 183


def _weights(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    scale = 1.0 / np.sqrt(np.prod(shape[1:]) if len(shape) > 1 else 1.0)
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _small_cnn(path: Path) -> Path:
    """conv+relu -> conv, + skip, relu -> pool -> gemm; two outputs (logits, features)."""
    rng = np.random.default_rng(0)
    inits = [_weights(rng, "w1", (8, 3, 3, 3)), _weights(rng, "b1", (8,)),
             _weights(rng, "w2", (8, 8, 3, 3)), _weights(rng, "b2", (8,)),
             _weights(rng, "wf", (5, 8)), _weights(rng, "bf", (5,))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["r1", "c2"], ["s"]),
        helper.make_node("Relu", ["s"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tvm-cache")


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _small_cnn(tmp_path_factory.mktemp("models") / "small_cnn.onnx")


def _assert_matches_ort(model: Path, cache_dir: Path) -> None:
    library = compile_for("tvm", model, BackendOptions(cache_dir=cache_dir)).path
    tvm_session = get_backend("tvm").load(library)
    ort_session = get_backend("ort").load(model)
    assert tvm_session.inputs == ort_session.inputs
    assert [s.name for s in tvm_session.outputs] == [s.name for s in ort_session.outputs]
    feeds = random_feeds(tvm_session.inputs, {}, seed=1)
    got, want = tvm_session.run(feeds), ort_session.run(feeds)
    assert len(got) == len(want)
    for spec, g, w in zip(tvm_session.outputs, got, want):
        assert g.shape == w.shape, spec.name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=spec.name)


@pytest.mark.slow
def test_small_cnn_matches_ort_in_output_order(small_cnn: Path, cache_dir: Path) -> None:
    _assert_matches_ort(small_cnn, cache_dir)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet", "mobilenet_v2"])
def test_zoo_model_matches_ort(name: str, cache_dir: Path) -> None:
    model = ZOO / f"{name}.onnx"
    if not model.exists():
        pytest.skip(f"{model} not built")
    _assert_matches_ort(model, cache_dir)


@pytest.mark.slow
def test_second_compile_hits_the_cache(small_cnn: Path, tmp_path: Path) -> None:
    first = compile_for("tvm", small_cnn, BackendOptions(cache_dir=tmp_path))
    library = first.path
    assert first.notes["artifact"] == str(library)
    stamp = library.stat().st_mtime_ns
    second = compile_for("tvm", small_cnn, BackendOptions(cache_dir=tmp_path))
    assert first.notes["cache"] == "miss"
    assert second.notes["cache"] == "hit" and second.path == library
    assert library.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [library.with_suffix(".json").name, library.name]


def test_cache_key_depends_on_target(small_cnn: Path, tmp_path: Path) -> None:
    host, arm = resolve_target("host"), resolve_target("aarch64")
    assert target_key(host) != target_key(arm)
    assert cache_path(small_cnn, host, tmp_path) != cache_path(small_cnn, arm, tmp_path)
    assert cache_path(small_cnn, host, tmp_path) == cache_path(small_cnn, resolve_target("host"), tmp_path)


@pytest.mark.slow
def test_aarch64_library_is_an_arm64_elf(small_cnn: Path, cache_dir: Path) -> None:
    library = compile_onnx(small_cnn, resolve_target("aarch64"), cache_dir)
    header = library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert header[4] == 2  # ELFCLASS64
    assert int.from_bytes(header[18:20], "little") == EM_AARCH64
    if platform.machine() == "aarch64":
        return  # the library is native here; the refusal below is for other hosts
    with pytest.raises(BundleError) as info:
        TvmBackend().load(library)
    assert str(library) in info.value.message and "built for aarch64" in info.value.message


def test_unsupported_operator_is_named(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Det", ["r"], ["y"], name="det_1")],
        "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelError) as info:
        compile_for("tvm", path, BackendOptions(cache_dir=tmp_path))
    assert info.value.fields == {"op": "Det", "node": "det_1"}
    assert "'Det'" in info.value.message and "--backend ort" in info.value.message
    assert not list(tmp_path.glob("*.so"))


# The device step in a fresh process (the thread pool reads TVM_NUM_THREADS once),
# with onnx and onnxruntime made unimportable as on a board.
_DEVICE_SCRIPT = """
import json, sys
from pathlib import Path

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnx", "onnxruntime"):
            raise ImportError("blocked " + name)

sys.meta_path.insert(0, Block())
from edgert.backends import BackendOptions, get_backend
from edgert.tensors import random_feeds

backend = get_backend("tvm", BackendOptions(threads=int(sys.argv[2])))
session = backend.load(Path(sys.argv[1]))
outputs = session.run(random_feeds(session.inputs, {}, seed=0))
print(json.dumps({"options": backend.effective_options(), "shapes": [list(o.shape) for o in outputs]}))
"""


@pytest.mark.slow
def test_device_load_needs_no_onnx_and_sets_threads(small_cnn: Path, cache_dir: Path) -> None:
    library = compile_onnx(small_cnn, resolve_target("host"), cache_dir)
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    for threads in (1, 2):
        done = subprocess.run([sys.executable, "-c", _DEVICE_SCRIPT, str(library), str(threads)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["shapes"] == [[1, 5], [1, 8, 16, 16]]
        assert report["options"]["threads"] == threads
        assert report["options"]["TVM_NUM_THREADS"] == str(threads)
        assert '"kind": "llvm"' in report["options"]["target"]


def test_library_without_signature_is_a_bundle_error(tmp_path: Path) -> None:
    library = tmp_path / "model.so"
    library.write_bytes(b"\x7fELF")
    with pytest.raises(BundleError) as info:
        TvmBackend().load(library)
    assert info.value.fields["path"] == str(library.with_suffix(".json"))


def test_other_suffix_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        TvmBackend().load(tmp_path / "model.tflite")


def test_the_device_session_does_not_compile(small_cnn: Path) -> None:
    with pytest.raises(ModelError, match="compile it on the host first"):
        TvmBackend().load(small_cnn)


def test_a_cross_target_is_refused_before_compiling_for_this_machine(small_cnn: Path,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot run on this machine"):
        compile_for("tvm", small_cnn, BackendOptions(target="aarch64", cache_dir=tmp_path))
    assert not list(tmp_path.iterdir())


def test_unknown_target_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        resolve_target("riscv")


@pytest.mark.parametrize("spec, message", [
    ({"kind": "llvm", "mcpu": "nope-cpu"}, "LLVM does not know CPU 'nope-cpu'"),
    ({"kind": "llvm", "mcpu": "cortex-a72"}, 'needs its "mtriple" too'),  # an arm CPU, x86 triple
    ({"kind": "llvm", "mtriple": "nonsense-linux-gnu"}, "no target for triple 'nonsense-linux-gnu'"),
    ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": ""}, "LLVM does not know CPU ''"),
    ({"kind": "cuda"}, 'needs "kind": "llvm", not \'cuda\''),
    ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+bogus"]},
     "LLVM does not know feature 'bogus'"),
    ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+avx2"]}, "LLVM does not know feature 'avx2'"),
    ({"kind": "llvm", "mattr": ["avx2"]}, "must be \"\\+feature\" or"),
    ({"kind": "llvm", "mattr": "+avx2"}, "must be a list"),
])
def test_a_target_tvm_would_not_build_for_a_cpu_is_refused_in_one_line(
        spec: dict[str, str], message: str, capfd: pytest.CaptureFixture[str]) -> None:
    """TVM accepted these; LLVM then logged an error per compiled function and built for a
    generic CPU, and the bundle recorded the CPU it was not built for."""
    if spec.get("mcpu") == "cortex-a72" and platform.machine() != "x86_64":
        pytest.skip("an arm CPU is this machine's own")
    with pytest.raises(UsageError, match=message):
        resolve_target(json.dumps(spec))
    err = capfd.readouterr().err
    assert "Error" not in err and "not a recognized feature" not in err  # nothing from LLVM's log
    assert resolve_target(json.dumps({"kind": "llvm", "mcpu": "cortex-a72", "mtriple": "aarch64-linux-gnu"}))
    assert resolve_target(json.dumps({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                      "mattr": ["+neon", "-fullfp16", "+dotprod"]}))


def _truncate(library: Path) -> None:
    library.write_bytes(library.read_bytes()[:100])


def _flip_a_byte(library: Path) -> None:
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF
    library.write_bytes(bytes(data))


def _garble_sidecar(library: Path) -> None:
    library.with_suffix(".json").write_text('{"garbage": 1')


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, _garble_sidecar])
def test_a_damaged_cache_entry_is_compiled_again_not_used(small_cnn: Path, tmp_path: Path,
                                                          damage, capfd: pytest.CaptureFixture[str]) -> None:
    options = BackendOptions(cache_dir=tmp_path)
    library = compile_for("tvm", small_cnn, options).path
    whole = library.read_bytes()
    damage(library)
    capfd.readouterr()
    again = compile_for("tvm", small_cnn, options)
    warning = capfd.readouterr().err
    assert again.notes["cache"] == "miss" and again.path == library
    assert warning.count("\n") == 1 and "edgert: warning: cached TVM library" in warning, warning
    assert "damaged" in warning and "compiling it again" in warning
    assert len(library.read_bytes()) == len(whole)
    assert json.loads(library.with_suffix(".json").read_text())["library_sha256"] \
        == hashlib.sha256(library.read_bytes()).hexdigest()
    assert compile_for("tvm", small_cnn, options).notes["cache"] == "hit"
    _assert_matches_ort(small_cnn, tmp_path)


def _conv_bn(path: Path, blocks: int = 3) -> Path:
    """conv -> batchnorm -> relu blocks: TVM folds the batchnorm constants by building TIR from
    Python (its ``tirx.build`` callback), where a Ctrl-C used to be swallowed."""
    rng = np.random.default_rng(0)
    inits, nodes, prev, cin = [], [], "x", 3
    for i in range(blocks):
        inits += [_weights(rng, f"w{i}", (16, cin, 3, 3))]
        inits += [numpy_helper.from_array((rng.random(16) + 0.5).astype(np.float32), f"{k}{i}")
                  for k in ("s", "b", "m", "v")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{i}", f"s{i}", f"b{i}", f"m{i}", f"v{i}"], [f"n{i}"]),
                  helper.make_node("Relu", [f"n{i}"], [f"r{i}"])]
        prev, cin = f"r{i}", 16
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 16, 32, 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.slow
def test_ctrl_c_inside_a_tvm_callback_stops_the_compile(tmp_path: Path) -> None:
    """A real SIGINT, delivered while TVM's constant folding is in its Python build callback."""
    import tvm

    model = _conv_bn(tmp_path / "conv_bn.onnx")
    build = tvm.get_global_func("tirx.build")
    signalled: list[int] = []

    def build_after_ctrl_c(*args: object) -> object:
        if not signalled:
            signalled.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return build(*args)

    tvm.register_global_func("tirx.build", build_after_ctrl_c, override=True)
    # a suite started in the background (`cmd &`) inherits SIGINT ignored: Ctrl-C as a terminal has it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            compile_for("tvm", model, BackendOptions(cache_dir=tmp_path / "cache"))
    finally:
        signal.signal(signal.SIGINT, previous)
        tvm.register_global_func("tirx.build", build, override=True)
    assert signalled


@pytest.mark.slow
def test_ctrl_c_during_edgert_compile_always_aborts(tmp_path: Path) -> None:
    """SIGINT to a real `edgert compile --backend auto` at several points of its TVM compile:
    every run that got it ends in `edgert: aborted`, 130, no bundle. The points are fractions
    of an uninterrupted run here, not fixed seconds, so a slow machine is not a problem."""
    import time

    model = _conv_bn(tmp_path / "conv_bn.onnx", blocks=6)

    def start(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "edgert", "compile", str(model), "-o",
                                 str(tmp_path / f"{name}.edgert"), "--backend", "auto", "--quiet",
                                 "--cache-dir", str(tmp_path / name)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True,  # SIGINT as a terminal gives it, even when the
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # suite's is ignored

    began = time.monotonic()
    assert start("whole").wait() == 0
    whole = time.monotonic() - began
    interrupted = 0
    for step in range(1, 10):
        proc = start(f"cut{step}")
        time.sleep(whole * step / 10)
        if proc.poll() is not None:
            proc.communicate()
            continue  # it finished first
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=600)
        if proc.returncode == -signal.SIGINT and (tmp_path / f"cut{step}.edgert").exists():
            continue  # it had finished and was exiting: Python's teardown no longer handles SIGINT
        interrupted += 1
        # 130, or killed by the SIGINT during the interpreter's exit after saying so: $? 130 either way
        assert proc.returncode in (130, -signal.SIGINT) and err.strip().splitlines()[-1:] == ["edgert: aborted"], \
            (step, proc.returncode, err)
        assert not (tmp_path / f"cut{step}.edgert").exists()
    assert interrupted >= 5


@pytest.mark.slow
def test_one_session_shared_by_threads_gives_each_its_own_result(tmp_path: Path) -> None:
    """The relax VM is not re-entrant: four threads running one session used to raise
    ``reg < frame->register_file.size()`` or get another thread's values."""
    import threading

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["sum"]), helper.make_node("Identity", ["x"], ["same"])], "two_outputs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("x", "y")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("sum", "same")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "two_outputs.onnx")
    session = get_backend("tvm").load(compile_for("tvm", tmp_path / "two_outputs.onnx",
                                                  BackendOptions(cache_dir=tmp_path)).path)
    failures: list[str] = []

    def worker(k: int) -> None:
        for i in range(1000):
            x, y = np.full((2, 3), k + 1.0, np.float32), np.full((2, 3), float(i), np.float32)
            try:
                total, same = session.run({"x": x, "y": y})
                if not (np.array_equal(total, x + y) and np.array_equal(same, x)):
                    failures.append(f"thread {k} run {i}: wrong result")
            except BackendError as exc:
                failures.append(f"thread {k} run {i}: {exc}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
