"""`edgert lut --device`: the block table measured on a device through a real agent.

The agent runs over a real sshd on 127.0.0.1 (stdio) or on TCP, on a fixture sysfs tree
(its clocks and rails are files: the table must say so) or on the emulated DVFS domain
(cgroup CPU quota: labelled emulated). Timing values are whatever this machine gives; the
tests check where the work ran, what was stored and how it is labelled.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from agent_env import agent_command, current_xdg, start_agent, stop
from conftest import run_cli, run_python
from edgert.device_agents.emulated import EmulatedDomain
from ports import listening_port
from test_discovery import board, tree
from test_variants_ofa import _cnn

from edgert.hashing import sha256_file
from edgert.variants import aiofile, lut, lut_run, search, tables
from edgert.variants import config as C

CURRENT_KHZ = 1510400  # the jetson_orin fixture's scaling_cur_freq: the only clock that "takes" on files
HOST_ONLY = ("onnx", "tvm", "torch", "paramiko", "scipy", "matplotlib", "safetensors")
FAST = ("--window-ms", "1", "--repeats", "2", "--checks", "2")


def _ssh_args(sshd, agent: str) -> list[str]:
    return ["--device", sshd.url, "--ssh-key", str(sshd.client_key), "--known-hosts", str(sshd.known_hosts),
            "--agent-cmd", agent]


def test_lut_on_a_device_over_ssh_is_measured_there_and_labelled_fixture(tmp_path: Path, sshd) -> None:
    root = board(tmp_path, "jetson_orin")
    before = tree(root)
    path = _cnn(tmp_path / "cnn.aio")
    store, state = tmp_path / "store", tmp_path / "state"
    agent = agent_command("--stdio", "--store", str(store), "--sysfs-root", str(root),
                          env={**current_xdg(), "XDG_STATE_HOME": str(state)})
    proc = run_cli("lut", str(path), "--cpu-freqs", f"{CURRENT_KHZ},729600", "--power", "auto", *FAST,
                   *_ssh_args(sshd, agent))
    assert proc.returncode == 0, proc.stderr
    assert "FIXTURE sysfs" in proc.stdout and "left out policy0 729600 kHz" in proc.stderr
    table = lut.read(path)
    assert table["device"]["transport"] == "ssh" and table["device"]["fixture_sysfs"] is True
    assert table["device"]["sysfs_root"] == str(root) and table["fixture"] is True
    assert table["frequencies"] == [CURRENT_KHZ] and "fixture sysfs: clock not real" in table["labels"][0]
    assert table["energy_status"] == "fixture" and all("energy_mj" in b for b in table["blocks"])
    assert any("not a measurement" in w for w in table["warnings"])
    # the agent timed every width of every block and every check, and restored the fixture clock
    widths = C.candidate_widths(aiofile.read_meta(path))
    for block in table["blocks"]:
        n = 1
        for g in block["groups"]:
            n *= len(widths[g])
        assert len(block["latency_ms"]) == n and all(len(v) == 1 for v in block["latency_ms"].values())
    assert len(table["checks"]) == 3 + 2 and all(c["measured_ms"][0] > 0 for c in table["checks"])
    assert tree(root) == before and not (state / "edgert/dvfs-journal.json").exists()
    # what went to the device: a copy of the file holding the job and the checks' graphs, in its store
    job_files = [p for p in (store / "objects").iterdir() if p.is_file() and p.name != sha256_file(path)]
    assert job_files, list((store / "objects").iterdir())
    job = tables.read(job_files[0], lut_run.JOB)
    assert job["schema"] == lut_run.JOB_SCHEMA and len(job["checks"]) == 5
    # the table is usable at once: search at the measured clock
    result = search.search(path, latency_ms=1e6, frequency=CURRENT_KHZ)
    assert result["best"] is not None and result["frequencies"] == [CURRENT_KHZ]


def test_lut_on_a_device_refuses_a_foreign_sysfs_root_and_no_setting(tmp_path: Path, sshd) -> None:
    root = board(tmp_path, "jetson_orin")
    path = _cnn(tmp_path / "cnn.aio")
    agent = agent_command("--stdio", "--store", str(tmp_path / "store"), "--sysfs-root", str(root))
    other = run_cli("lut", str(path), "--cpu-freqs", str(CURRENT_KHZ), "--sysfs-root", str(tmp_path), *FAST,
                    *_ssh_args(sshd, agent))
    assert other.returncode != 0 and "may not choose another root" in other.stderr
    assert "Traceback" not in other.stderr
    none = run_cli("lut", str(path), "--cpu-freqs", "729600", *FAST, *_ssh_args(sshd, agent))
    assert none.returncode != 0 and "measured no setting" in none.stderr and "did not take" in none.stderr
    assert lut_run.JOB not in aiofile.read(path).tensors and tables.LUT not in aiofile.read(path).tensors


def test_lut_needs_one_kind_of_setting_and_a_reachable_device(tmp_path: Path) -> None:
    path = _cnn(tmp_path / "cnn.aio")
    both = run_cli("lut", str(path), "--cpu-freqs", "600000", "--emulated", "1.0", "--device", "tcp://127.0.0.1:9")
    assert both.returncode == 2 and "choose one of" in both.stderr
    gone = run_cli("lut", str(path), "--emulated", "1.0", "--device", "tcp://127.0.0.1:9", *FAST)
    assert gone.returncode != 0 and len(gone.stderr.strip().splitlines()) == 1, gone.stderr


@pytest.mark.skipif(not EmulatedDomain().available(), reason="needs a writable cgroup with cpu bandwidth control")
def test_lut_on_a_tcp_agent_at_emulated_levels_is_labelled_emulated(tmp_path: Path, monkeypatch) -> None:
    token = tmp_path / "token"
    token.write_text("a-token-long-enough-for-the-agent\n")
    monkeypatch.setenv("EDGERT_TOKEN_FILE", str(token))
    agent = start_agent("--listen", "127.0.0.1:0", "--token-file", str(token), "--store", str(tmp_path / "store"),
                        "--emulated", stdout=subprocess.DEVNULL)
    try:
        port = listening_port(agent)
        path = _cnn(tmp_path / "cnn.aio")
        proc = run_cli("lut", str(path), "--emulated", "1.0,0.5", "--window-ms", "25", "--repeats", "1",
                       "--checks", "1", "--device", f"tcp://127.0.0.1:{port}", "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert "EMULATED" in proc.stdout
    finally:
        stop(agent)
    table = lut.read(path)
    assert table["emulated"] is True and table["device"]["emulated"] is True
    assert table["device"]["transport"] == "tcp" and table["frequencies"] == [0.5, 1.0]
    assert table["frequency_unit"] == "emulated fraction" and table["labels"] == ["emulated 0.5", "emulated 1"]


def test_a_device_without_onnx_times_a_job_file(tmp_path: Path) -> None:
    """The board side needs ORT and numpy only: a job file is timed with onnx, torch and TVM's
    compiler unimportable, and its raw times assemble into a table here."""
    path = _cnn(tmp_path / "cnn.aio")
    job_path = tmp_path / "cnn.lutjob.aio"
    settings = lut.LutSettings(window_ms=1.0, repeats=1, checks=2)
    job = lut.write_job(path, job_path, settings)
    out = tmp_path / "raw.json"
    proc = run_python(
        "import json\nfrom edgert.variants import lut_run\nfrom edgert.variants.frequency import FrequencySetting\n"
        "raw = lut_run.run_file(sys.argv[1], [FrequencySetting(1.0, label='here')])\n"
        "open(sys.argv[2], 'w').write(json.dumps(raw))\n", str(job_path), str(out), block=HOST_ONLY)
    assert proc.returncode == 0, proc.stderr
    raw = json.loads(out.read_text())
    raw.update(unit="none", emulated=False, sysfs_root="/")
    assert len(raw["entries_ms"]) == sum(len(b["entries"]) for b in job.spec["blocks"])
    table = lut.assemble(job, raw, {"transport": "local"}, settings)
    assert table["fixture"] is False and table["labels"] == ["here"] and len(table["checks"]) == 3 + 2
    assert all(v[0] >= 0 for b in table["blocks"] for v in b["latency_ms"].values())
    assert tables.LUT not in aiofile.read(path).tensors  # the job never touched the user's file
    # a file without a job is refused in one line
    bare = run_python("from edgert.variants import lut_run\nlut_run.run_file(sys.argv[1], [])\n", str(path))
    assert bare.returncode != 0 and "holds no lut job" in bare.stderr


def test_lut_at_clocks_on_an_emulator_agent_is_labelled_emulated(tmp_path: Path, monkeypatch) -> None:
    """An agent started with --emulated (a board emulator) timing clock settings: the table and the
    Pareto sets say emulated, and the summary says the clocks are not real."""
    token = tmp_path / "token"
    token.write_text("a-token-long-enough-for-the-agent\n")
    monkeypatch.setenv("EDGERT_TOKEN_FILE", str(token))
    root = board(tmp_path, "jetson_orin")
    agent = start_agent("--listen", "127.0.0.1:0", "--token-file", str(token), "--store", str(tmp_path / "store"),
                        "--emulated", "--sysfs-root", str(root), stdout=subprocess.DEVNULL,
                        env={**current_xdg(), "XDG_STATE_HOME": str(tmp_path / "state")})
    try:
        path = _cnn(tmp_path / "cnn.aio")
        proc = run_cli("lut", str(path), "--cpu-freqs", str(CURRENT_KHZ), *FAST, "--sysfs-root", str(root),
                       "--device", f"tcp://127.0.0.1:{listening_port(agent)}", "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert "EMULATED device: clocks not real" in proc.stdout
    finally:
        stop(agent)
    assert lut.read(path)["emulated"] is True
    assert search.search(path, latency_ms=1e6, frequency=CURRENT_KHZ)["emulated"] is True
