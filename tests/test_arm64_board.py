"""The emulated arm64 board end to end: an arm64 TVM bundle built here, run by the arm64 agent
under qemu-aarch64-static behind a real sshd, compared with ONNX Runtime on this host.

Every timing from the board is emulated; the tests check that it says so everywhere.
"""
from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from arm64 import BOARD_CACHE, EM_AARCH64, address, arm64_board, device_args, elf_machine
from arm64_board import recipe
from conftest import REPO, make_matmul_model, run_cli

ZOO = REPO / "edgert" / "zoo" / "dynamic"
MODEL, CASES = ZOO / "early_exit_cnn.onnx", ZOO / "early_exit_cnn.npz"



def test_board_pins_the_engines_the_host_pins():
    """The board runs the versions pyproject pins exactly (TVM and its FFI): a library
    compiled here must load there, and a difference the board shows must never be down to
    versions (the board once ran tvm-ffi 0.1.15.post2 against the host's 0.1.14.post1)."""
    import tomllib

    from packaging.requirements import Requirement

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    host = {r.name: str(r.specifier) for r in map(Requirement, extras["tvm"])
            if str(r.specifier).startswith("==")}
    board = {r.name: str(r.specifier) for r in map(Requirement, recipe.WHEELS)}
    assert host.keys() >= {"apache-tvm", "apache-tvm-ffi"}
    assert {name: board.get(name) for name in host} == host


@pytest.fixture(scope="module")
def bundle(arm64_root, tmp_path_factory) -> Path:
    """early_exit_cnn compiled on this host with TVM for aarch64 (every segment on TVM)."""
    out = tmp_path_factory.mktemp("bundle")
    path = out / "early_exit_cnn.edgert"
    proc = run_cli("compile", str(MODEL), "-o", str(path), "--backend", "tvm", "--target", "aarch64",
                   "--cache-dir", str(out / "cache"))
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.mark.slow
def test_board_python_is_arm64_and_build_is_cached(arm64_root):
    python = arm64_root / "usr" / "bin" / "python3.11"
    assert elf_machine(python.read_bytes()[:20]) == EM_AARCH64
    proc = subprocess.run([*arm64_board.python_argv(arm64_root), "-c",
                           "import platform, sys; print(platform.machine(), sys.version_info[:2])"],
                          capture_output=True, text=True, env={**os.environ, **arm64_board.python_env()},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "aarch64"
    marker = arm64_root.parent / "board.json"
    before = marker.stat().st_mtime_ns
    assert arm64_board.build(BOARD_CACHE) == arm64_root  # the second call reuses the cached root
    assert marker.stat().st_mtime_ns == before
    assert "python3.11=3.11.2" in " ".join(json.loads(marker.read_text())["debs"])


@pytest.mark.slow
def test_device_info_reports_an_emulated_aarch64_board(tmp_path, sshd, arm64_root, arm64_store):
    out = tmp_path / "info.json"
    proc = run_cli("device", "info", "--json", str(out), *device_args(sshd, arm64_root, arm64_store))
    assert proc.returncode == 0, proc.stderr
    device = json.loads(out.read_text())["device"]
    assert device["arch"] == "aarch64"
    assert device["emulated"] is True  # from the agent's --emulated, not from the host
    assert device["transport"] == "ssh"
    assert "EMULATED" in proc.stdout


@pytest.mark.slow
def test_arm64_tvm_bundle_matches_onnxruntime_on_the_host(bundle, sshd, arm64_root, arm64_store):
    import onnxruntime as ort

    from edgert.device_agents.protocol import pack_array
    from edgert.devices.connect import open_client
    from edgert.settings import BenchSettings

    with zipfile.ZipFile(bundle) as archive:
        libraries = [n for n in archive.namelist() if n.endswith(".so")]
        machines = {n: elf_machine(archive.read(n)[:20]) for n in libraries}
    assert len(libraries) == 3 and set(machines.values()) == {EM_AARCH64}, machines

    reference = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    cases = np.load(CASES)
    settings = BenchSettings(warmup_runs=0, runs=1).to_dict()
    paths = set()
    with open_client(address(sshd, arm64_root, arm64_store)) as client:
        assert client.capabilities.arch == "aarch64"
        for key in sorted(cases):
            x = cases[key]
            measured = client.bench(bundle, "bundle", {"settings": settings,
                                                        "feeds": {"x": pack_array(x)}})
            assert measured["device"]["emulated"] is True and measured["device"]["arch"] == "aarch64"
            want = reference.run(None, {"x": x})
            got = measured["first_outputs"]
            assert len(got) == len(want)
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=key)
            paths.update(measured["dynamic"]["paths"])
    assert len(paths) == 3  # the cases take all three exits, so every segment ran on the board


