"""One serial agent serves any number of host sessions, one after another (issue 16, case 1)."""
from __future__ import annotations

import json

import pytest

from edgert.device_agents.channel import Channel
from edgert.device_agents.framing import decode_frame
from edgert.devices.address import parse_url
from edgert.devices.client import AgentClient
from edgert.devices.connect import open_client
from conftest import make_matmul_model, run_cli, wait_until
from serial_line import Line
from fault_agents import agent_log, start_agent, stop


def test_ten_consecutive_sessions_then_push_and_bench(tmp_path):
    line = Line()
    agent = start_agent(tmp_path, "--serial", line.end_a)
    device = f"serial://{line.end_b}"
    try:
        for n in range(10):
            proc = run_cli("device", "info", "--device", device, "--json", str(tmp_path / "info.json"),
                           timeout=120)
            assert proc.returncode == 0, f"session {n + 1}: {proc.stderr}"
            assert json.loads((tmp_path / "info.json").read_text())["device"]["transport"] == "serial"
        model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
        pushed = run_cli("push", str(model), "--device", device, timeout=120)
        assert pushed.returncode == 0, pushed.stderr
        out = tmp_path / "r.json"
        bench = run_cli("bench", str(model), "--device", device, "--runs", "5", "--json", str(out),
                        "--quiet", timeout=300)
        assert bench.returncode == 0, bench.stderr
        assert len(json.loads(out.read_text())["samples_ms"]) == 5
        log = agent_log(tmp_path)
        assert log.count("session opened") == 12 and log.count("ended: closed by the host") == 12, log
    finally:
        stop(agent)
        line.close()


def test_a_vanished_host_and_an_idle_one_do_not_keep_the_agent(tmp_path):
    """A host that dies without a goodbye is replaced by the next one; an idle session ends."""
    line = Line()
    agent = start_agent(tmp_path, "--serial", line.end_a, "--idle-timeout", "1")
    device = f"serial://{line.end_b}"
    try:
        ghost = AgentClient(Channel(line.open(line.end_b, "host")), "serial")  # never says goodbye
        ghost.call("ping")
        wait_until(lambda: "ended: nothing received for 1 s" in agent_log(tmp_path), 30, "the idle timeout")
        ghost.channel.close()
        proc = run_cli("device", "info", "--device", device, timeout=120)
        assert proc.returncode == 0, proc.stderr
        killed = run_python_session_killed_midway(device)
        assert killed.returncode != 0
        proc = run_cli("device", "info", "--device", device, timeout=120)
        assert proc.returncode == 0, proc.stderr
    finally:
        stop(agent)
        line.close()


def run_python_session_killed_midway(device: str):
    """A host process that opens a session and exits hard (no goodbye, link left mid-session)."""
    from conftest import run_python

    return run_python(
        "import os\n"
        "from edgert.devices.address import parse_url\n"
        "from edgert.devices.connect import open_client\n"
        f"client = open_client(parse_url({device!r}))\n"
        "client.call('ping')\n"
        "os._exit(3)\n", timeout=120)


def intact_frames(wire: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """The serial link frames in ``wire`` that arrived whole: (type, src epoch, dst, seq, payload)."""
    return [frame for raw in wire.split(b"\0") if raw and (frame := decode_frame(raw)) is not None]


def beacon_epochs(line: Line) -> int:
    """How many agent link epochs the bridge is holding frames of."""
    return len({src for _, src, *_ in intact_frames(line.proxy.held())})


def test_hellos_a_bridge_kept_from_earlier_agent_epochs_do_not_stop_sessions(tmp_path):
    """A serial-to-TCP bridge (ser2net, socat) keeps what the board wrote while no host was
    connected: hello beacons of agent link epochs that gave up since. Here the host's first
    frame reaches the agent before the kept frames reach the host (the order that failed every
    run), so the host reads them all ahead of the live agent's answer. Before an unbound host
    ignored unaddressed frames, host and agent then kept restarting each other's link epoch
    until ``session.open`` gave up (the labgrid serial place failed about half its runs)."""
    line = Line()
    line.proxy.hold_a()  # the bridge has no client yet
    agent = start_agent(tmp_path, "--serial", line.end_a)
    device = f"serial://{line.end_b}"
    try:
        wait_until(lambda: beacon_epochs(line) >= 2, 120, "beacons of two agent link epochs")
        proc = run_cli("device", "info", "--device", device, timeout=120)
        assert proc.returncode == 0, proc.stderr + agent_log(tmp_path)

        line.proxy.hold_a()  # the host left; the agent beacons again, with new epochs
        wait_until(lambda: beacon_epochs(line) >= 2, 120, "beacons of two more agent link epochs")
        stale = len(intact_frames(line.proxy.held()))
        with open_client(parse_url(device)) as client:
            assert "device" in client.call("device.info")
            stats = client.channel.transport.stats
        assert stats.ignored_frames >= stale > 0  # each stale frame was dropped, none acted on
        # the agent logs the end after its answer to the goodbye has reached us
        wait_until(lambda: agent_log(tmp_path).count("ended: closed by the host") == 2, 30, "two ends logged")
        assert agent_log(tmp_path).count("session opened") == 2
    finally:
        stop(agent)
        line.close()


def test_a_host_killed_during_a_measurement_is_taken_over_by_the_next(tmp_path):
    """The agent's heartbeat thread heard of the new host first; the measurement went on and its
    error reply for the dead host became the new host's first message ('expected a hello from
    the agent, got a 'error' message'). A socat pty pair, as the report's line was: it keeps
    what the agent writes while no host is there."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    if shutil.which("socat") is None:
        pytest.skip("needs socat (apt-get install socat)")
    ends = tmp_path / "agent-end", tmp_path / "host-end"
    bridge = subprocess.Popen(["socat", f"pty,raw,echo=0,link={ends[0]}", f"pty,raw,echo=0,link={ends[1]}"],
                              stderr=subprocess.DEVNULL)
    wait_until(lambda: all(e.exists() for e in ends), 10, "socat's ptys")
    agent = start_agent(tmp_path, "--serial", str(ends[0]), "--baud", "921600")
    device = f"serial://{ends[1]}?baud=921600"
    try:
        assert run_cli("push", "zoo:resnet", "--device", device, timeout=120).returncode == 0
        for round_ in range(3):
            bench = subprocess.Popen([sys.executable, "-m", "edgert", "bench", "zoo:resnet", "--device", device,
                                      "--min-time", "30", "--max-time", "40", "--quiet"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            opened = agent_log(tmp_path).count("session opened")
            wait_until(lambda: agent_log(tmp_path).count("session opened") > opened, 60, "the bench's session")
            time.sleep(2 + 2 * round_)  # into the measurement: heartbeats and progress are flowing
            os.kill(bench.pid, signal.SIGKILL)
            bench.wait()
            proc = run_cli("device", "info", "--device", device, timeout=120)
            assert proc.returncode == 0, f"round {round_ + 1}: {proc.stderr}"
        assert "a new host took over the link" in agent_log(tmp_path)
    finally:
        stop(agent)
        bridge.kill()
        bridge.wait()
