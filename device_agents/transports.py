"""Byte-stream transports: pipes/stdio (SSH), sockets (TCP, paramiko channels) and serial ports.

A transport has three methods, as in httpcore:

    read(max_bytes, timeout) -> bytes   1..max_bytes bytes; waits at most ``timeout`` s (None: forever)
    write(data, timeout)                all of ``data``, or an error
    close()

Library exceptions are translated here, at the boundary, by one ``map_exceptions`` (httpcore's
``_exceptions.py``), into ``TransportTimeout`` (nothing arrived / could be sent in time; the
stream may still be fine for reads) and ``TransportClosed`` (the peer went away). Both are
``TransportError`` with ``fields["reason"]`` set accordingly. A write that timed out may have
sent part of ``data``: close the transport after it.
"""
from __future__ import annotations

import abc
import contextlib
import functools
import os
import select
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from edgert.errors import TransportError


class TransportTimeout(TransportError):
    """Nothing could be read or written within the timeout."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message, reason="timeout", **fields)


class TransportClosed(TransportError):
    """The peer closed the stream (EOF, broken pipe, device gone)."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message, reason="closed", **fields)


ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]
# library exception -> (edgert exception, message template); the first match wins
ExceptionMap = Mapping[ExceptionTypes, tuple[type[TransportError], str]]
TIMEOUTS = (TimeoutError, BlockingIOError)  # socket.timeout is TimeoutError
MAX_BAUD = 10_000_000  # above any UART; pyserial overflowed on larger numbers
READ_ERRORS: ExceptionMap = {TIMEOUTS: (TransportTimeout, "nothing received within {timeout_s} s"),
                             (OSError, EOFError): (TransportClosed, "read failed: {exc}")}
WRITE_ERRORS: ExceptionMap = {TIMEOUTS: (TransportTimeout, "could not send {size} bytes within {timeout_s} s"),
                              (OSError, EOFError): (TransportClosed, "write failed: {exc}")}
CONNECT_ERRORS: ExceptionMap = {TimeoutError: (TransportTimeout, "no answer within {timeout_s} s"),
                                OSError: (TransportError, "cannot connect: {exc}")}


def seconds(value: float | None) -> str:
    """A timeout as a message shows it: "10", not the 9.999997534999693 a deadline leaves."""
    if value is None:
        return "unlimited"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


@contextlib.contextmanager
def map_exceptions(name: str, mapping: ExceptionMap, **fields: Any) -> Iterator[None]:
    """Translate a library's exceptions raised in the block into edgert's, at the boundary.

    ``mapping`` is tried in order; the message is ``"{name}: "`` plus its template filled
    with ``exc`` and ``fields``, and ``fields`` go into the error (``size`` is only for the
    message). edgert's own errors and unmapped exceptions pass through unchanged.
    """
    try:
        yield
    except TransportError:
        raise
    except Exception as exc:
        for source, (target, template) in mapping.items():
            if isinstance(exc, source):
                shown = {**fields, "timeout_s": seconds(fields["timeout_s"])} if "timeout_s" in fields else fields
                raise target(f"{name}: " + template.format(exc=exc, **shown),
                             **{k: v for k, v in fields.items() if k != "size"}) from exc
        raise


