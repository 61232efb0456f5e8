"""A reliable link layer for serial lines, where bytes get flipped and dropped.

``ReliableTransport(inner, role=...)`` is itself a ``Transport``, so the wire protocol runs unchanged on top.

Wire format (both directions), one frame:

    0x00  COBS( type:u8  src:u32  dst:u32  seq:u32  payload  crc32:u32 )  0x00

big-endian, CRC-32 (zlib) over type..payload; COBS removes every 0x00 inside so 0x00 only
delimits, and a receiver resynchronises at the next 0x00 after garbage. Types:

    DATA 'D'  seq = frame number (from 0), payload 1..4096 bytes
    ACK  'A'  seq = next expected seq (all below it received)
    NAK  'N'  same fields as ACK: "resend from seq" (on a gap or a corrupt frame; once per gap
              and once per resend round, so one lost frame cannot trigger a storm)

Go-back-N with a small window: the sender keeps up to ``window`` frames unacknowledged and
resends them all on a NAK or when the oldest waited ``ack_timeout`` s. A background thread
reads the line so frames are acknowledged even while the application is busy.

The link adapts to a noisy line instead of giving up on it: every resend round halves the
payload of the frames sent next (down to ``MIN_PAYLOAD_BYTES``: at a byte error rate of 1e-3
a 1 KiB frame arrives intact only a third of the time, a 64-byte one nine times in ten), and
``GROW_AFTER`` clean frames in a row double it again (up to ``payload_bytes``). It fails only
on a dead line: ``max_retries`` resend rounds in a row without hearing a single intact frame
from the peer (reason ``retries``), or no progress at all for ``stall_s`` s although the peer
answers (reason ``stalled``). ``stats`` counts damaged frames, so callers can report the
line's measured error rate (``LinkStats.summary``).

Link epochs: who is on the other end
------------------------------------
A link epoch is a random non-zero u32 naming one outgoing stream of one end; frames carry the
sender's epoch as ``src`` and, as ``dst``, the epoch of the peer they are meant for (0: "whoever
is there", only before that is known). An end is *unbound* until it learns its peer's epoch,
then *bound* to it. The two ends play different roles (``role``): the host opens sessions, the
agent serves them one after another and beacons its hello (DATA seq 0, dst 0) until one comes.

A tty or a bridge (ser2net, socat) keeps what the agent wrote while no host listened: hellos
of earlier agent epochs, long gone. No unaddressed frame can be told apart from such a stale
one, so the host speaks first and trusts only frames addressed to it:

    host, unbound      ignores DATA with dst 0; its first write (seq 0, dst 0) reaches the live
                       agent, whose reply is addressed to it. It binds to the first epoch whose
                       ACK, NAK or DATA seq 0 names it (that epoch heard it, so it is alive).
    agent, unbound     binds to the first host that starts a stream (DATA seq 0, dst 0 or its
                       epoch) or acknowledges it, and at once resends what it had not got
                       acknowledged (the hello), addressed to that host.
    bound to P         DATA with dst other than 0 or its epoch is ignored, as is anything but
                       DATA seq 0 from an epoch other than P, and ACK/NAK from one.
                       DATA seq 0 from a new epoch X means P restarted (or, for an agent,
                       a new host took over); the end binds to X and the next read or write
                       raises TransportClosed(peer_restarted=True) (the link stays usable;
                       the caller starts a new protocol session on it; a host hears it once,
                       an agent until it calls ``serve_new_peer``):
      agent            restarts both directions: undelivered input and unacknowledged output
                       are dropped, a write in progress aborts, and it takes a new epoch (so a
                       reply meant for the old host never reaches the new one).
      host, dst 0      X does not know the host (a new agent link after a session ended): the
                       host restarts both directions the same way, with a new epoch.
      host, dst = own  X names the host's current epoch: it is the agent having restarted on
                       this host's seq 0, which it kept as the first frame of its new session.
                       The host restarts only its receiving side; its epoch and outgoing
                       stream go on (addressed to X).

Why this settles: a restart of one end never makes the other restart. An agent's new epoch
names the host it restarted for, which then keeps its epoch; a host's new epoch is made only
for an agent link that does not know it yet, which binds to it without restarting. (Restarting
both directions with new epochs on both ends let host and agent restart each other forever
when a bridge had queued stale hellos.) Frames the link ignores are counted in
``stats.ignored_frames``.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import struct
import threading
import time
import zlib
from typing import Literal

from edgert.device_agents.transports import Transport, TransportClosed, TransportTimeout, seconds
from edgert.errors import InternalError, TransportError, UsageError

DATA, ACK, NAK = ord("D"), ord("A"), ord("N")
Role = Literal["host", "agent"]
MAX_PAYLOAD_BYTES = 4096
MIN_PAYLOAD_BYTES = 64
GROW_AFTER = 32  # clean frames in a row before the payload doubles again
_HEAD = struct.Struct(">BIII")
_CRC = struct.Struct(">I")
_DELIM = b"\x00"
# Longest COBS-encoded frame a peer may send; longer unterminated runs are garbage.
_MAX_ENCODED = _HEAD.size + MAX_PAYLOAD_BYTES + _CRC.size + MAX_PAYLOAD_BYTES // 254 + 2


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result has no 0x00 and at most len/254+1 extra bytes."""
    out = bytearray()
    for block in data.split(_DELIM):
        while len(block) >= 254:
            out.append(255)
            out += block[:254]
            block = block[254:]
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of ``cobs_encode``; ValueError on malformed input (``data`` must hold no 0x00)."""
    out = bytearray()
    i, end = 0, len(data)
    while i < end:
        code = data[i]
        if code == 0 or i + code > end:
            raise ValueError("malformed COBS block")
        out += data[i + 1:i + code]
        i += code
        if code < 255 and i < end:
            out.append(0)
    return bytes(out)


def encode_frame(kind: int, src: int, dst: int, seq: int, payload: bytes = b"") -> bytes:
    body = _HEAD.pack(kind, src, dst, seq) + payload
    return _DELIM + cobs_encode(body + _CRC.pack(zlib.crc32(body))) + _DELIM


def decode_frame(raw: bytes) -> tuple[int, int, int, int, bytes] | None:
    """(type, src, dst, seq, payload) of one frame between delimiters, None if it is corrupt."""
    try:
        data = cobs_decode(raw)
    except ValueError:
        return None
    if len(data) < _HEAD.size + _CRC.size:
        return None
    body, crc = data[:-_CRC.size], _CRC.unpack(data[-_CRC.size:])[0]
    if zlib.crc32(body) != crc:
        return None
    kind, src, dst, seq = _HEAD.unpack_from(body)
    if kind not in (DATA, ACK, NAK) or (kind != DATA and len(body) != _HEAD.size):
        return None
    return kind, src, dst, seq, body[_HEAD.size:]


@dataclasses.dataclass
class LinkStats:
    """Counters for tests and for reporting link quality to the user."""

    frames_sent: int = 0  # DATA frames, first transmissions
    retransmissions: int = 0  # DATA frames sent again (timeout or NAK)
    ack_timeouts: int = 0  # resends because nothing came back within ack_timeout
    bad_frames: int = 0  # CRC/COBS failures and oversized garbage received
    naks_sent: int = 0
    naks_received: int = 0
    payload_bytes_out: int = 0
    payload_bytes_in: int = 0
    wire_bytes_out: int = 0
    wire_bytes_in: int = 0
    frames_received: int = 0  # intact frames of any type
    ignored_frames: int = 0  # intact frames for another epoch or a stream this end has not joined
    smallest_payload: int = 0  # the smallest payload the link adapted down to (0: never shrank)

    def byte_error_rate(self) -> float:
        """Damaged frames per received byte: about the line's byte error rate while errors are
        rare enough that a damaged frame holds one bad byte (an estimate, from this end)."""
        return self.bad_frames / self.wire_bytes_in if self.wire_bytes_in else 0.0

    def summary(self) -> str:
        """One line for the user when the link had to work for it."""
        shrunk = f", frames shrunk to {self.smallest_payload} bytes" if self.smallest_payload else ""
        return (f"{self.bad_frames} damaged frames in {self.wire_bytes_in} bytes received (byte error "
                f"rate about {self.byte_error_rate():.1e}), {self.retransmissions} of "
                f"{self.frames_sent + self.retransmissions} frames sent were resends{shrunk}")


class ReliableTransport(Transport):
    """CRC-checked, acknowledged, retransmitted frames over ``inner`` (which it then owns)."""

    def __init__(self, inner: Transport, *, role: Role, payload_bytes: int = 1024, window: int = 4,
                 ack_timeout: float = 1.0, max_retries: int = 10, io_timeout: float = 5.0,
                 stall_s: float = 120.0) -> None:
        """``role``: which end this is (see "Link epochs" above). ``ack_timeout`` must exceed
        the time to send ``window`` frames at the line rate (4 x 1 KiB at 115200 baud is
        0.36 s) plus the peer's turnaround."""
        if role not in ("host", "agent"):
            raise UsageError(f"role must be 'host' or 'agent', got {role!r}")
        if not 1 <= payload_bytes <= MAX_PAYLOAD_BYTES:
            raise UsageError(f"payload_bytes must be 1..{MAX_PAYLOAD_BYTES}, got {payload_bytes}")
        self.role = role
        self.inner = inner
        self.name = f"reliable {inner.name}"
        self.stats = LinkStats()
        self._max_payload = payload_bytes
        self._payload_bytes = payload_bytes  # adapted: see the module docstring
        self._clean_frames = 0
        self._stall_s = stall_s
        self._progress_at = time.monotonic()
        self._window = window
        self._ack_timeout = ack_timeout
        self._max_retries = max_retries
        self._io_timeout = io_timeout
        self._poll_s = min(0.05, ack_timeout / 4)
        self._cond = threading.Condition()
        self._inner_write_lock = threading.Lock()
        self._app_write_lock = threading.Lock()
        # sending side
        self._epoch = _new_epoch()
        self._generation = 0  # bumped when the outgoing stream restarts, to abort a write in progress
        self._next_seq = 0
        # (seq, payload): frames are encoded when sent, addressed to the peer known by then
        self._unacked: collections.deque[tuple[int, bytes]] = collections.deque()
        self._base_sent_at = 0.0
        self._retries = 0
        # receiving side
        self._peer_epoch: int | None = None
        self._expected = 0
        self._nak_armed = True  # one NAK per gap and per resend round
        self._last_seq = -1  # seq of the last DATA frame seen; going back marks a resend round
        self._rx = bytearray()
        self._peer_restarted = False
        self._error: TransportError | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    # -- application side -------------------------------------------------------------------

    def read(self, max_bytes: int, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                self._raise_if_peer_restarted()
                if self._rx:
                    data = bytes(self._rx[:max_bytes])
                    del self._rx[:max_bytes]
                    return data
                self._check_usable()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TransportTimeout(f"{self.name}: nothing received within {seconds(timeout)} s",
                                           timeout_s=timeout)
                self._cond.wait(remaining)

    def write(self, data: bytes, timeout: float | None) -> None:
        """Returns once the peer's link layer acknowledged every byte."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._app_write_lock:
            with self._cond:
                self._raise_if_peer_restarted()
                generation = self._generation
            start = 0
            while start < len(data):
                chunk = bytes(data[start:start + self._payload_bytes])
                start += len(chunk)
                with self._cond:
                    self._wait(lambda: len(self._unacked) < self._window, deadline, generation, timeout)
                    seq, self._next_seq = self._next_seq, self._next_seq + 1
                    frame = self._data_frame(seq, chunk)
                    if not self._unacked:
                        self._base_sent_at, self._retries = time.monotonic(), 0
                        self._progress_at = self._base_sent_at
                    self._unacked.append((seq, chunk))
                    self.stats.frames_sent += 1
                    self.stats.payload_bytes_out += len(chunk)
                try:
                    self._send(frame)
                except TransportError as exc:
                    self._fail(exc)
                    raise
            with self._cond:
                self._wait(lambda: not self._unacked, deadline, generation, timeout)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self.inner.close()

    def _wait(self, ready, deadline: float | None, generation: int, timeout: float | None) -> None:
        while True:
            if self._generation != generation:
                raise TransportClosed(f"{self.name}: the peer restarted the link during a write",
                                      peer_restarted=True)
            self._check_usable()
            if ready():
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TransportTimeout(f"{self.name}: the peer did not acknowledge within {seconds(timeout)} s",
                                       timeout_s=timeout)
            self._cond.wait(remaining)

    def _raise_if_peer_restarted(self) -> None:
        """Report a peer restart to the reads and writes after it (a reply meant for the old peer
        must not become the new peer's first message). A host hears it once; an agent on every
        call until ``serve_new_peer``: its heartbeat thread hearing it first let the measurement
        go on and answer the old host's request to the new host."""
        if self._peer_restarted:
            if self.role == "host":
                self._peer_restarted = False
            raise TransportClosed(f"{self.name}: the peer restarted the link; start a new session",
                                  peer_restarted=True)

    def serve_new_peer(self) -> None:
        """Agent: the old host's session has ended; reads and writes now serve the new host."""
        with self._cond:
            self._peer_restarted = False

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise TransportClosed(f"{self.name}: transport already closed")

    # -- link thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except TransportError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug here must not leave readers waiting forever
            self._fail(InternalError(f"{self.name}: link thread crashed: {exc!r}"))
            raise

    def _loop(self) -> None:
        pending = b""
        while not self._closing:
            try:
                data = self.inner.read(64 * 1024, self._poll_s)
            except TransportTimeout:
                data = b""
            if data:
                self.stats.wire_bytes_in += len(data)
                *frames, pending = (pending + data).split(_DELIM)
                if len(pending) > _MAX_ENCODED:
                    self.stats.bad_frames += 1
                    pending = b""
                for raw in frames:
                    if raw:
                        self._on_frame(raw)
            self._retransmit_if_due()

    def _on_frame(self, raw: bytes) -> None:
        decoded = decode_frame(raw)
        if decoded is None:
            self.stats.bad_frames += 1
            with self._cond:
                reply = self._nak()
        else:
            kind, src, dst, seq, payload = decoded
            with self._cond:
                self.stats.frames_received += 1
                if dst == self._epoch:
                    self._retries = 0  # the peer is there and hears us: the line is not dead
            if kind == DATA:
                reply = self._on_data(src, dst, seq, payload)
            else:
                reply = self._on_ack(src, dst, seq, is_nak=kind == NAK)
        if reply:
            self._send(reply)

    def _on_data(self, src: int, dst: int, seq: int, payload: bytes) -> bytes | None:
        with self._cond:
            if src != self._peer_epoch:
                if seq != 0 or not self._accepts_stream_start(dst):
                    self.stats.ignored_frames += 1  # stale, or a stream we joined midway
                    return None
                previous = self._peer_epoch
                self._new_peer(src, addressed=dst == self._epoch)
                resend = self._readdressed(previous)
            elif dst not in (0, self._epoch):
                self.stats.ignored_frames += 1  # meant for an earlier epoch of this end
                return None
            else:
                resend = b""
            if seq <= self._last_seq:
                self._nak_armed = True  # the sender went back: a new resend round
            self._last_seq = seq
            if seq == self._expected:
                self._rx += payload
                self._expected += 1
                self._nak_armed = True
                self.stats.payload_bytes_in += len(payload)
                self._cond.notify_all()
            elif seq > self._expected:
                return self._nak()
            # also re-acks duplicates; the ACK comes from the epoch the peer must learn
            return encode_frame(ACK, self._epoch, src, self._expected) + resend

    def _accepts_stream_start(self, dst: int) -> bool:
        """Whether DATA seq 0 addressed to ``dst`` from an unknown epoch may start a stream: an
        unbound host takes only frames that name it (unaddressed ones may be stale)."""
        return dst == self._epoch or (dst == 0 and (self.role == "agent" or self._peer_epoch is not None))

    def _new_peer(self, src: int, addressed: bool) -> None:
        """Bind to ``src``, whose stream starts now, restarting what its predecessor left
        (the table in the module docstring)."""
        if self._peer_epoch is not None:
            self._rx.clear()
            self._peer_restarted = True
            self._cond.notify_all()
            if self.role == "agent" or not addressed:
                self._unacked.clear()
                self._next_seq = 0
                self._epoch = _new_epoch()  # late ACKs meant for the old stream can no longer match
                self._generation += 1
        self._bind(src)

    def _bind(self, src: int) -> None:
        """Take ``src`` as the peer; its stream starts at seq 0."""
        self._peer_epoch, self._expected, self._last_seq, self._nak_armed = src, 0, -1, True
        self._retries = 0  # a peer just turned up: the line is not dead

    def _readdressed(self, previous: int | None) -> bytes:
        """The frames still unacknowledged, addressed to the peer just bound, to send at once if
        it would drop them as they went out: a host drops unaddressed frames (so an agent's
        hello answers the host that spoke first without waiting for a timeout), anybody drops
        frames addressed to ``previous``, the former peer."""
        if not self._unacked or (self.role == "host" and previous is None):
            return b""
        self._base_sent_at = time.monotonic()
        self.stats.retransmissions += len(self._unacked)
        return b"".join(self._data_frame(seq, payload) for seq, payload in self._unacked)

    def _data_frame(self, seq: int, payload: bytes) -> bytes:
        return encode_frame(DATA, self._epoch, self._peer_epoch or 0, seq, payload)

    def _nak(self) -> bytes | None:
        """Ask for a resend from the gap, once per gap and once per resend round of the sender."""
        if self._peer_epoch is None or not self._nak_armed:
            return None
        self._nak_armed = False
        self.stats.naks_sent += 1
        return encode_frame(NAK, self._epoch, self._peer_epoch, self._expected)

    def _on_ack(self, src: int, dst: int, next_seq: int, is_nak: bool) -> bytes | None:
        with self._cond:
            if dst != self._epoch or self._peer_epoch not in (None, src):
                self.stats.ignored_frames += 1
                return None
            unbound = self._peer_epoch is None
            progressed = False
            while self._unacked and self._unacked[0][0] < next_seq:
                self._unacked.popleft()
                progressed = True
            if progressed:
                self._base_sent_at, self._retries = time.monotonic(), 0
                self._progress_at = self._base_sent_at
                self._clean_frames += 1
                if self._clean_frames >= GROW_AFTER and self._payload_bytes < self._max_payload:
                    self._payload_bytes = min(self._max_payload, self._payload_bytes * 2)
                    self._clean_frames = 0
                self._cond.notify_all()
            if unbound:  # whoever acknowledges an unbound end heard it, so it is alive
                self._bind(src)
            if not is_nak:
                return self._readdressed(None) if unbound else None
            self.stats.naks_received += 1
        self._retransmit()
        return None

    def _retransmit_if_due(self) -> None:
        with self._cond:
            due = self._unacked and time.monotonic() - self._base_sent_at >= self._ack_timeout
        if due:
            self.stats.ack_timeouts += 1
            self._retransmit()

    def _retransmit(self) -> None:
        with self._cond:
            if not self._unacked:
                return
            self._retries += 1
            if self._retries > self._max_retries:
                raise TransportError(
                    f"{self.name}: no acknowledgement after {self._max_retries} retransmissions "
                    "(is the agent running on the other end, at the same baud rate?)",
                    reason="retries", retries=self._max_retries,
                )
            if time.monotonic() - self._progress_at > self._stall_s:
                raise TransportError(
                    f"{self.name}: the peer answers but nothing got through for {self._stall_s:g} s "
                    f"({self.stats.summary()})", reason="stalled")
            self._clean_frames = 0
            if self._payload_bytes > MIN_PAYLOAD_BYTES:
                self._payload_bytes = max(MIN_PAYLOAD_BYTES, self._payload_bytes // 2)
                self.stats.smallest_payload = min(self.stats.smallest_payload or self._payload_bytes,
                                                  self._payload_bytes)
            frames = [self._data_frame(seq, payload) for seq, payload in self._unacked]
            self._base_sent_at = time.monotonic()
            self.stats.retransmissions += len(frames)
        for frame in frames:
            self._send(frame)

    def _send(self, frame: bytes) -> None:
        with self._inner_write_lock:
            self.inner.write(frame, self._io_timeout)
            self.stats.wire_bytes_out += len(frame)

    def _fail(self, exc: TransportError) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()


def _new_epoch() -> int:
    return int.from_bytes(os.urandom(4), "big") or 1  # 0 means "unknown" in dst
