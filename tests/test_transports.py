"""Transports over real pipes, a real child process, real TCP sockets and a real pty with pyserial."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import tty

import pytest

from edgert.device_agents.transports import (
    PipeTransport, SerialTransport, TcpTransport, TransportClosed, TransportTimeout,
)
from edgert.errors import TransportError


@pytest.fixture
def pipes():
    """(host transport, device transport) over two os.pipe()s."""
    down_r, down_w = os.pipe()
    up_r, up_w = os.pipe()
    host, device = PipeTransport(up_r, down_w), PipeTransport(down_r, up_w)
    yield host, device
    host.close()
    device.close()


def test_pipe_round_trip_respects_max_bytes(pipes):
    host, device = pipes
    host.write(b"0123456789", 1)
    assert device.read(4, 1) == b"0123"
    assert device.read(100, 1) == b"456789"


def test_pipe_read_timeout_is_not_a_close(pipes):
    host, _ = pipes
    start = time.monotonic()
    with pytest.raises(TransportTimeout) as info:
        host.read(10, 0.05)
    assert time.monotonic() - start >= 0.05
    assert info.value.fields["reason"] == "timeout"


def test_pipe_peer_close_is_reported_as_closed(pipes):
    host, device = pipes
    host.write(b"last", 1)
    host.close()
    assert device.read(10, 1) == b"last"
    with pytest.raises(TransportClosed) as info:
        device.read(10, 1)
    assert info.value.fields["reason"] == "closed"


def test_pipe_write_times_out_when_nobody_reads(pipes):
    host, _ = pipes
    with pytest.raises(TransportTimeout) as info:
        host.write(b"x" * (4 << 20), 0.1)
    assert 0 < info.value.fields["unsent"] < 4 << 20


def test_pipe_write_to_vanished_reader_is_closed():
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    other_r, other_w = os.pipe()
    os.close(other_w)
    transport = PipeTransport(other_r, write_fd)
    with pytest.raises(TransportClosed, match="Broken pipe"):
        transport.write(b"x", 1)
    transport.close()
    with pytest.raises(TransportClosed, match="already closed"):
        transport.read(1, 0)


AGENT = textwrap.dedent("""
    from edgert.device_agents.transports import StdioTransport, TransportClosed
    link = StdioTransport()
    print("stray print from an engine library")
    while True:
        try:
            data = link.read(65536, 10)
        except TransportClosed:
            break
        link.write(data.upper(), 10)
""")


def test_stdio_transport_in_a_child_process_keeps_prints_off_the_wire():
    proc = subprocess.Popen([sys.executable, "-c", AGENT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    host = PipeTransport(proc.stdout.fileno(), proc.stdin.fileno(), close_fds=False, name="child")
    try:
        payload = bytes(range(97, 123)) * 5000
        host.write(payload, 10)
        got = b""
        while len(got) < len(payload):
            got += host.read(65536, 10)
        assert got == payload.upper()
    finally:
        proc.stdin.close()
        stderr = proc.stderr.read()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, stderr
    assert b"stray print from an engine library" in stderr


@pytest.fixture
def tcp_pair():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = TcpTransport.connect("127.0.0.1", port, timeout=5)
    conn, _ = server.accept()
    agent = TcpTransport.from_socket(conn, "agent")
    server.close()
    yield client, agent
    client.close()
    agent.close()


def test_tcp_round_trip_and_timeout(tcp_pair):
    client, agent = tcp_pair
    client.write(b"x" * 1_000_000, 5)
    got = b""
    while len(got) < 1_000_000:
        got += agent.read(1 << 20, 5)
    assert got == b"x" * 1_000_000
    with pytest.raises(TransportTimeout):
        client.read(10, 0.05)
    with pytest.raises(TransportTimeout):
        client.read(10, 0)


def test_timeouts_in_messages_are_rounded(tcp_pair, pipes):
    """What a deadline leaves showed as 'nothing received within 9.999997534999693 s'."""
    client, _ = tcp_pair
    with pytest.raises(TransportTimeout, match=r"^tcp 127\.0\.0\.1:\d+: nothing received within 0\.05 s$"):
        client.read(10, 0.0500000123)
    with pytest.raises(TransportTimeout, match=r"^pipe: nothing received within 0\.05 s$"):
        pipes[0].read(10, 0.0499999876)


def test_tcp_peer_close_is_closed_not_timeout(tcp_pair):
    client, agent = tcp_pair
    agent.close()
    with pytest.raises(TransportClosed, match="closed by peer"):
        client.read(10, 2)


def test_tcp_connect_refused_is_a_transport_error():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(TransportError, match=f"tcp 127.0.0.1:{port}: cannot connect"):
        TcpTransport.connect("127.0.0.1", port, timeout=2)


@pytest.fixture
def pty_serial():
    """(SerialTransport on the pty slave via pyserial, raw master fd)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    transport = SerialTransport.open(os.ttyname(slave), baudrate=921600)
    os.close(slave)
    yield transport, master
    transport.close()
    try:
        os.close(master)
    except OSError:
        pass


def test_serial_reads_what_the_other_end_wrote(pty_serial):
    transport, master = pty_serial
    os.write(master, b"\x00\x01binary\xff\r\n")
    time.sleep(0.05)
    assert transport.read(3, 1) == b"\x00\x01b"
    assert transport.read(100, 1) == b"inary\xff\r\n"  # raw: no CR/LF translation
    transport.write(b"\x11\x13ok\r", 1)  # XON/XOFF bytes pass through
    time.sleep(0.05)
    assert os.read(master, 100) == b"\x11\x13ok\r"


def test_serial_timeout_then_vanished_device(pty_serial):
    transport, master = pty_serial
    with pytest.raises(TransportTimeout):
        transport.read(10, 0.05)
    os.close(master)
    with pytest.raises(TransportClosed, match="read failed"):
        transport.read(10, 1)


def test_serial_url_and_missing_port():
    loop = SerialTransport.open("loop://")
    loop.write(b"echo", 1)
    assert loop.read(10, 1) == b"echo"
    loop.close()
    with pytest.raises(TransportError, match="serial /dev/does-not-exist: cannot open"):
        SerialTransport.open("/dev/does-not-exist")


def test_device_modules_import_without_host_libraries():
    code = ("import sys\n"
            "for name in ('serial', 'paramiko', 'onnx', 'tvm', 'torch'):\n"
            "    sys.modules[name] = None\n"
            "import edgert.device_agents.protocol, edgert.device_agents.transports, edgert.device_agents.framing, edgert.device_agents.store\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
