"""Anything a user can type or pass ends in one line and a non-zero exit (issue 16, case 7)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import make_matmul_model, run_cli
from sshd import sshd_available

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"


def one_line_error(proc, *needles: str) -> None:
    assert proc.returncode not in (0, 130), (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgert: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_matmul_model(tmp_path_factory.mktemp("m") / "m.onnx")  # input x[N, 64]


@pytest.fixture(scope="module")
def result_file(tmp_path_factory, model):
    out = tmp_path_factory.mktemp("r") / "r.json"
    proc = run_cli("bench", str(model), "--shape", "N=2", "--runs", "5", "--quiet", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_output_paths_are_checked_before_anything_runs(tmp_path, tmp_path_factory, option):
    """The model does not even exist: the bad output path must be what is reported."""
    missing_model = str(tmp_path / "not-there.onnx")
    a_file = tmp_path_factory.mktemp("elsewhere") / "a-file"
    a_file.write_text("")
    for bad, why in ((tmp_path, "is a directory"), (a_file / "r.json", "cannot be written"),
                     (Path("/proc/version"), "cannot be written")):
        one_line_error(run_cli("bench", missing_model, option, str(bad)), option, why)
    assert sorted(os.listdir(tmp_path)) == []  # the probe left nothing behind


def test_a_missing_output_folder_is_created_like_the_writers_do(tmp_path, model):
    """The README's quick start writes results/quickstart.json into a fresh clone."""
    out = tmp_path / "results" / "r.json"
    proc = run_cli("bench", str(model), "--shape", "N=2", "--runs", "3", "--quiet", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["latency_ms"]["n"] == 3


@pytest.mark.parametrize("shape, why", [
    ("N=-3", "1..2147483647"), ("N=0", "1..2147483647"), ("N=1e11", "whole number"),
    ("N=100000000000", "1..2147483647"), ("M=2", "no symbolic dimension 'M'"), ("N", "NAME=VALUE")])
def test_bad_shape_values_are_usage_errors(model, shape, why):
    one_line_error(run_cli("bench", str(model), "--shape", shape, "--runs", "2", "--quiet"), why)


def test_compare_refuses_files_that_are_not_results(tmp_path, result_file):
    text, binary, listed = tmp_path / "t.txt", tmp_path / "b.json", tmp_path / "l.json"
    text.write_text("not json at all\n")
    binary.write_bytes(bytes(range(256)) * 4)
    listed.write_text("[1, 2]")
    for bad, why in ((text, "not JSON"), (binary, "not text"), (listed, "not an edgert result"),
                     (tmp_path / "missing.json", "cannot read")):
        one_line_error(run_cli("compare", str(bad), str(result_file)), bad.name, why)


def test_report_refuses_binary_and_inconsistent_results(tmp_path, result_file):
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    one_line_error(run_cli("report", str(binary), "-o", str(tmp_path / "r.html")), "b.json", "not text")
    data = json.loads(result_file.read_text())
    p50 = data["latency_ms"]["p50"]
    data["latency_ms"]["ci95"] = [p50 + 1, p50 + 2]  # a CI above its own median
    bad = tmp_path / "badci.json"
    bad.write_text(json.dumps(data))
    one_line_error(run_cli("report", str(bad), "-o", str(tmp_path / "r.html")), "badci.json",
                   "does not contain its median")


def test_validate_with_a_missing_or_broken_reference(tmp_path, model):
    bundle = tmp_path / "m.edgert"
    assert run_cli("compile", str(model), "--backend", "ort", "-o", str(bundle)).returncode == 0
    one_line_error(run_cli("validate", str(bundle), "--reference", str(tmp_path / "gone.onnx"),
                           "--random", "1", "--shape", "N=2"), "gone.onnx", "does not exist")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    one_line_error(run_cli("validate", str(bundle), "--reference", str(junk), "--random", "1",
                           "--shape", "N=2"), "junk.onnx")


@pytest.mark.skipif(not sshd_available(), reason="needs OpenSSH's sshd")
def test_a_garbage_ssh_key_is_one_line(tmp_path, sshd):
    key = tmp_path / "key"
    key.write_bytes(os.urandom(600))
    one_line_error(run_cli("device", "info", "--device", sshd.url, "--ssh-key", str(key),
                           "--known-hosts", str(sshd.known_hosts)), "SSH key", "not a private key")


def test_a_sweep_that_measured_nothing_fails(tmp_path, model):
    root = tmp_path / "board"
    shutil.copytree(FIXTURES / "jetson_nano", root, symlinks=True)
    out = tmp_path / "s.json"
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    proc = run_cli("sweep", str(model), "--shape", "N=2", "--cpu-freqs", "102000", "--cpu-policy", "policy0",
                   "--sysfs-root", str(root), "--runs", "2", "--idle", "0", "--power", "none",
                   "--json", str(out), env=env)
    assert proc.returncode not in (0, 130), proc.stdout
    assert "Traceback" not in proc.stderr and "measured no setting" in proc.stderr.splitlines()[-1]
    assert json.loads(out.read_text())["points"][0]["error"]  # the errors are still written down
