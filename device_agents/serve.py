"""How the agent is reached: stdio (what SSH runs), a serial line, or TCP with a shared token."""
from __future__ import annotations

import collections
import hmac
import math
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

from edgert.device_agents import protocol
from edgert.device_agents.agent import Agent, log, start_agent
from edgert.device_agents.channel import Channel
from edgert.device_agents.dvfs import RestoreOnSignals, replay_journal
from edgert.device_agents.framing import ReliableTransport
from edgert.device_agents.sweep import journals
from edgert.device_agents.transports import (MAX_BAUD, SerialTransport, StdioTransport, TcpTransport,
                                             TransportClosed, TransportTimeout)
from edgert.errors import DeviceError, EdgertError, ProtocolError, TransportError, UsageError

AUTH_TIMEOUT_S = 3.0  # from accept to a complete auth frame
AUTH_FRAME_BYTES = 4096  # an auth request is tiny; nobody may make us buffer more before it
MAX_UNAUTHENTICATED = 16
IDLE_TIMEOUT_S = 600.0  # an opened session with no request for this long is over
MAX_IDLE_TIMEOUT_S = 7 * 86400.0  # a week; inf/NaN broke every session's socket timeout
MAX_TOKEN_BYTES = 4096


def run(*, stdio: bool = False, serial: str | None = None, baud: int = 115200,
        listen: str | None = None, token_file: Path | None = None,
        idle_timeout: float | None = IDLE_TIMEOUT_S, **agent_options: Any) -> None:
    """``edgert agent``: check the one way to serve (stdio, a serial device, or ``HOST:PORT``
    over TCP with ``token_file``), start the agent (``start_agent(**agent_options)``) and serve."""
    if sum(bool(m) for m in (stdio, serial, listen)) != 1:
        raise UsageError("choose exactly one of --stdio, --serial DEV, --listen HOST:PORT")
    host, _, port = (listen or "").rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]:PORT
    if listen and (not host or token_file is None):
        raise UsageError("--listen needs HOST:PORT and --token-file")
    if listen and not (port.isdigit() and 0 <= int(port) <= 65535):
        raise UsageError(f"--listen port {port} is not a TCP port (0-65535)")
    if serial and not 0 < baud <= MAX_BAUD:
        raise UsageError(f"--baud {baud} is not a serial line rate (1-{MAX_BAUD})")
    if idle_timeout is not None and not (math.isfinite(idle_timeout) and 0 < idle_timeout <= MAX_IDLE_TIMEOUT_S):
        raise UsageError(f"--idle-timeout must be a number of seconds up to {MAX_IDLE_TIMEOUT_S:g}, "
                         f"got {idle_timeout}")
    token = read_token(token_file) if listen and token_file is not None else ""
    agent = start_agent(**agent_options)
    RestoreOnSignals(restore_pinned).install()  # TCP sessions measure in threads, which cannot
    # engine logs (chatter.captured) and caches inside the store: the agent writes nowhere else
    os.environ.setdefault("EDGERT_CACHE", str(agent.store.root / "cache"))
    if stdio:
        serve_stdio(agent)
    elif serial:
        serve_serial(agent, serial, baud, idle_timeout)
    else:
        serve_tcp(agent, host, int(port), token, idle_timeout=idle_timeout)


def restore_pinned() -> None:
    """Undo what this device's journals hold, on SIGTERM/SIGINT/SIGHUP to the agent: a TCP
    session measures in a thread, which cannot install the sweep's own handler (a terminated
    agent left its emulated CPU throttle in place)."""
    for path in journals():
        try:
            replay_journal(path)
        except EdgertError as exc:
            log(f"could not restore after a signal: {exc.message}")


def serve_stdio(agent: Agent) -> None:
    """One session on stdin/stdout; returns when the host closes the stream."""
    channel = Channel(StdioTransport())
    try:
        agent.serve(channel)
    except TransportClosed:
        return  # the host went away: the session is over
    finally:
        channel.close()


def serve_serial(agent: Agent, device: str, baud: int, idle_timeout: float | None = IDLE_TIMEOUT_S) -> None:
    """Serve host sessions on a serial line, one after another, until the device node goes away.

    The link layer detects and repairs corruption. After each session (closed by the host, idle
    for ``idle_timeout`` s, or a link that gave up retrying) the line is reopened with a new link
    epoch and the agent beacons its hello again; the next host speaks first and gets the hello
    at once, addressed to it (framing.py, "Link epochs"). A host whose first frame arrives
    while another session is open takes the link over (the earlier host is gone: a serial line
    has one host end).
    """
    while True:
        link = ReliableTransport(SerialTransport.open(device, baud), role="agent")
        try:
            while True:
                try:
                    agent.serve(Channel(link), idle_timeout)
                    break  # the session ended: a fresh link epoch for the next host
                except TransportClosed as exc:
                    if not exc.fields.get("peer_restarted"):
                        raise
                    link.serve_new_peer()  # the old session is unwound: greet the new host
        except TransportClosed:
            raise  # the serial device itself vanished
        except TransportError:
            pass  # nobody answered the hello beacon (or a session's link died): start over
        finally:
            link.close()


