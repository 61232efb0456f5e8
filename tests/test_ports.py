"""The test servers' ports: read back from the kernel, retried when taken, refused when closed."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

import sshd as sshd_module
from ports import ServerExited, closed_port, free_port, listening_port
from sshd import sshd_available, start_sshd

SERVER = "import socket, time; s = socket.create_server(('127.0.0.1', 0)); time.sleep(60)"


def test_a_closed_port_refuses_connections_and_cannot_be_taken():
    with closed_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))


def test_the_port_a_server_bound_is_read_back_from_the_kernel():
    proc = subprocess.Popen([sys.executable, "-c", SERVER])
    try:
        port = listening_port(proc)
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        proc.kill()
        proc.wait()


def test_a_foreign_listener_on_the_port_is_not_mistaken_for_the_server():
    with socket.create_server(("127.0.0.1", 0)) as foreign:
        port = foreign.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
        with pytest.raises(ServerExited):
            listening_port(proc, port)


@pytest.mark.skipif(not sshd_available(), reason="needs OpenSSH's sshd")
def test_sshd_moves_to_another_port_when_its_first_one_is_taken(tmp_path, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        picks = iter([busy])
        monkeypatch.setattr(sshd_module, "free_port", lambda: next(picks, None) or free_port())
        server = start_sshd(tmp_path)
        try:
            assert server.port != busy
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
                assert conn.recv(8).startswith(b"SSH-2.0")
        finally:
            server.stop()