@pytest.mark.slow
def test_bench_through_the_board_labels_every_number_emulated(tmp_path, bundle, sshd, arm64_root,
                                                              arm64_store):
    np.save(tmp_path / "x.npy", np.load(CASES)["case4/x"])
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(bundle), "--backend", "bundle", "--runs", "5", "--warmup", "1",
                   "--input", f"x={tmp_path / 'x.npy'}", "--json", str(out), "--quiet",
                   *device_args(sshd, arm64_root, arm64_store))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["emulated"] is True and r["device"]["emulated"] is True
    assert r["device"]["arch"] == "aarch64" and "QEMU" in r["device"]["cpu_model"]
    assert r["warnings"][0].startswith("measured on an emulated device")
    assert len(r["samples_ms"]) == 5 and all(s > 0 for s in r["samples_ms"])
    assert "[EMULATED]" in proc.stdout


@pytest.mark.slow
def test_onnxruntime_runs_on_the_board(tmp_path, sshd, arm64_root, arm64_store):
    """The arm64 onnxruntime wheel (needs the root's /proc/cpuinfo under QEMU 7.2)."""
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(MODEL), "--backend", "ort", "--runs", "5", "--warmup", "1",
                   "--input", f"x={_save(tmp_path, np.load(CASES)['case0/x'])}",
                   "--json", str(out), "--quiet", *device_args(sshd, arm64_root, arm64_store))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["emulated"] is True and r["device"]["arch"] == "aarch64"
    assert r["backend"]["name"] == "ort" and len(r["samples_ms"]) == 5


@pytest.mark.slow
def test_tune_on_the_board_then_compile_with_its_records(tmp_path, sshd, arm64_root, arm64_store):
    """edgert tune --target aarch64 --device BOARD: every candidate is cross-compiled here and
    timed by the board's agent under qemu (no TVM RPC server there); the records, labelled
    emulated, then compile into an aarch64 bundle without re-tuning, and the board runs it."""
    pytest.importorskip("xgboost")
    import onnxruntime as ort

    from edgert.compilers.tvm_target import resolve_target
    from edgert.compilers.tvm_db import RECORDS, database_dir, records_emulated
    from edgert.devices.connect import open_client
    from edgert.dynamic.bundle import Bundle

    model = make_matmul_model(tmp_path / "mm.onnx", symbolic=False)  # one fused matmul+relu task
    db, env = tmp_path / "db", {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    objects = arm64_store / "objects"
    before = set(objects.iterdir()) if objects.exists() else set()
    proc = run_cli("tune", str(model), "--db", str(db), "--target", "aarch64", "--trials", "4",
                   "--trials-per-iter", "4", "--seed", "0", "--json", str(tmp_path / "tune.json"),
                   *device_args(sshd, arm64_root, arm64_store), env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "tune.json").read_text())
    assert summary["emulated"] is True and summary["trials"] == 4
    assert "[EMULATED" in proc.stdout
    [task] = summary["tasks"]
    assert task["name"] == "fused_matmul_relu" and task["best_us"] > 0
    candidates = [p for p in set(objects.iterdir()) - before if elf_machine(p.read_bytes()[:20])]
    assert len(candidates) >= 1 and {elf_machine(p.read_bytes()[:20]) for p in candidates} == {EM_AARCH64}
    records = database_dir(db, resolve_target("aarch64")) / RECORDS
    lines = records.read_text().splitlines()
    assert len(lines) == 4 and any(json.loads(line)[1][1] for line in lines)  # run_secs from the board
    assert records_emulated(db, resolve_target("aarch64"))

    bundle = tmp_path / "mm.edgert"
    proc = run_cli("compile", str(model), "-o", str(bundle), "--backend", "tvm", "--target", "aarch64",
                   "--tuning-db", str(db), "--cache-dir", str(tmp_path / "build"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert records.read_text().splitlines() == lines  # applying the records measured nothing new
    assert "1/1 TVM kernels tuned (records timed under emulation)" in proc.stdout
    [segment] = Bundle(bundle).manifest["segments"]
    assert segment["engine"] == "tvm" and segment["tuning"]["tuned_functions"] == ["fused_matmul_relu"]
    assert segment["tuning"]["emulated"] is True
    with zipfile.ZipFile(bundle) as archive:
        [library] = [n for n in archive.namelist() if n.endswith(".so")]
        assert elf_machine(archive.read(library)[:20]) == EM_AARCH64

    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    with open_client(address(sshd, arm64_root, arm64_store)) as client:
        assert client.capabilities.emulated is True
        [got] = client.run_model(bundle, "bundle", {"x": x})
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    proc = run_cli("bench", str(model), "--backend", "tvm", "--tuning-db", str(db),
                   *device_args(sshd, arm64_root, arm64_store), env=env)
    assert proc.returncode != 0 and "compile a bundle here" in proc.stderr


def _save(directory: Path, array: np.ndarray) -> Path:
    path = directory / "x.npy"
    np.save(path, array)
    return path