def read_token(path: Path) -> str:
    """The shared secret in ``path``: a regular file (a FIFO would block, /dev/zero never ends)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            _check_regular(fd, path)
            token = os.read(fd, MAX_TOKEN_BYTES + 1).decode("utf-8").strip()
        finally:
            os.close(fd)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read token file {path}: {exc}") from exc
    if len(token) > MAX_TOKEN_BYTES:
        raise UsageError(f"the token in {path} is longer than {MAX_TOKEN_BYTES} bytes: is it the right file?")
    if len(token) < 16:
        raise UsageError(f"the token in {path} is too short (use at least 16 characters)")
    return token


def _check_regular(fd: int, path: Path) -> None:
    """Refuse a token "file" that is not one, by name (reading a directory's descriptor
    said only '[Errno 21] Is a directory: 3')."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise UsageError(f"token file {path} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise UsageError(f"token file {path} is not a regular file")


def serve_tcp(agent: Agent, host: str, port: int, token: str,
              ready: threading.Event | None = None, max_sessions: int | None = None,
              idle_timeout: float | None = IDLE_TIMEOUT_S) -> None:
    """Serve TCP connections concurrently; each must authenticate with the token first.

    Each connection has its own thread. An unauthenticated connection gets ``AUTH_TIMEOUT_S``
    to send the token in one small frame; above ``MAX_UNAUTHENTICATED`` of them the oldest is
    dropped, so idle sockets (no token needed to open one) cannot lock a real host out. An
    authenticated session ends after ``idle_timeout`` s without a request. Measurements are
    serialised by the agent itself. ``max_sessions`` (tests): stop accepting after that many
    connections and return once they are served.
    """
    pending = _Unauthenticated(MAX_UNAUTHENTICATED)
    threads: list[threading.Thread] = []
    accepted = 0
    try:
        server = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:  # in use, no such address or name
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    with server:
        if ready is not None:
            ready.port = server.getsockname()[1]  # type: ignore[attr-defined]
            ready.set()
        while max_sessions is None or accepted < max_sessions:
            conn, peer = server.accept()
            accepted += 1
            name = f"tcp {peer[0]}:{peer[1]}"
            thread = threading.Thread(target=_serve_connection, daemon=True, name=name,
                                      args=(agent, conn, name, token, pending, idle_timeout))
            thread.start()
            threads = [t for t in threads if t.is_alive()] + [thread]
    for thread in threads:
        thread.join()


class _Unauthenticated:
    """Connections still owing the token; over ``limit`` the oldest one is shut down."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._socks: collections.OrderedDict[socket.socket, str] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, sock: socket.socket, name: str) -> None:
        with self._lock:
            self._socks[sock] = name
            while len(self._socks) > self._limit:
                oldest, oldest_name = self._socks.popitem(last=False)
                log(f"{oldest_name}: dropped, {self._limit} connections were already waiting to authenticate")
                try:
                    oldest.shutdown(socket.SHUT_RDWR)  # wakes its thread's recv with end-of-stream
                except OSError:
                    pass

    def remove(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.pop(sock, None)


def _serve_connection(agent: Agent, conn: socket.socket, name: str, token: str,
                      pending: _Unauthenticated, idle_timeout: float | None) -> None:
    pending.add(conn, name)
    channel = Channel(TcpTransport.from_socket(conn, name), max_frame_bytes=AUTH_FRAME_BYTES)
    try:
        authenticated = _authenticate(channel, token)
        pending.remove(conn)
        if authenticated:
            channel.max_frame_bytes = protocol.MAX_FRAME_BYTES
            agent.serve(channel, idle_timeout)
    except EdgertError as exc:
        if not isinstance(exc, (TransportClosed, TransportTimeout)):
            log(f"{name}: {exc.message}")
    finally:
        pending.remove(conn)
        channel.close()


def _authenticate(channel: Channel, token: str) -> bool:
    """Whether the first message, within ``AUTH_TIMEOUT_S``, is an auth request with the token."""
    try:
        message = channel.recv(timeout=AUTH_TIMEOUT_S)
    except ProtocolError as exc:
        channel.send(protocol.error(None, exc), timeout=AUTH_TIMEOUT_S)
        return False
    given = message.get("params", {}).get("token") if message.get("kind") == "request" else None
    if message.get("method") == "auth" and isinstance(given, str) and \
            hmac.compare_digest(given.encode(), token.encode()):
        channel.send(protocol.response(message["id"], {"ok": True}), timeout=AUTH_TIMEOUT_S)
        return True
    channel.send(protocol.error(message.get("id"), DeviceError(
        "wrong or missing token: the agent refuses this connection", reason="auth")), timeout=AUTH_TIMEOUT_S)
    return False