class Transport(abc.ABC):
    name = "transport"  # shown in error messages, e.g. "serial /dev/ttyUSB0"
    _closed = False

    @abc.abstractmethod
    def read(self, max_bytes: int, timeout: float | None) -> bytes:
        """Between 1 and ``max_bytes`` bytes; TransportTimeout or TransportClosed otherwise."""

    @abc.abstractmethod
    def write(self, data: bytes, timeout: float | None) -> None:
        """Send all of ``data``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the stream; idempotent."""

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed(f"{self.name}: transport already closed")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class PipeTransport(Transport):
    """Two file descriptors (subprocess pipes, a pty, the agent's stdin/stdout).

    The write descriptor is made non-blocking so a write timeout holds even when the pipe is full.
    """

    def __init__(self, read_fd: int, write_fd: int, *, close_fds: bool = True, name: str = "pipe") -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.name = name
        self._close_fds = close_fds
        self._closed = False
        os.set_blocking(write_fd, False)

    def read(self, max_bytes: int, timeout: float | None) -> bytes:
        self._check_open()
        ready, _, _ = select.select([self.read_fd], [], [], timeout)
        if not ready:
            raise TransportTimeout(f"{self.name}: nothing received within {seconds(timeout)} s", timeout_s=timeout)
        with map_exceptions(self.name, READ_ERRORS, timeout_s=timeout):  # EIO: pty peer closed
            data = os.read(self.read_fd, max_bytes)
        if not data:
            raise TransportClosed(f"{self.name}: closed by peer")
        return data

    def write(self, data: bytes, timeout: float | None) -> None:
        self._check_open()
        view = memoryview(data)
        deadline = _deadline(timeout)
        # EPIPE (SIGPIPE is ignored by Python), EIO; a full pipe (BlockingIOError) waits again
        with map_exceptions(self.name, {OSError: (TransportClosed, "write failed: {exc}")}):
            while view:
                _, ready, _ = select.select([], [self.write_fd], [], _remaining(deadline))
                if not ready:
                    raise TransportTimeout(f"{self.name}: could not send {len(view)} bytes within "
                                           f"{seconds(timeout)} s", timeout_s=timeout, unsent=len(view))
                try:
                    sent = os.write(self.write_fd, view)
                except BlockingIOError:
                    continue
                view = view[sent:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._close_fds:
            for fd in {self.read_fd, self.write_fd}:
                try:
                    os.close(fd)
                except OSError:
                    pass


class StdioTransport(PipeTransport):
    """The agent's side of SSH: the protocol owns stdin/stdout, stray prints go to stderr.

    The original descriptors are duplicated and fd 0/1 are pointed at /dev/null and stderr, so a
    ``print`` in an engine library cannot corrupt the frame stream.
    """

    def __init__(self) -> None:
        sys.stdout.flush()
        read_fd, write_fd = os.dup(0), os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        super().__init__(read_fd, write_fd, name="stdio")


class SocketLike(Protocol):
    """What ``SocketTransport`` needs: ``socket.socket`` and ``paramiko.Channel`` both fit."""

    def recv(self, nbytes: int) -> bytes: ...
    def sendall(self, data: bytes) -> Any: ...
    def settimeout(self, timeout: float | None) -> None: ...
    def close(self) -> None: ...


class SocketTransport(Transport):
    """Any object with recv/sendall/settimeout/close: a socket or a paramiko channel."""

    def __init__(self, sock: SocketLike, *, name: str = "socket") -> None:
        self.sock = sock
        self.name = name
        self._closed = False

    def read(self, max_bytes: int, timeout: float | None) -> bytes:
        self._check_open()
        with map_exceptions(self.name, READ_ERRORS, timeout_s=timeout):
            self.sock.settimeout(timeout)
            data = self.sock.recv(max_bytes)
        if not data:
            raise TransportClosed(f"{self.name}: closed by peer")
        return data

    def write(self, data: bytes, timeout: float | None) -> None:
        self._check_open()
        with map_exceptions(self.name, WRITE_ERRORS, timeout_s=timeout, size=len(data)):
            self.sock.settimeout(timeout)
            self.sock.sendall(data)  # the timeout bounds the whole call (Python >= 3.5)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.sock.close()
            except OSError:
                pass


class TcpTransport(SocketTransport):
    """A TCP connection; the agent checks the shared token in the first request, not here."""

    @classmethod
    def connect(cls, host: str, port: int, timeout: float | None = 10.0) -> "TcpTransport":
        with map_exceptions(f"tcp {host}:{port}", CONNECT_ERRORS, host=host, port=port, timeout_s=timeout):
            sock = socket.create_connection((host, port), timeout=timeout)
        return cls.from_socket(sock, f"tcp {host}:{port}")

    @classmethod
    def from_socket(cls, sock: socket.socket, name: str = "tcp") -> "TcpTransport":
        """Wrap a connected socket (e.g. one the agent accepted); disables Nagle for small frames."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, name=name)


class SerialTransport(Transport):
    """A pyserial port (``serial.Serial`` or ``serial.serial_for_url``); pyserial is imported lazily."""

    def __init__(self, port: Any, *, name: str | None = None) -> None:
        self.port = port
        self.name = name or f"serial {getattr(port, 'port', None) or port}"
        self._closed = False

    @classmethod
    def open(cls, url: str, baudrate: int = 115200) -> "SerialTransport":
        """Open a device path (/dev/ttyUSB0) or a pyserial URL (loop://, rfc2217://...), 8N1, raw."""
        try:
            import serial
        except ImportError as exc:
            raise TransportError("serial links need pyserial: pip install 'edgert[serial]'") from exc
        # exclusive: a second agent or a getty on the same tty would silently steal bytes.
        extra = {} if "://" in url else {"exclusive": True}
        with map_exceptions(f"serial {url}", {(serial.SerialException, OSError, ValueError):
                                              (TransportError, "cannot open: {exc}")}, port=url):
            port = serial.serial_for_url(url, baudrate=baudrate, timeout=0, **extra)
        return cls(port, name=f"serial {url}")

    @staticmethod
    @functools.cache
    def _errors(write: bool) -> ExceptionMap:
        """pyserial's exceptions (a vanished device is a SerialException) for ``map_exceptions``."""
        import serial

        if write:
            return {serial.SerialTimeoutException: WRITE_ERRORS[TIMEOUTS],
                    (serial.SerialException, OSError): WRITE_ERRORS[OSError, EOFError]}
        return {(serial.SerialException, OSError): READ_ERRORS[OSError, EOFError]}

    def read(self, max_bytes: int, timeout: float | None) -> bytes:
        self._check_open()
        with map_exceptions(self.name, self._errors(write=False), timeout_s=timeout):
            if self.port.timeout != timeout:  # the setter reconfigures the tty: only when it changes
                self.port.timeout = timeout
            data = self.port.read(1)
            if not data:
                raise TransportTimeout(f"{self.name}: nothing received within {seconds(timeout)} s", timeout_s=timeout)
            waiting = min(self.port.in_waiting, max_bytes - 1)
            if waiting > 0:
                data += self.port.read(waiting)  # already buffered: returns at once
        return data

    def write(self, data: bytes, timeout: float | None) -> None:
        self._check_open()
        with map_exceptions(self.name, self._errors(write=True), timeout_s=timeout, size=len(data)):
            if self.port.write_timeout != timeout:
                self.port.write_timeout = timeout
            self.port.write(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.port.close()

