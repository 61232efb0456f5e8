"""validate, run and compile --backend auto with --device: bundles cross-compiled here for
aarch64 run on the emulated arm64 board, outputs compared with ONNX Runtime on this host.

The board is reached two ways: over SSH (qemu behind a real sshd; each session starts an
agent, about 35 s under qemu) and over TCP (one long-lived emulated agent per module, which
every zoo model's validate and run share). A host agent over TCP shows the commands on a
non-emulated device.
"""
from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from arm64 import device_args, start_tcp_agent
from conftest import REPO, run_cli

ZOO = REPO / "edgert" / "zoo" / "dynamic"
ZOO_MODELS = sorted(p.stem for p in ZOO.glob("*.onnx"))
DEFAULT = ("early_exit_cnn", "moe_top1")  # the default suite's two; the rest are slow


@pytest.fixture(scope="module")
def arm64_bundles(tmp_path_factory):
    """name -> the zoo model compiled here with TVM for aarch64 (built on first use)."""
    out = tmp_path_factory.mktemp("arm64-bundles")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            path = out / f"{name}.edgert"
            proc = run_cli("compile", str(ZOO / f"{name}.onnx"), "-o", str(path), "--backend",
                           "tvm", "--target", "aarch64", "--cache-dir", str(out / "cache"))
            assert proc.returncode == 0, proc.stderr
            built[name] = path
        return built[name]
    return get


@pytest.fixture(scope="module")
def board_tcp(arm64_root, tmp_path_factory):
    """(``--device`` options, environment) of the board's agent listening on TCP."""
    from agent_env import stop
    from ports import listening_port

    tmp = tmp_path_factory.mktemp("board-tcp")
    token = tmp / "token"
    token.write_text("correct-horse-battery-staple\n")
    agent = start_tcp_agent(arm64_root, tmp / "store", token, tmp / "agent.log")
    try:
        port = listening_port(agent, timeout=300)  # python and edgert start slowly under qemu
        yield ("--device", f"tcp://127.0.0.1:{port}"), {"EDGERT_TOKEN_FILE": str(token)}
    finally:
        stop(agent)


SHAPES = {"symbolic_batch": ("--shape", "N=3")}  # random inputs need their symbolic dims


def _validate(bundle: Path, name: str, tmp_path: Path, *device: str,
              env: dict[str, str] | None = None) -> tuple[object, dict]:
    report = tmp_path / f"{name}.json"
    proc = run_cli("validate", str(bundle), "--reference", str(ZOO / f"{name}.onnx"),
                   "--cases", str(ZOO / f"{name}.npz"), "--random", "2", "--rtol", "1e-3",
                   "--atol", "1e-4", *SHAPES.get(name, ()), "--json", str(report), *device, env=env)
    return proc, json.loads(report.read_text()) if report.exists() else {}


