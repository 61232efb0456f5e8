"""The agent reached through a real sshd on 127.0.0.1: benchmarks, uploads, and failures."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent_env import stdio_agent_command
from conftest import make_matmul_model, run_cli
from sshd import sshd_available

pytestmark = pytest.mark.skipif(not sshd_available(), reason="needs OpenSSH's sshd (apt-get install openssh-server)")


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store"


def agent_cmd(store: Path, pidfile: Path | None = None) -> str:
    cmd = stdio_agent_command(store)
    return f"echo $$ > {pidfile}; exec {cmd}" if pidfile else cmd


def device_args(sshd, store: Path, pidfile: Path | None = None) -> list[str]:
    return ["--device", sshd.url, "--ssh-key", str(sshd.client_key),
            "--known-hosts", str(sshd.known_hosts), "--agent-cmd", agent_cmd(store, pidfile)]


def address(sshd, store: Path, pidfile: Path | None = None):
    from edgert.devices.address import parse_url

    return parse_url(sshd.url).replace(ssh_key=sshd.client_key, known_hosts=sshd.known_hosts,
                                       agent_cmd=agent_cmd(store, pidfile))


def test_bench_over_ssh_writes_the_same_result_file(tmp_path, sshd, store):
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(model), "--runs", "30", "--json", str(out), "--quiet",
                   *device_args(sshd, store))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["schema"] == "edgert.result/2"
    assert r["device"]["transport"] == "ssh"
    assert len(r["samples_ms"]) == 30 and r["latency_ms"]["n"] == 30
    assert r["latency_ms"]["ci95"][0] <= r["latency_ms"]["p50"] <= r["latency_ms"]["ci95"][1]
    # the model went into the agent's content-addressed store
    assert (store / "objects" / r["model"]["sha256"]).is_file()


def test_unknown_host_key_is_refused_by_default(tmp_path, sshd, store):
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = device_args(sshd, store)
    args[args.index("--known-hosts") + 1] = str(empty)
    proc = run_cli("bench", str(model), "--runs", "3", *args)
    assert proc.returncode != 0
    assert "unknown SSH host key" in proc.stderr and "SHA256:" in proc.stderr
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1" in proc.stderr
    accepted = run_cli("bench", str(model), "--runs", "3", "--quiet", "--insecure-accept-host-key", *args)
    assert accepted.returncode == 0, accepted.stderr
    assert "accepting unverified SSH host key" in accepted.stderr


def test_interrupted_upload_resumes_with_only_missing_chunks(tmp_path, sshd, store):
    from edgert.devices import client as client_mod
    from edgert.devices.connect import open_client
    from edgert.errors import DeviceError
    from edgert.hashing import sha256_file

    blob = tmp_path / "big.bin"
    blob.write_bytes(np.random.default_rng(0).bytes(12 * client_mod.CHUNK_BYTES + 123))
    addr = address(sshd, store)
    first = open_client(addr)

    def cut_after_two_chunks(done: int, total: int) -> None:
        if done >= 2 * client_mod.CHUNK_BYTES:
            first.channel.transport.close()  # the link drops mid-upload

    with pytest.raises(DeviceError):
        first.upload(blob, on_progress=cut_after_two_chunks)
    size, chunk = blob.stat().st_size, client_mod.CHUNK_BYTES
    offsets = []
    with open_client(addr) as second:
        held = second.call("store.status", {"sha256": sha256_file(blob)})["received"]
        # what arrived before the cut is kept (uploads are pipelined, so possibly a few chunks more)
        assert 2 * chunk <= held < size and held % chunk == 0
        sha = second.upload(blob, on_progress=lambda done, total: offsets.append(done))
    # only the missing chunks crossed the link the second time
    assert offsets == [*range(held + chunk, size, chunk), size]
    assert sha256_file(store / "objects" / sha) == sha


def test_agent_killed_during_measurement(tmp_path, sshd, store):
    import subprocess

    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False, size=256)
    pidfile = tmp_path / "agent.pid"
    out = tmp_path / "r.json"
    proc = subprocess.Popen(  # far more runs than fit in the test: it ends only by the kill
        [sys.executable, "-m", "edgert", "bench", str(model), "--runs", "10000000",
         "--json", str(out), *device_args(sshd, store, pidfile)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3)  # well into the measurement
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert time.monotonic() - killed_at < 35  # within the silence timeout
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgert: error: the connection to the agent closed"), err
    assert not out.exists()  # no partial result looks valid


def test_agent_refuses_bad_requests_and_keeps_serving(tmp_path, sshd, store):
    from edgert.device_agents import protocol
    from edgert.devices.connect import open_client
    from edgert.errors import ProtocolError, UsageError

    with open_client(address(sshd, store)) as client:
        with pytest.raises(ProtocolError, match="speaks protocol 99"):
            client.call("session.open", {"protocol": 99, "edgert_version": "9.9"})
        with pytest.raises(ProtocolError, match="unknown request 'format_disk'"):
            client.call("format_disk")
        with pytest.raises(ProtocolError, match="not a sha256"):
            client.call("store.status", {"sha256": "../../etc/passwd"})
        with pytest.raises(UsageError, match="bad file suffix"):
            client.call("bench.run", {"sha256": "0" * 64, "suffix": "/../../../tmp/x"})
        # an oversized frame is read, thrown away and refused; the stream stays in step
        body = b"\x00" * (protocol.MAX_FRAME_BYTES + 1)
        client.channel.transport.write(protocol.HEADER.pack(len(body)) + body, 60)
        with pytest.raises(ProtocolError, match="refused a"):
            client.call("ping")
        assert "monotonic_ns" in client.call("ping")
    assert not (tmp_path / "x").exists()


def test_push_then_bench_reuses_the_upload(tmp_path, sshd, store):
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    proc = run_cli("push", str(model), *device_args(sshd, store))
    assert proc.returncode == 0, proc.stderr
    objects = list((store / "objects").iterdir())
    assert len(objects) == 1
    mtime = objects[0].stat().st_mtime_ns
    from edgert.devices.connect import open_client

    with open_client(address(sshd, store)) as client:
        sent = []
        client.upload(model, on_progress=lambda done, total: sent.append(done))
    assert sent == []  # already complete: nothing re-sent
    assert objects[0].stat().st_mtime_ns == mtime


def test_device_info_over_ssh(tmp_path, sshd, store):
    fixture = Path(__file__).parent / "fixtures" / "sysfs" / "jetson_orin"
    out = tmp_path / "info.json"
    args = device_args(sshd, store)
    args[-1] += f" --sysfs-root {fixture}"  # the agent's own root: a host may only name the same one
    proc = run_cli("device", "info", "--sysfs-root", str(fixture), "--json", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(out.read_text())
    assert info["device"]["transport"] == "ssh"
    assert any(r["rail"] == "VDD_IN" for r in info["power"])
    # The agent's CPU facts are its machine's, the rails the fixture's: labelled as such.
    assert info["fixture"] is True and info["sysfs_root"] == str(fixture)
    assert f"read from {fixture}" in " ".join(proc.stdout.split()) and "cpufreq (fixture)" in proc.stdout


def test_device_info_on_a_fixture_root_labels_the_fixture(tmp_path):
    fixture = Path(__file__).parent / "fixtures" / "sysfs" / "raspberry_pi5"
    out = tmp_path / "info.json"
    proc = run_cli("device", "info", "--sysfs-root", str(fixture), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(out.read_text())
    assert info["fixture"] is True and info["sysfs_root"] == str(fixture)
    assert "FIXTURE" in proc.stdout and "cpufreq (fixture)" in proc.stdout
    plain = run_cli("device", "info", "--json", str(tmp_path / "here.json"))
    assert plain.returncode == 0, plain.stderr
    assert json.loads((tmp_path / "here.json").read_text())["fixture"] is False and "FIXTURE" not in plain.stdout


def test_a_login_banner_before_the_agent_is_refused_at_once(tmp_path, sshd, store):
    """A line the remote shell prints before the agent starts read as a ~1.7 GB frame length:
    the host waited out its 30 s silence timeout and blamed the link."""
    args = device_args(sshd, store)
    args[-1] = f"echo Welcome to Raspberry Pi OS; printf '\\033[1mtoday\\n'; exec {args[-1]}"
    started = time.monotonic()
    proc = run_cli("device", "info", *args)
    assert time.monotonic() - started < 15
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("edgert: error: the agent command ") and "wrote non-protocol output" in line
    assert "'Welcome to Raspberry Pi OS\\n\\x1b[1mtoday\\n" in line, line
