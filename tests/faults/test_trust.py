"""The agent, not the host, decides which sysfs tree and which power meters it uses (issue 16, case 8)."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from edgert.device_agents import serve
from edgert.device_agents.agent import Agent
from edgert.device_agents.store import ArtifactStore
from conftest import make_matmul_model, run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"
TOKEN = "correct-horse-battery-staple"


@pytest.fixture
def device(tmp_path, monkeypatch):
    """A TCP agent (port 0) whose operator fixed its sysfs root and one allowed meter."""
    root = tmp_path / "board"
    shutil.copytree(FIXTURES / "jetson_orin", root, symlinks=True)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    agent = Agent(ArtifactStore(tmp_path / "store"), sysfs_root=str(root),
                  allowed_meters=("meter+line:///dev/edgert-test-meter",))
    ready = threading.Event()
    threading.Thread(target=serve.serve_tcp, daemon=True, args=(agent, "127.0.0.1", 0, TOKEN, ready)).start()
    assert ready.wait(10)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    env = {"EDGERT_TOKEN_FILE": str(token), "XDG_STATE_HOME": str(tmp_path / "host-state")}
    return f"tcp://127.0.0.1:{ready.port}", root, env


def test_device_info_reads_the_agents_root_and_refuses_another(device, tmp_path):
    url, root, env = device
    other = tmp_path / "other"
    shutil.copytree(FIXTURES / "raspberry_pi4", other, symlinks=True)
    out = tmp_path / "info.json"
    ok = run_cli("device", "info", "--device", url, "--json", str(out), env=env)
    assert ok.returncode == 0, ok.stderr
    assert any(r["rail"] == "VDD_IN" for r in json.loads(out.read_text())["power"])  # the Orin fixture
    same = run_cli("device", "info", "--device", url, "--sysfs-root", str(root), env=env)
    assert same.returncode == 0, same.stderr
    refused = run_cli("device", "info", "--device", url, "--sysfs-root", str(other), env=env)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        f"edgert: error: this agent reads and writes sysfs under {root} (its --sysfs-root); "
        f"a host may not choose another root ({str(other)!r})"]


def test_a_sweep_may_name_neither_another_root_nor_an_unlisted_meter(device, tmp_path):
    url, root, env = device
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    base = ["sweep", str(model), "--device", url, "--cpu-freqs", "1510400", "--cpu-policy", "policy0",
            "--runs", "3", "--idle", "0", "--quiet"]
    proc = run_cli(*base, "--sysfs-root", str(tmp_path), env=env)
    assert proc.returncode != 0 and "a host may not choose another root" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = run_cli(*base, "--power", "meter+line:///dev/ttyUSB7", env=env)
    assert proc.returncode != 0 and "does not allow the power meter 'meter+line:///dev/ttyUSB7'" in proc.stderr
    assert "--allow-meter" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = run_cli(*base, "--power", "meter+line:///dev/edgert-test-meter", env=env)  # allowed: it tries it
    assert proc.returncode != 0 and "does not allow" not in proc.stderr and "edgert-test-meter" in proc.stderr
    proc = run_cli(*base, "--power", "none", env=env)  # the agent's own root, untouched by the host
    assert proc.returncode == 0, proc.stderr
