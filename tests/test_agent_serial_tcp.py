"""The agent on a real pty serial line (with a corrupting proxy) and on TCP with a token."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgert
from edgert.device_agents import protocol
from edgert.device_agents.channel import Channel
from edgert.device_agents.framing import DATA, ReliableTransport, encode_frame
from edgert.device_agents.transports import SerialTransport
from edgert.devices.client import AgentClient
from agent_env import start_agent, stop
from conftest import make_matmul_model, run_cli
from serial_line import Line
from ports import listening_port


def test_bench_over_a_corrupting_serial_line(tmp_path):
    line = Line(flip_rate=2e-4, drop_rate=1e-4, seed=7)
    agent = start_agent("--serial", line.end_a, "--store", str(tmp_path / "store"),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
        out = tmp_path / "r.json"
        proc = run_cli("bench", str(model), "--device", f"serial://{line.end_b}?baud=921600",
                       "--runs", "25", "--json", str(out), "--quiet", timeout=300)
        assert proc.returncode == 0, proc.stderr
        r = json.loads(out.read_text())
        assert r["device"]["transport"] == "serial"
        assert len(r["samples_ms"]) == 25
        assert line.proxy.flipped > 0 and line.proxy.dropped > 0  # the line really was damaged
    finally:
        stop(agent)
        line.close()


def test_a_host_that_first_reads_a_dead_agent_links_hello_opens_a_session_with_the_live_one(tmp_path):
    """An agent's serial link beacons its hello until a host answers and, after its retries, starts
    over with a new link epoch; a host connecting later can find the old epoch's hellos queued in
    its tty. The handshake must move on to the live agent instead of failing."""
    line = Line()
    host_tty = SerialTransport.open(line.end_b)  # opening flushes the tty: queue the stale frames after
    stale = protocol.encode(protocol.hello(edgert.__version__, protocol.Capabilities(arch="stale")))
    os.write(line.fds[2], encode_frame(DATA, 0x5EED, 0, 0, stale) * 3)
    agent = start_agent("--serial", line.end_a, "--store", str(tmp_path / "store"),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with AgentClient(Channel(ReliableTransport(host_tty, role="host")), "serial") as client:
            assert client.capabilities.arch == platform.machine()
            assert "device" in client.call("device.info")
    finally:
        stop(agent)
        line.close()


def test_tcp_agent_refuses_a_wrong_token_and_keeps_serving(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("correct-horse-battery-staple\n")
    agent = start_agent("--listen", "127.0.0.1:0", "--token-file", str(token),
                        "--store", str(tmp_path / "store"), stdout=subprocess.DEVNULL)
    try:
        port = listening_port(agent)  # the port the agent bound, read back from the kernel
        model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-right-token-at-all")
        monkeypatch.setenv("EDGERT_TOKEN_FILE", str(wrong))
        refused = run_cli("bench", str(model), "--device", f"tcp://127.0.0.1:{port}", "--runs", "3")
        assert refused.returncode != 0 and "refused the token" in refused.stderr
        monkeypatch.setenv("EDGERT_TOKEN_FILE", str(token))
        out = tmp_path / "r.json"
        ok = run_cli("bench", str(model), "--device", f"tcp://127.0.0.1:{port}", "--runs", "10",
                     "--json", str(out), "--quiet")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(out.read_text())["device"]["transport"] == "tcp"
    finally:
        stop(agent)


def test_the_agent_keeps_engine_logs_inside_its_store(tmp_path: Path, monkeypatch) -> None:
    """A LiteRT bench through a TCP agent wrote ~/.cache/edgert/logs/litert.log, outside the store."""
    pytest.importorskip("ai_edge_litert")
    token = tmp_path / "token"
    token.write_text("a-token-long-enough-for-the-agent\n")
    monkeypatch.setenv("EDGERT_TOKEN_FILE", str(token))
    home = tmp_path / "agent-home"
    env = {var: str(home / sub) for var, sub in (("XDG_STATE_HOME", "state"), ("XDG_DATA_HOME", "share"),
                                                 ("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"))}
    store = tmp_path / "store"
    agent = start_agent("--listen", "127.0.0.1:0", "--token-file", str(token), "--store", str(store),
                        stdout=subprocess.DEVNULL, env=env)
    try:
        proc = run_cli("bench", "zoo:resnet.tflite", "--backend", "tflite", "--runs", "3", "--warmup", "1",
                       "--device", f"tcp://127.0.0.1:{listening_port(agent)}")
        assert proc.returncode == 0, proc.stderr
    finally:
        stop(agent)
    assert (store / "cache" / "logs" / "litert.log").is_file()
    assert not (home / "cache").exists()


def test_a_terminated_tcp_agent_restores_the_emulated_level_its_session_set(tmp_path: Path, monkeypatch) -> None:
    """SIGTERM (systemctl stop) while a TCP session's sweep ran at an emulated level: the
    session's thread could not install the sweep's handler, so the CPU throttle stayed, and a
    restarted agent did not replay the emulated domain's journal either."""
    import signal
    import time

    from edgert.device_agents.emulated import EmulatedDomain

    if not EmulatedDomain().available():
        pytest.skip("no writable cgroup with cpu bandwidth control")
    token = tmp_path / "token"
    token.write_text("a-token-long-enough-for-the-agent\n")
    monkeypatch.setenv("EDGERT_TOKEN_FILE", str(token))
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    agent = start_agent("--listen", "127.0.0.1:0", "--token-file", str(token), "--store", str(tmp_path / "store"),
                        stdout=subprocess.DEVNULL, env=env)
    sweep = child = None
    try:
        port = listening_port(agent)
        sweep = subprocess.Popen([sys.executable, "-m", "edgert", "sweep", "zoo:resnet", "--emulated", "0.2",
                                  "--min-time", "20", "--max-time", "30", "--idle", "0",
                                  "--device", f"tcp://127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        child = Path("/", EmulatedDomain()._layout()[1], f"edgert-sweep-{agent.pid}")  # the agent's cgroup
        def measuring() -> bool:  # the level applied and the agent moved into it
            try:
                return bool((child / "cgroup.procs").read_text().split())
            except OSError:
                return False

        deadline = time.monotonic() + 60
        while not measuring() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert measuring(), "the sweep never reached its emulated level"
        time.sleep(0.5)  # into the measurement
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        assert not child.exists()
        assert not list((tmp_path / "state" / "edgert").glob("*.json"))  # both journals undone
    finally:
        if sweep is not None:
            sweep.kill()
            sweep.wait()
        stop(agent)
        if child is not None and child.exists():
            child.rmdir()  # what the old code left: the machine's other tests must not run throttled


def test_an_empty_model_is_refused_before_uploading(tmp_path, monkeypatch):
    """bench and push of a 0-byte file on a device said 'no upload of artifact e3b0c44298fc to
    finish': the host sends no chunk for it."""
    token = tmp_path / "token"
    token.write_text("a-token-long-enough-for-the-agent\n")
    monkeypatch.setenv("EDGERT_TOKEN_FILE", str(token))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    agent = start_agent("--listen", "127.0.0.1:0", "--token-file", str(token),
                        "--store", str(tmp_path / "store"), stdout=subprocess.DEVNULL)
    from conftest import with_external_weights

    split = with_external_weights(make_matmul_model(tmp_path / "m.onnx", symbolic=False), tmp_path / "split")
    np.save(tmp_path / "x.npy", np.ones((1, 64), np.float32))
    try:
        device = f"tcp://127.0.0.1:{listening_port(agent)}"
        for command in (("bench", str(empty), "--runs", "3"), ("push", str(empty))):
            proc = run_cli(*command, "--device", device)
            assert proc.returncode == 1 and proc.stderr == f"edgert: error: {empty} is empty (0 bytes): not a model\n"
        for command in (("bench", str(split), "--runs", "3"), ("run", str(split), "--input", "x=x.npy", "-o", "o.npz")):
            proc = run_cli(*command, "--device", device, cwd=tmp_path)  # the device would get no weights
            assert proc.returncode != 0 and "keeps its weights in m.onnx.data beside it" in proc.stderr, proc.stderr
    finally:
        stop(agent)
    assert not list((tmp_path / "store" / "objects").iterdir())
