"""Open an agent session for a device address (SSH, serial or TCP)."""
from __future__ import annotations

import contextlib
import os
from typing import Any

from edgert.device_agents import protocol
from edgert.device_agents.channel import Channel, NotProtocol
from edgert.device_agents.transports import SocketTransport, TcpTransport, Transport
from edgert.devices.address import DeviceAddress
from edgert.devices.client import AgentClient
from edgert.errors import DeviceError, EdgertError, UsageError


SSH_WRITE_SLICE = 256 << 10  # paramiko's sendall re-slices its argument per packet: keep it small


class _SshTransport(SocketTransport):
    """A paramiko channel running the agent command; closing it also closes the SSH connection."""

    def write(self, data: bytes, timeout: float | None) -> None:
        view = memoryview(data)
        for start in range(0, len(view), SSH_WRITE_SLICE):
            super().write(bytes(view[start:start + SSH_WRITE_SLICE]), timeout)

    def __init__(self, client: Any, channel: Any, name: str) -> None:
        super().__init__(channel, name=name)
        self._client = client
        self._channel = channel

    def remote_stderr(self) -> str:
        """What the agent command printed on stderr so far (why it failed to start)."""
        chunks = []
        while self._channel.recv_stderr_ready():
            chunks.append(self._channel.recv_stderr(65536))
        return b"".join(chunks).decode(errors="replace").strip()

    def close(self) -> None:
        super().close()
        self._client.close()


def _ssh(addr: DeviceAddress) -> _SshTransport:
    from edgert.devices.ssh import connect

    client = connect(addr)
    try:
        channel = client.get_transport().open_session()
        channel.exec_command(addr.agent_cmd)
    except Exception as exc:
        client.close()
        raise DeviceError(f"cannot start the agent on {addr.host}: {exc}") from exc
    return _SshTransport(client, channel, f"ssh {addr.host}")


def _authenticate(channel: Channel, addr: DeviceAddress) -> None:
    """TCP agents want the shared token before they say hello."""
    token_file = addr.token_file or os.environ.get("EDGERT_TOKEN_FILE")
    if not token_file:
        raise UsageError("tcp devices need a token: set token_file in edgert.toml or EDGERT_TOKEN_FILE")
    from edgert.device_agents.serve import read_token

    channel.send(protocol.request(0, "auth", {"token": read_token(token_file)}))
    if channel.recv(timeout=10.0, opening=True).get("kind") != "response":
        raise DeviceError(f"the agent at {addr.host}:{addr.port} refused the token", host=addr.host)


def open_client(addr: DeviceAddress) -> AgentClient:
    """An ``AgentClient`` session; errors name the device and what to check.

    A ``labgrid://`` place is acquired for the session and released when the client closes.
    """
    if addr.scheme == "local":
        raise UsageError("the local device runs in-process and needs no agent session")
    if addr.scheme == "labgrid":
        from edgert.devices.labgrid import acquired

        place = contextlib.ExitStack()
        reached = place.enter_context(acquired(addr))  # type: ignore[arg-type]
        try:
            client = open_client(reached)
        except BaseException:
            place.close()
            raise
        client.on_close(place.close)
        return client
    if addr.scheme == "ssh":
        transport: Transport = _ssh(addr)
    elif addr.scheme == "tcp":
        transport = TcpTransport.connect(addr.host, addr.port or 0)
    else:
        from edgert.device_agents.framing import ReliableTransport
        from edgert.device_agents.transports import SerialTransport

        transport = ReliableTransport(SerialTransport.open(addr.path, addr.baud), role="host")
    channel = Channel(transport)
    try:
        if addr.scheme == "tcp":
            _authenticate(channel, addr)
        return AgentClient(channel, addr.scheme)
    except EdgertError as exc:
        detail = transport.remote_stderr() if isinstance(transport, _SshTransport) else ""
        transport.close()
        if isinstance(exc, NotProtocol):
            raise _not_an_agent(addr, exc) from exc
        if detail:
            raise DeviceError(f"{exc.message}; the agent command {addr.agent_cmd!r} said: "
                              f"{detail.splitlines()[-1]}") from exc
        raise


def _not_an_agent(addr: DeviceAddress, exc: NotProtocol) -> DeviceError:
    """What to check when the first bytes from the device were no frame: over SSH the remote
    shell printed something (a banner, an echo in .bashrc) before the agent took stdout."""
    wrote = exc.fields.get("excerpt", "")
    if addr.scheme == "ssh":
        return DeviceError(f"the agent command {addr.agent_cmd!r} wrote non-protocol output on stdout: "
                           f"'{wrote}' (a login banner or an echo in a shell startup file? "
                           "nothing may print to stdout before the agent starts)", host=addr.host)
    return DeviceError(f"{addr.name} is not an edgert agent: it sent non-protocol output '{wrote}'",
                       host=addr.host)
