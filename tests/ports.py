"""Loopback ports for test servers without the pick-a-free-port-and-hope race.

A server either binds port 0 itself and the test reads the port back from the kernel
(``listening_port``: the port the server process really listens on, so a foreign listener
on the same port is never mistaken for it), or, for servers that refuse port 0 (OpenSSH),
the caller retries on a bind failure. A board that is "down" gets a ``closed_port``: bound
but never listening, so connecting is refused and nobody else can take the port meanwhile.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from typing import Iterator

import psutil

LOOPBACK = "127.0.0.1"


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on at 127.0.0.1 (or on every address)."""
    try:
        conns = psutil.Process(pid).net_connections("tcp")
    except psutil.NoSuchProcess:
        return set()
    return {c.laddr.port for c in conns
            if c.status == psutil.CONN_LISTEN and c.laddr.ip in (LOOPBACK, "0.0.0.0", "::")}


def listening_port(proc: subprocess.Popen, port: int | None = None, timeout: float = 60) -> int:
    """Wait until ``proc`` listens (on ``port``, or on the one port it chose); return the port.

    Raises ``ServerExited`` when the process ends first (a bind failure, for a fixed port).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerExited(f"{proc.args[0]} exited with {proc.returncode} before listening")
        found = listening_ports(proc.pid)
        if port in found or (port is None and len(found) == 1):
            return port or found.pop()
        time.sleep(0.05)
    raise TimeoutError(f"{proc.args[0]} did not listen within {timeout:.0f} s")


class ServerExited(RuntimeError):
    """The server process ended before it listened."""


def free_port() -> int:
    """A port free right now, for servers that cannot bind port 0; retry on a bind failure."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the context lasts."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))  # bound, never listen(): a SYN gets a reset
        yield s.getsockname()[1]
