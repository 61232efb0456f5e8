"""Several artifacts timed interleaved (``bench.interleaved``, ``edgert bench A B``): here,
on a host agent over TCP and over SSH (a real sshd), as auto's device timing uses it."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import make_matmul_model, run_cli
from edgert.device_agents.interleave import block_order

RUNS, BLOCK = 12, 2


@pytest.fixture
def models(tmp_path) -> tuple[Path, Path, Path]:
    """Two copies of one model under different names, and three input cases for them."""
    a = make_matmul_model(tmp_path / "a.onnx", symbolic=False)
    b = tmp_path / "b.onnx"
    b.write_bytes(a.read_bytes())
    rng = np.random.default_rng(0)
    cases = tmp_path / "cases.npz"
    np.savez(cases, **{f"case{i}/x": rng.standard_normal((1, 64)).astype(np.float32) for i in range(3)})
    return a, b, cases


def _bench(tmp_path: Path, models: tuple[Path, Path, Path], *device: str,
           env: dict[str, str] | None = None) -> tuple[dict, dict]:
    a, b, cases = models
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(a), str(b), "--cases", str(cases), "--runs", str(RUNS),
                   "--warmup", "3", "--block-runs", str(BLOCK), "--json", str(out), "--quiet",
                   *device, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "(interleaved)" in proc.stdout and "a.onnx" in proc.stdout and "b.onnx" in proc.stdout
    return json.loads((tmp_path / "r.a.json").read_text()), json.loads((tmp_path / "r.b.json").read_text())


def _check_interleaved(ra: dict, rb: dict) -> None:
    """Both results come from one ABBA request: RUNS samples each, blocks where the order
    puts them, every case equally often, the same outputs (the same model)."""
    order = block_order(["a", "b"], RUNS // BLOCK)
    for name, r in (("a", ra), ("b", rb)):
        assert r["schema"] == "edgert.result/2" and r["settings"]["runs"] == RUNS
        assert len(r["samples_ms"]) == RUNS and len(r["warmup_ms"]) == 3
        block = r["interleaved"]
        assert block["models"] == ["a", "b"] and block["block_runs"] == BLOCK
        assert block["order"] == order
        assert block["blocks"] == [i for i, n in enumerate(order) if n == name for _ in range(BLOCK)]
        assert {c: v["n"] for c, v in r["cases_ms"].items()} == {f"case{i}": RUNS // 3 for i in range(3)}
    # runs of a and b alternate in time as the blocks say: b's first run starts after a's second
    assert ra["sample_starts_ns"][BLOCK - 1] < rb["sample_starts_ns"][0] < ra["sample_starts_ns"][BLOCK]
    assert rb["agreement"] == {"against": "a", "max_abs": 0.0, "max_rel": 0.0}
    assert ra["throughput_ips"] is None  # the other's blocks sit between a's runs
    assert ra["run_metadata"] == rb["run_metadata"] and ra["run_metadata"]["before"]["loadavg"]


def test_bench_times_several_models_interleaved_here(tmp_path, models):
    ra, rb = _bench(tmp_path, models)
    _check_interleaved(ra, rb)
    assert ra["device"]["transport"] == "local" and ra["emulated"] is False


@pytest.fixture
def tcp_agent(tmp_path):
    """(``--device`` options, env, store) of a host agent listening on TCP."""
    from agent_env import start_agent, stop
    from ports import listening_port

    token = tmp_path / "token"
    token.write_text("correct-horse-battery-staple\n")
    agent = start_agent("--listen", "127.0.0.1:0", "--token-file", str(token),
                        "--store", str(tmp_path / "store"), stdout=subprocess.DEVNULL)
    try:
        yield (("--device", f"tcp://127.0.0.1:{listening_port(agent)}"),
               {"EDGERT_TOKEN_FILE": str(token)}, tmp_path / "store")
    finally:
        stop(agent)


def test_bench_times_several_models_interleaved_on_an_agent_over_tcp(tmp_path, models, tcp_agent):
    from edgert.hashing import sha256_file

    device, env, store = tcp_agent
    ra, rb = _bench(tmp_path, models, *device, env=env)
    _check_interleaved(ra, rb)
    assert ra["device"]["transport"] == "tcp" and rb["device"] == ra["device"]
    assert (store / "objects" / sha256_file(models[0])).is_file()  # uploaded once: same bytes


def test_bench_times_several_models_interleaved_on_an_agent_over_ssh(tmp_path, models, sshd):
    from agent_env import stdio_agent_command

    device = ("--device", sshd.url, "--ssh-key", str(sshd.client_key), "--known-hosts",
              str(sshd.known_hosts), "--agent-cmd", stdio_agent_command(tmp_path / "store"))
    ra, rb = _bench(tmp_path, models, *device)
    _check_interleaved(ra, rb)
    assert ra["device"]["transport"] == "ssh"


def test_a_model_that_cannot_load_is_named_in_one_line(tmp_path, models, tcp_agent):
    device, env, _ = tcp_agent
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    proc = run_cli("bench", str(models[0]), str(broken), "--runs", "4", "--quiet", *device, env=env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    # refused here, before its upload (reading it for weights kept beside it)
    assert proc.stderr.startswith(f"edgert: error: {broken} is not an ONNX model:"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    import onnx
    from onnx import TensorProto, helper

    unknown = tmp_path / "unknown.onnx"  # ONNX, but no engine runs it: the device says which model
    onnx.save(helper.make_model(helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.nowhere")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.nowhere", 1)]), unknown)
    proc = run_cli("bench", str(models[0]), str(unknown), "--runs", "4", "--quiet", *device, env=env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("edgert: error: unknown could not be timed:"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (("--runs", "5", "--block-runs", "2"), "--runs (5) must be a whole number of --block-runs (2)"),
    (("--backend", "ort", "--backend", "null"), "several MODELs are timed with one --backend"),
    (("--scenario", "offline"), "single-stream scenario only"),
])
def test_bad_options_for_several_models_are_refused_in_one_line(tmp_path, models, args, message):
    proc = run_cli("bench", str(models[0]), str(models[1]), *args, "--quiet")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_models_with_the_same_file_name_are_refused(tmp_path, models):
    other = tmp_path / "sub"
    other.mkdir()
    twin = other / "a.onnx"
    twin.write_bytes(models[0].read_bytes())
    proc = run_cli("bench", str(models[0]), str(twin), "--quiet")
    assert proc.returncode == 2 and "distinct file names" in proc.stderr


def test_the_device_loop_refuses_a_bad_request(tmp_path, models):
    """What a peer could send wrongly: an order naming another artifact, no blocks' runs,
    duplicate names; all refused before anything is loaded."""
    from edgert.backends import BackendOptions
    from edgert.device_agents.interleave import MAX_BLOCKS, Contender, run_interleaved
    from edgert.errors import UsageError
    from edgert.settings import BenchSettings

    one = [Contender("a", models[0], "ort")]
    two = one + [Contender("b", models[1], "ort")]
    options, settings = BackendOptions(), BenchSettings(warmup_runs=0, runs=2)
    with pytest.raises(UsageError, match="not in the request"):
        run_interleaved(one, ["a", "c"], 1, settings, [], options)
    with pytest.raises(UsageError, match="block_runs >= 1"):
        run_interleaved(two, ["a", "b"], 0, settings, [], options)
    with pytest.raises(UsageError, match="at most"):
        run_interleaved(two, ["a", "b"] * MAX_BLOCKS, 1, settings, [], options)
    with pytest.raises(UsageError, match="distinct"):
        run_interleaved(one + one, ["a"], 1, settings, [], options)
    measured = run_interleaved(two, ["b", "a", "a"], 3, settings, [], options)
    assert measured["order"] == ["b", "a", "a"]
    assert measured["raw"]["a"]["blocks"] == [1, 1, 1, 2, 2, 2] and measured["raw"]["b"]["blocks"] == [0] * 3


def test_the_device_loop_imports_without_host_packages():
    from conftest import run_python
    from test_device_imports import HOST_ONLY

    proc = run_python("import edgert.device_agents.interleave\nprint('ok')\n", block=HOST_ONLY)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
