"""Serial lines for tests and benchmarks: two real pty pairs joined by a proxy that can flip bits,
drop bytes, pace bytes at a baud rate (a pty itself ignores the baud rate) and hold back one
end's bytes the way a serial-to-TCP bridge does while no client is connected."""
from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
import tty
from collections.abc import Iterator

from edgert.device_agents.framing import ReliableTransport, Role
from edgert.device_agents.transports import SerialTransport


class CorruptingProxy:
    """Copies bytes between two pty masters, flipping bits and dropping bytes with a seeded RNG."""

    def __init__(self, fd_a: int, fd_b: int, flip_rate: float, drop_rate: float, seed: int,
                 baud: int | None = None) -> None:
        self.fds = (fd_a, fd_b)
        self.flip_rate, self.drop_rate = flip_rate, drop_rate
        self.byte_s = 10 / baud if baud else 0.0  # 8N1: ten bit times per byte
        self._line_free = {fd_a: 0.0, fd_b: 0.0}  # when each direction's wire is idle again
        self.rng = random.Random(seed)
        self.flipped = self.dropped = self.copied = 0
        self._held: bytearray | None = None  # end A's bytes kept back (see hold_a)
        self._hold_lock = threading.Lock()
        for fd in self.fds:
            os.set_blocking(fd, False)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def hold_a(self) -> None:
        """Keep what end A writes from now on, as ser2net or socat keep what a board writes
        while no client is connected; end B's next bytes (a host connecting and speaking) go
        on to A first, then everything kept is delivered to B at once, ahead of what follows."""
        with self._hold_lock:
            self._held = bytearray()

    def held(self) -> bytes:
        """What is being kept back right now."""
        with self._hold_lock:
            return bytes(self._held or b"")

    def _mangle(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            roll = self.rng.random()
            if roll < self.drop_rate:
                self.dropped += 1
                continue
            if roll < self.drop_rate + self.flip_rate:
                byte ^= 1 << self.rng.randrange(8)
                self.flipped += 1
            out.append(byte)
        return bytes(out)

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([*self.fds, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                self.copied += len(data)
                if self.byte_s:  # approximate pacing: one thread, so directions share the sleep
                    start = max(time.monotonic(), self._line_free[fd])
                    self._line_free[fd] = start + len(data) * self.byte_s
                    time.sleep(max(0.0, self._line_free[fd] - time.monotonic()))
                with self._hold_lock:
                    if fd == self.fds[0] and self._held is not None:
                        self._held += data
                        continue
                    self._write_all(self.fds[1] if fd == self.fds[0] else self.fds[0], self._mangle(data))
                    if self._held is not None:  # B spoke: the bridge delivers what it kept
                        self._write_all(self.fds[1], self._mangle(bytes(self._held)))
                        self._held = None

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            _, writable, _ = select.select([self._stop_r], [fd], [])
            if not writable:
                return
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                continue


class Line:
    """Two pty pairs joined by a proxy; ``end_a``/``end_b`` are slave tty paths for pyserial."""

    def __init__(self, flip_rate: float = 0.0, drop_rate: float = 0.0, seed: int = 1,
                 baud: int | None = None) -> None:
        self.fds = []
        paths = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            self.fds += [master, slave]
            paths.append(os.ttyname(slave))
        self.end_a, self.end_b = paths
        self.proxy = CorruptingProxy(self.fds[0], self.fds[2], flip_rate, drop_rate, seed, baud)

    def open(self, path: str, role: Role, baudrate: int = 115200, **kwargs) -> ReliableTransport:
        return ReliableTransport(SerialTransport.open(path, baudrate), role=role, **kwargs)

    @contextlib.contextmanager
    def pair(self, **kwargs) -> Iterator[tuple[ReliableTransport, ReliableTransport]]:
        """A host link on ``end_a`` and an agent link on ``end_b`` (same options), closed after."""
        host = self.open(self.end_a, "host", **kwargs)
        try:
            agent = self.open(self.end_b, "agent", **kwargs)
            try:
                yield host, agent
            finally:
                agent.close()
        finally:
            host.close()

    def close(self) -> None:
        self.proxy.stop()
        for fd in self.fds:
            os.close(fd)
