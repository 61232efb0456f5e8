"""Messages over a byte transport: send/receive whole protocol frames.

Shared by the agent and the host client. An oversized frame is read and thrown away,
then reported with ``FrameTooLarge``, so the stream stays in step and the peer keeps serving.
The first message of a stream is different (``recv(opening=True)``): output that is no frame
at all (a login banner the remote shell prints before the agent starts) reads as a length of
hundreds of megabytes, so it is refused at once with ``NotProtocol``, quoting what came.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from edgert.device_agents import protocol
from edgert.device_agents.transports import Transport, TransportClosed, TransportTimeout
from edgert.errors import ProtocolError

READ_BYTES = 1 << 20


class FrameTooLarge(ProtocolError):
    """A frame above the limit arrived and was discarded; the stream is still usable."""


class NotProtocol(ProtocolError):
    """The peer's first bytes are no protocol frame (its ``excerpt`` field quotes them)."""


EXCERPT_CHARS = 80
NOT_PROTOCOL_GRACE_S = 0.2  # wait this long for more of what a non-protocol peer wrote


def excerpt(data: bytes, limit: int = EXCERPT_CHARS) -> str:
    """A bounded, printable rendering of ``data`` for an error message (escapes, then "...")."""
    text = data[:limit].decode("utf-8", errors="replace")
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return shown + ("..." if len(data) > limit else "")


class Channel:
    """Frame-level reads with timeouts and thread-safe writes over one transport."""

    def __init__(self, transport: Transport, max_frame_bytes: int = protocol.MAX_FRAME_BYTES) -> None:
        self.transport = transport
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._write_lock = threading.Lock()

    def send(self, message: dict[str, Any], timeout: float | None = 60.0) -> None:
        frame = protocol.encode(message, self.max_frame_bytes)
        with self._write_lock:
            self.transport.write(frame, timeout)

    def _fill(self, need: int, deadline: float | None) -> None:
        while len(self._buffer) < need:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TransportTimeout(f"{self.transport.name}: no complete message in time")
            try:
                self._buffer += self.transport.read(READ_BYTES, remaining)
            except TransportClosed as exc:
                if exc.fields.get("peer_restarted"):
                    self._buffer.clear()  # a partial message from the old peer must not prefix the new one's
                raise

    def recv(self, timeout: float | None = None, *, opening: bool = False) -> dict[str, Any]:
        """The next message; ``TransportTimeout`` when none completes within ``timeout``.

        ``opening``: the stream's first message, where an oversized header means the peer
        does not speak the protocol: ``NotProtocol`` at once instead of discarding a bogus
        length's worth of bytes until the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        header = protocol.HEADER.size
        self._fill(header, deadline)
        (size,) = protocol.HEADER.unpack_from(self._buffer)
        if size > self.max_frame_bytes and opening:
            wrote = excerpt(self._more_output())
            raise NotProtocol(f"{self.transport.name} sent non-protocol output: '{wrote}'", excerpt=wrote)
        if size > self.max_frame_bytes:
            self._discard(header + size, deadline)
            raise FrameTooLarge(
                f"refused a {size}-byte frame: the limit is {self.max_frame_bytes} bytes",
                size=size, limit=self.max_frame_bytes)
        self._fill(header + size, deadline)
        frame = bytes(self._buffer[:header + size])
        del self._buffer[:header + size]
        return protocol.decode(frame, self.max_frame_bytes)

    def _more_output(self) -> bytes:
        """The buffered bytes plus what follows within ``NOT_PROTOCOL_GRACE_S`` (a banner's
        next lines come in further reads), up to the excerpt's length."""
        end = time.monotonic() + NOT_PROTOCOL_GRACE_S
        while len(self._buffer) <= EXCERPT_CHARS and (left := end - time.monotonic()) > 0:
            try:
                self._buffer += self.transport.read(READ_BYTES, left)
            except (TransportTimeout, TransportClosed):
                break
        return bytes(self._buffer)

    def _discard(self, count: int, deadline: float | None) -> None:
        while count > 0:
            if not self._buffer:
                self._fill(1, deadline)
            drop = min(count, len(self._buffer))
            del self._buffer[:drop]
            count -= drop

    def close(self) -> None:
        self.transport.close()