def _reference_outputs(name: str) -> dict[str, np.ndarray]:
    """CASE/OUTPUT -> host ONNX Runtime's output for every case of the zoo model."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(ZOO / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    grouped: dict[str, dict[str, np.ndarray]] = {}
    with np.load(ZOO / f"{name}.npz") as cases:
        for key in cases.files:
            case, _, input_name = key.rpartition("/")
            grouped.setdefault(case, {})[input_name] = cases[key]
    return {f"{case}/{out}": value for case, feeds in grouped.items()
            for out, value in zip(names, session.run(names, feeds))}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in DEFAULT else [pytest.mark.slow])
                                  for n in ZOO_MODELS])
def test_every_zoo_model_validates_and_runs_on_the_board(name, tmp_path, arm64_bundles, board_tcp):
    """validate --device passes, and run --device returns host ORT's outputs (shapes
    included: symbolic_batch's 0-d output once came back as (1,))."""
    device, env = board_tcp
    bundle = arm64_bundles(name)
    proc, report = _validate(bundle, name, tmp_path, *device, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["status"] == "pass" and report["device"]["arch"] == "aarch64"
    assert report["device"]["emulated"] is True and report["device"]["transport"] == "tcp"
    assert "[EMULATED]" in proc.stdout
    cases = np.load(ZOO / f"{name}.npz").files
    assert len(report["cases"]) == len({k.rpartition("/")[0] for k in cases}) + 2
    assert report["segments_exercised"]  # the paths came back from the board

    out = tmp_path / "out.npz"
    proc = run_cli("run", str(bundle), "--cases", str(ZOO / f"{name}.npz"), "-o", str(out),
                   *device, env=env)
    assert proc.returncode == 0, proc.stderr
    want = _reference_outputs(name)
    with np.load(out) as got:
        assert sorted(got.files) == sorted(want)
        for key, value in want.items():
            assert got[key].shape == value.shape and got[key].dtype == value.dtype, key
            np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    # a host run of the same arm64 bundle is refused: it was built for the board
    here = run_cli("validate", str(bundle), "--reference", str(ZOO / f"{name}.onnx"), "--random", "1",
                   *SHAPES.get(name, ()))
    assert here.returncode != 0 and "compiled for aarch64" in here.stderr


def _miscompile(bundle: Path, out: Path, cache: Path) -> str:
    """A consistent but wrong copy of ``bundle``: its first segment's kernel is rebuilt from
    its ONNX with one weight perturbed, and the bundle sealed again (every digest matches)."""
    from edgert.dynamic import engines
    from edgert.dynamic.bundle import Bundle, write_bundle
    from edgert.dynamic.partition import Segment

    opened = Bundle(bundle)
    manifest = opened.manifest
    members = {name: opened.read(name) for name in manifest["members"]}
    entry = manifest["segments"][0]
    model = onnx.load_from_string(members[entry["onnx"]])
    weight = max((t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
                 key=lambda t: np.prod(t.dims))
    value = onnx.numpy_helper.to_array(weight)
    weight.CopyFrom(onnx.numpy_helper.from_array(value * 1.5 + 0.1, weight.name))
    seg = Segment(entry["id"], model.SerializeToString(), entry["inputs"], entry["outputs"],
                  entry["nodes"], entry["ops"])
    observed = {d["name"]: {tuple(d["shape"])} for d in entry["input_specs"]
                if all(isinstance(x, int) and x >= 0 for x in d["shape"])}
    art = engines.prepare("tvm", seg, manifest["target"], cache, observed or None)
    assert art.members[art.artifact] != members[entry["artifact"]]
    members.update(art.members)
    write_bundle(out, manifest, members)
    Bundle(out)  # opens: the tamper is consistent, only the numbers are wrong
    return entry["id"]


def test_validate_on_the_board_fails_clearly_on_a_miscompiled_segment(tmp_path, arm64_bundles,
                                                                      sshd, arm64_root, arm64_store):
    name = "early_exit_cnn"
    bad = tmp_path / "bad.edgert"
    segment = _miscompile(arm64_bundles(name), bad, tmp_path / "cache")
    proc, report = _validate(bad, name, tmp_path, *device_args(sshd, arm64_root, arm64_store))
    assert proc.returncode == 1, proc.stderr
    assert report["status"] == "fail" and report["device"]["emulated"] is True
    assert proc.stdout.startswith("fail:") and "failed: case0: max abs error" in proc.stdout
    assert segment in report["segments_exercised"]
    assert all(not c["ok"] for c in report["cases"] if "error" not in c)  # seg 0 runs on every path


def test_run_on_the_board_returns_host_onnxruntime_outputs(tmp_path, arm64_bundles, sshd, arm64_root,
                                                          arm64_store):
    import onnxruntime as ort

    name = "early_exit_cnn"
    model, cases = ZOO / f"{name}.onnx", np.load(ZOO / f"{name}.npz")
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out, summary = tmp_path / "out.npz", tmp_path / "run.json"
    proc = run_cli("run", str(arm64_bundles(name)), "--cases", str(ZOO / f"{name}.npz"), "-o",
                   str(out), "--json", str(summary), *device_args(sshd, arm64_root, arm64_store))
    assert proc.returncode == 0, proc.stderr
    got, facts = np.load(out), json.loads(summary.read_text())
    assert facts["device"]["arch"] == "aarch64" and facts["device"]["emulated"] is True
    assert len({c["path"]["key"] for c in facts["cases"]}) == 3  # all three exits ran on the board
    names = [o.name for o in reference.get_outputs()]
    for key in cases.files:
        case = key.rpartition("/")[0]
        for out_name, want in zip(names, reference.run(None, {"x": cases[key]})):
            np.testing.assert_allclose(got[f"{case}/{out_name}"], want, rtol=1e-4, atol=1e-5)
    # the ONNX model itself on the board's onnxruntime, one --input
    np.save(tmp_path / "x.npy", cases["case2/x"])
    proc = run_cli("run", str(model), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(out),
                   *device_args(sshd, arm64_root, arm64_store))
    assert proc.returncode == 0, proc.stderr
    for out_name, want in zip(names, reference.run(None, {"x": cases["case2/x"]})):
        np.testing.assert_allclose(np.load(out)[out_name], want, rtol=1e-4, atol=1e-5)
    assert "[EMULATED]" in proc.stdout


def test_validate_on_the_board_refuses_a_tampered_segment_in_one_line(tmp_path, arm64_bundles,
                                                                     board_tcp):
    """A segment library changed after sealing (its manifest digest no longer matches) is
    refused by checksum, before anything runs, naming the member."""
    device, env = board_tcp
    name = "early_exit_cnn"
    good, bad = arm64_bundles(name), tmp_path / "tampered.edgert"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        dst.comment = src.comment  # the manifest and its digest stay as sealed
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "segments/seg_001.so":
                data = data[:4096] + bytes([data[4096] ^ 0x01]) + data[4097:]
            dst.writestr(info, data)
    proc, report = _validate(bad, name, tmp_path, *device, env=env)
    assert proc.returncode != 0 and report == {}, proc.stdout
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "'segments/seg_001.so' does not match its sha256" in proc.stderr
    proc = run_cli("run", str(bad), "--cases", str(ZOO / f"{name}.npz"), "-o",
                   str(tmp_path / "o.npz"), *device, env=env)
    assert proc.returncode != 0 and "'segments/seg_001.so' does not match" in proc.stderr
    assert not (tmp_path / "o.npz").exists()


def test_run_on_the_board_refuses_bad_inputs_in_one_line(tmp_path, arm64_bundles, board_tcp):
    device, env = board_tcp
    np.save(tmp_path / "x.npy", np.zeros((2, 2), np.float32))
    proc = run_cli("run", str(arm64_bundles("early_exit_cnn")), "--input", f"x={tmp_path / 'x.npy'}",
                   "-o", str(tmp_path / "o.npz"), *device, env=env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("edgert: error:") and "refused by the bundle" in proc.stderr


def test_compile_auto_on_the_board_times_every_candidate_there(tmp_path, sshd, arm64_root, arm64_store):
    """Every candidate is cross-built here and timed by the board's agent: the kept candidate
    files are the ones the board's store received, the manifest says where (emulated), and
    the chosen bundle validates on the board."""
    from edgert.dynamic import inspect
    from edgert.hashing import sha256_file

    name = "early_exit_cnn"
    out, kept = tmp_path / "auto.edgert", tmp_path / "candidates"
    proc = run_cli("compile", str(ZOO / f"{name}.onnx"), "-o", str(out), "--target", "aarch64",
                   "--samples", str(ZOO / f"{name}.npz"), "--keep-candidates", str(kept),
                   "--cache-dir", str(tmp_path / "cache"), *device_args(sshd, arm64_root, arm64_store))
    assert proc.returncode == 0, proc.stderr
    assert "candidates timed on" in proc.stdout and "[EMULATED]" in proc.stdout
    manifest = inspect(out)
    timed_on = manifest["timed_on"]
    assert timed_on["arch"] == "aarch64" and timed_on["emulated"] is True
    assert timed_on["transport"] == "ssh" and "QEMU" in timed_on["cpu_model"]
    auto = manifest["auto"]
    assert set(auto["measured_ms"]) == {"whole_model", "partitioned"}, auto
    assert "the device in timed_on" in auto["reason"] and "Mann-Whitney" in auto["reason"]
    _check_decision(auto, "whole_model", auto["probe_inputs"])
    received = set(p.name for p in (arm64_store / "objects").iterdir())
    candidates = sorted(kept.glob("*.edgert"))
    assert {p.name for p in candidates} >= {"whole_model.edgert", "partitioned.edgert"}
    assert {sha256_file(p) for p in candidates} <= received  # each one was uploaded and timed
    partitioned = inspect(kept / "partitioned.edgert")
    for seg in partitioned["segments"]:
        choice = seg["choice"]
        assert set(choice["measured_ms"]) == {"tvm", "ort"}, choice
        _check_decision(choice, "ort", 1)
        assert "emulated" in choice["reason"]
        for engine in ("tvm", "ort"):
            assert (kept / f"{seg['id']}.{engine}.edgert").exists()
    proc, report = _validate(out, name, tmp_path, *device_args(sshd, arm64_root, arm64_store))
    assert proc.returncode == 0 and report["status"] == "pass", proc.stdout + proc.stderr


def _check_decision(record: dict, baseline: str, inputs: int) -> None:
    """A device-timed choice (``choice`` or ``auto``) follows auto_rule on its own samples,
    which were timed interleaved: the block order and requests are recorded with them."""
    import statistics

    from edgert.device_agents.interleave import block_order
    from edgert.devices.timer import BLOCK_RUNS, EXTRA_REQUESTS, settings_for
    from edgert.dynamic.auto_rule import decide

    samples, timing = record["samples_ms"], record["timing"]
    runs = settings_for(inputs).runs
    assert timing["interleaved"] is True and timing["block_runs"] == BLOCK_RUNS
    assert 1 <= timing["requests"] <= 1 + EXTRA_REQUESTS
    assert {len(s) for s in samples.values()} == {runs * timing["requests"]}, record
    first_round = list(dict.fromkeys(timing["order"]))
    assert sorted(first_round) == sorted(samples)
    assert timing["order"] == block_order(first_round, runs // BLOCK_RUNS * timing["requests"])
    assert record["measured_ms"] == {k: statistics.median(s) for k, s in samples.items()}
    decision = decide(baseline, samples)
    assert record["chosen"] == decision.chosen and record["decision"] == decision.to_dict()


@pytest.mark.slow
def test_compile_auto_on_a_device_is_reproduced_by_the_same_bench_request(tmp_path, tcp_device):
    """The kept candidates benched together with ``request_options`` and their timing
    inputs as --cases are timed exactly as compile timed them: one interleaved request, as
    many runs in the same block order, cycling through the same inputs (whether the choice
    comes out the same is measured in benchmarks/auto_on_device.py)."""
    from edgert.devices.timer import request_options
    from edgert.dynamic import inspect

    name = "early_exit_cnn"
    out, kept = tmp_path / "auto.edgert", tmp_path / "candidates"
    proc = run_cli("compile", str(ZOO / f"{name}.onnx"), "-o", str(out), "--samples",
                   str(ZOO / f"{name}.npz"), "--keep-candidates", str(kept), *tcp_device)
    assert proc.returncode == 0, proc.stderr
    auto = inspect(out)["auto"]
    _check_decision(auto, "whole_model", auto["probe_inputs"])
    first_round = list(dict.fromkeys(auto["timing"]["order"]))
    inputs = kept / f"{first_round[0]}.inputs.npz"
    cases = sorted({key.partition("/")[0] for key in np.load(inputs).files})
    assert len(cases) == auto["probe_inputs"]
    result = tmp_path / "r.json"
    proc = run_cli("bench", *(str(kept / f"{c}.edgert") for c in first_round), "--backend", "bundle",
                   "--cases", str(inputs), *request_options(len(cases)), "--json", str(result),
                   "--quiet", *tcp_device)
    assert proc.returncode == 0, proc.stderr
    for candidate in first_round:
        benched = json.loads(result.with_name(f"r.{candidate}.json").read_text())
        runs = len(auto["samples_ms"][candidate]) // auto["timing"]["requests"]
        assert len(benched["samples_ms"]) == runs  # one request's worth
        assert benched["interleaved"]["order"] == auto["timing"]["order"][:len(benched["interleaved"]["order"])]
        assert {c: v["n"] for c, v in benched["cases_ms"].items()} == {c: runs // len(cases) for c in cases}


def test_compile_auto_for_another_target_without_a_device_refuses(tmp_path):
    proc = run_cli("compile", str(ZOO / "early_exit_cnn.onnx"), "-o", str(tmp_path / "b.edgert"),
                   "--target", "aarch64")
    assert proc.returncode == 2 and "pass --device" in proc.stderr and "pick a backend" in proc.stderr
    assert not (tmp_path / "b.edgert").exists()


@pytest.fixture
def tcp_device(tmp_path, monkeypatch):
    """``--device`` options of a host agent listening on TCP (token in EDGERT_TOKEN_FILE)."""
    from agent_env import start_agent
    from ports import listening_port
    from agent_env import stop

    token = tmp_path / "token"
    token.write_text("correct-horse-battery-staple\n")
    monkeypatch.setenv("EDGERT_TOKEN_FILE", str(token))
    agent = start_agent("--listen", "127.0.0.1:0", "--token-file", str(token),
                        "--store", str(tmp_path / "store"), stdout=subprocess.DEVNULL)
    try:
        port = listening_port(agent)  # the port the agent bound, read back from the kernel
        yield ("--device", f"tcp://127.0.0.1:{port}")
    finally:
        stop(agent)


def test_validate_and_run_over_tcp(tmp_path, tcp_device):
    """The same commands on another transport: a host agent on TCP, a host bundle."""
    name = "early_exit_cnn"
    bundle = tmp_path / "ee.edgert"
    proc = run_cli("compile", str(ZOO / f"{name}.onnx"), "-o", str(bundle), "--backend", "ort")
    assert proc.returncode == 0, proc.stderr
    proc, report = _validate(bundle, name, tmp_path, *tcp_device)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["device"]["transport"] == "tcp" and report["device"]["emulated"] is False
    assert len(report["paths"]) == 3  # the cases take all three exits on the agent
    out = tmp_path / "out.npz"
    proc = run_cli("run", str(bundle), "--cases", str(ZOO / f"{name}.npz"), "-o", str(out), *tcp_device)
    assert proc.returncode == 0, proc.stderr
    local = tmp_path / "local.npz"
    proc = run_cli("run", str(bundle), "--cases", str(ZOO / f"{name}.npz"), "-o", str(local))
    assert proc.returncode == 0, proc.stderr
    got, want = np.load(out), np.load(local)
    assert sorted(got.files) == sorted(want.files) and len(got.files) == 12
    for key in want.files:  # the same machine and engine as this process
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7)


def _tile_model(path: Path) -> Path:
    """x[N,64] -> Tile 4x along N: outputs four times the inputs' bytes."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Tile", ["x", "repeats"], ["y"], name="tile")], "tile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", 64])],
        [numpy_helper.from_array(np.array([4, 1], np.int64), "repeats")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_run_splits_cases_across_frames_and_refuses_one_too_large(tmp_path, tcp_device):
    """Five 1 MB cases with 4 MB outputs each: inputs fit one request, the agent returns the
    outputs that fit a frame and the host asks again for the rest (3 requests); one case
    whose outputs alone exceed a frame is refused in one line."""
    from edgert.device_agents.protocol import CASES_BUDGET_BYTES

    model = _tile_model(tmp_path / "tile.onnx")
    rng = np.random.default_rng(0)
    cases = {f"case{i}/x": rng.standard_normal((4000, 64)).astype(np.float32) for i in range(5)}
    assert 4 * 4000 * 64 * 4 * 2 < CASES_BUDGET_BYTES < 4 * 4000 * 64 * 4 * 3
    np.savez(tmp_path / "cases.npz", **cases)
    out = tmp_path / "out.npz"
    proc = run_cli("run", str(model), "--cases", str(tmp_path / "cases.npz"), "-o", str(out),
                   *tcp_device)
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    assert sorted(got.files) == [f"case{i}/y" for i in range(5)]
    for i in range(5):
        np.testing.assert_array_equal(got[f"case{i}/y"], np.tile(cases[f"case{i}/x"], (4, 1)))
    np.save(tmp_path / "big.npy", np.zeros((9000, 64), np.float32))  # 9.2 MB of outputs
    proc = run_cli("run", str(model), "--input", f"x={tmp_path / 'big.npy'}", "-o", str(out),
                   *tcp_device)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "above the" in proc.stderr and "budget of a protocol frame" in proc.stderr


def test_validate_reports_a_wrong_tolerance_and_a_bad_cases_file_in_one_line(tmp_path):
    bundle = ZOO / "early_exit_cnn.onnx"
    proc = run_cli("validate", str(bundle), "--reference", str(bundle), "--random", "1",
                   "--rtol", "-1")
    assert proc.returncode == 2 and proc.stderr.startswith("edgert: error: tolerances")
    bad = tmp_path / "cases.npz"
    bad.write_bytes(b"not a zip")
    proc = run_cli("run", str(bundle), "--cases", str(bad), "-o", str(tmp_path / "o.npz"))
    assert proc.returncode == 2 and "cannot read input cases" in proc.stderr
    assert "Traceback" not in proc.stderr
    text = tmp_path / "x.npy"
    text.write_text("hello\n")  # numpy called this 'pickled (object) data'
    proc = run_cli("run", str(bundle), "--input", f"x={text}", "-o", str(tmp_path / "o.npz"))
    assert proc.returncode == 2 and "it is not a .npy file" in proc.stderr and "pickled" not in proc.stderr
