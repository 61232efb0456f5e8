"""Sweeps on one device take turns on the DVFS journal (issue 16, case 6)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgert.device_agents.dvfs import exclusive, replay_if_idle
from conftest import make_matmul_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"


def _sweep_cmd(model: Path, root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "edgert", "sweep", str(model), "--cpu-freqs", "1479000",
            "--cpu-policy", "policy0", "--sysfs-root", str(root), "--runs", "20", "--idle", "1",
            "--power", "none", "--json", str(out)]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}  # one device: one journal


def _journal(tmp_path: Path) -> Path:
    return tmp_path / "state" / "edgert" / "dvfs-journal.json"


def test_a_sweep_refuses_while_another_holds_the_journal(tmp_path):
    root = tmp_path / "board"
    shutil.copytree(FIXTURES / "jetson_nano", root, symlinks=True)
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    with exclusive(_journal(tmp_path)):
        proc = subprocess.run(_sweep_cmd(model, root, tmp_path / "s.json"), capture_output=True, text=True,
                              env=_env(tmp_path), timeout=300)
        assert replay_if_idle(_journal(tmp_path)) == 0  # an agent starting now leaves it to the holder
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"edgert: error: another sweep (pid {os.getpid()}) is changing clocks on this device "
        f"(lock {_journal(tmp_path)}.lock): run one sweep at a time"]
    assert not (tmp_path / "s.json").exists()


def test_two_sweeps_started_together_never_trip_over_each_other(tmp_path):
    root = tmp_path / "board"
    shutil.copytree(FIXTURES / "jetson_nano", root, symlinks=True)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    procs = [subprocess.Popen(_sweep_cmd(model, root, tmp_path / f"s{i}.json"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(tmp_path)) for i in range(2)]
    outcomes = [(proc.wait(300), proc.stderr.read()) for proc in procs]
    for code, err in outcomes:
        assert "Traceback" not in err, err
        assert code == 0 or "run one sweep at a time" in err.strip().splitlines()[-1], err
    assert any(code == 0 for code, _ in outcomes)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # all restored
    assert not _journal(tmp_path).exists() and not list(_journal(tmp_path).parent.glob("*.tmp"))
