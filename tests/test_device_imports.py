"""Device-side code imports and runs with numpy, msgpack and one engine: no compiler, onnx,
paramiko, torch or plotting libraries."""
import json

from conftest import make_matmul_model, run_cli, run_python

HOST_ONLY = ("onnx", "tvm", "paramiko", "torch", "scipy", "matplotlib", "safetensors", "ai_edge_litert")


def test_device_modules_import_without_host_packages():
    proc = run_python(
        "import edgert.device_agents.agent, edgert.device_agents.serve, edgert.device_agents.sweep, edgert.device_agents.meter\n"
        "import edgert.runner, edgert.execute, edgert.devices.execute, edgert.dynamic.runtime, edgert.backends.ort, edgert.backends.tvm, edgert.backends.tflite\n"
        "import edgert.variants\n"
        "print('ok')\n", block=HOST_ONLY)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_bench_runs_with_only_onnxruntime(tmp_path):
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(model), "--runs", "5", "--json", str(out), "--quiet", block=HOST_ONLY)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["latency_ms"]["n"] == 5


def test_run_on_this_machine_needs_only_onnxruntime(tmp_path):
    """``edgert run --device local`` is the agent's artifact.run in-process: device code only."""
    import numpy as np

    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    np.savez(tmp_path / "cases.npz", **{"a/x": x, "b/x": -x})
    proc = run_cli("run", str(model), "--cases", str(tmp_path / "cases.npz"), "-o",
                   str(tmp_path / "out.npz"), block=HOST_ONLY)
    assert proc.returncode == 0, proc.stderr
    out = np.load(tmp_path / "out.npz")
    assert sorted(out.files) == ["a/z", "b/z"] and (out["a/z"] >= 0).all()
    assert not np.array_equal(out["a/z"], out["b/z"])
