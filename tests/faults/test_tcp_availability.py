"""A TCP agent stays available to a real host while idle or silent sockets hang on (issue 16, case 2)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from edgert.device_agents import protocol, serve
from edgert.device_agents.agent import Agent
from edgert.device_agents.channel import Channel
from edgert.device_agents.store import ArtifactStore
from edgert.device_agents.transports import TcpTransport
from edgert.devices.address import parse_url
from edgert.devices.connect import open_client
from conftest import make_matmul_model, wait_until

TOKEN = "correct-horse-battery-staple"


@pytest.fixture
def tcp_agent(tmp_path):
    """An agent serving TCP on 127.0.0.1 port 0 in this process: (address, agent)."""
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    agent = Agent(ArtifactStore(tmp_path / "store"))
    ready = threading.Event()
    threading.Thread(target=serve.serve_tcp, daemon=True,
                     args=(agent, "127.0.0.1", 0, TOKEN, ready), kwargs={"idle_timeout": 2.0}).start()
    assert ready.wait(10)
    return parse_url(f"tcp://127.0.0.1:{ready.port}").replace(token_file=token), agent


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_host_gets_in_at_once_past_twenty_idle_unauthenticated_sockets(tcp_agent):
    addr, _ = tcp_agent
    idle = [socket.create_connection((addr.host, addr.port)) for _ in range(20)]
    try:
        started = time.monotonic()
        with open_client(addr) as client:
            assert client.call("ping")["monotonic_ns"] > 0
        assert time.monotonic() - started < 5.0  # the bar; before, it waited out every idle socket
        # and none of the idle sockets is kept: the oldest were dropped, the rest time out
        wait_until(lambda: all(_closed_by_peer(s) for s in idle), serve.AUTH_TIMEOUT_S + 10,
                   "the agent to drop every unauthenticated socket")
    finally:
        for sock in idle:
            sock.close()


def _silent_session(addr) -> Channel:
    """Authenticate and open a session, then never send anything again."""
    channel = Channel(TcpTransport.connect(addr.host, addr.port))
    channel.send(protocol.request(0, "auth", {"token": TOKEN}))
    assert channel.recv(10)["kind"] == "response"
    assert channel.recv(10)["kind"] == "hello"
    channel.send(protocol.request(1, "session.open", {"protocol": protocol.PROTOCOL_VERSION,
                                                      "edgert_version": "test"}))
    assert channel.recv(10)["kind"] == "response"
    return channel


def test_a_silent_authenticated_host_neither_blocks_others_nor_stays_forever(tcp_agent, tmp_path):
    addr, _ = tcp_agent
    silent = _silent_session(addr)
    try:
        model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
        with open_client(addr) as client:
            assert client.upload(model)
        wait_until(lambda: _eof(silent), 30, "the idle session to be closed")
    finally:
        silent.close()


def _eof(channel: Channel) -> bool:
    try:
        channel.recv(0.05)
    except Exception as exc:  # noqa: BLE001 - only "closed" counts, checked below
        return getattr(exc, "fields", {}).get("reason") == "closed"
    return False


def test_two_hosts_measuring_at_once_take_turns_and_both_succeed(tcp_agent, tmp_path):
    addr, _ = tcp_agent
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    env = {**os.environ, "EDGERT_TOKEN_FILE": str(addr.token_file)}
    outs = [tmp_path / f"r{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "edgert", "bench", str(model), "--device",
                               f"tcp://{addr.host}:{addr.port}", "--runs", "20", "--json", str(out), "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for out in outs]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    for out in outs:
        assert len(json.loads(out.read_text())["samples_ms"]) == 20


def test_measurements_on_one_agent_never_overlap(tmp_path):
    """The agent's own lock: two sessions' bench.run handlers are never inside at the same time."""
    agent = Agent(ArtifactStore(tmp_path / "store"))
    inside, overlaps = [], []

    def slow(params, progress):
        inside.append(1)
        if len(inside) > 1:
            overlaps.append(1)
        time.sleep(0.3)
        inside.pop()
        return {}

    agent.handlers["bench.run"] = slow
    sent = []

    class Sink:
        def send(self, message, timeout=None):
            sent.append(message)

    threads = [threading.Thread(target=agent.handle, args=(Sink(), protocol.request(i, "bench.run", {})))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps and sorted(m["id"] for m in sent if m["kind"] == "response") == [0, 1, 2]
