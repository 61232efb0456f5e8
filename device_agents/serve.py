"""How the agent is reached: stdio (what SSH runs), a serial line, or TCP with a shared token."""
from __future__ import annotations

import hmac
import socket
import sys
import threading
from pathlib import Path

from edgert.device_agents import protocol
from edgert.device_agents.agent import Agent
from edgert.device_agents.channel import Channel
from edgert.device_agents.framing import ReliableTransport
from edgert.device_agents.transports import SerialTransport, StdioTransport, TcpTransport, TransportClosed
from edgert.errors import DeviceError, EdgertError, TransportError, UsageError

AUTH_TIMEOUT_S = 10.0


def serve_stdio(agent: Agent) -> None:
    """One session on stdin/stdout; returns when the host closes the stream."""
    channel = Channel(StdioTransport())
    try:
        agent.serve(channel)
    except TransportClosed:
        return  # the host went away: the session is over
    finally:
        channel.close()


def serve_serial(agent: Agent, device: str, baud: int) -> None:
    """Serve host sessions on a serial line until the device node goes away.

    The link layer detects and repairs corruption. A host that starts a new session restarts
    the link (served on the same link); a link that gave up retrying is reopened.
    """
    while True:
        link = ReliableTransport(SerialTransport.open(device, baud))
        try:
            while True:
                try:
                    agent.serve(Channel(link))
                except TransportClosed as exc:
                    if not exc.fields.get("peer_restarted"):
                        raise
        except TransportClosed:
            raise  # the serial device itself vanished
        except TransportError as exc:
            sys.stderr.write(f"edgert agent: serial link lost ({exc.message}); reopening\n")
        finally:
            link.close()


def read_token(path: Path) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read token file {path}: {exc}") from exc
    if len(token) < 16:
        raise UsageError(f"the token in {path} is too short (use at least 16 characters)")
    return token


def serve_tcp(agent: Agent, host: str, port: int, token: str,
              ready: threading.Event | None = None, max_sessions: int | None = None) -> None:
    """Accept connections one at a time; each must authenticate with the token first.

    A wrong token gets an error reply and the connection is closed; the agent keeps listening.
    """
    with socket.create_server((host, port)) as server:
        if ready is not None:
            ready.port = server.getsockname()[1]  # type: ignore[attr-defined]
            ready.set()
        served = 0
        while max_sessions is None or served < max_sessions:
            conn, peer = server.accept()
            served += 1
            channel = Channel(TcpTransport.from_socket(conn, f"tcp {peer[0]}:{peer[1]}"))
            try:
                if _authenticate(channel, token):
                    agent.serve(channel)
            except EdgertError as exc:
                sys.stderr.write(f"edgert agent: session from {peer[0]} ended: {exc.message}\n")
            finally:
                channel.close()


def _authenticate(channel: Channel, token: str) -> bool:
    message = channel.recv(timeout=AUTH_TIMEOUT_S)
    given = message.get("params", {}).get("token") if message.get("kind") == "request" else None
    if message.get("method") == "auth" and isinstance(given, str) and \
            hmac.compare_digest(given.encode(), token.encode()):
        channel.send(protocol.response(message["id"], {"ok": True}))
        return True
    channel.send(protocol.error(message.get("id"), DeviceError(
        "wrong or missing token: the agent refuses this connection", reason="auth")))
    return False
