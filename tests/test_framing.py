"""The serial link layer over real pty pairs, pyserial on both ends, with a corrupting proxy between."""
from __future__ import annotations

import collections
import random
import threading
import time
import zlib

import pytest

from edgert.device_agents import protocol
from edgert.device_agents.framing import (
    ACK, DATA, ReliableTransport, cobs_decode, cobs_encode, decode_frame, encode_frame,
)
from edgert.device_agents.transports import SerialTransport, TransportClosed, TransportTimeout
from edgert.errors import TransportError
from conftest import wait_until
from serial_line import Line


@pytest.fixture
def make_line():
    lines = []

    def make(**kwargs) -> Line:
        lines.append(Line(**kwargs))
        return lines[-1]

    yield make
    for line in lines:
        line.close()


def read_exactly(transport, size: int, timeout: float = 30.0) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < size:
        out += transport.read(size - len(out), max(0.01, deadline - time.monotonic()))
    return bytes(out)


def exchange(a: ReliableTransport, b: ReliableTransport, size: int, seed: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Both ends write ``size`` random bytes at once, in uneven pieces, and read the other's."""
    rng = random.Random(seed)
    out_a, out_b = rng.randbytes(size), rng.randbytes(size)
    got = {}

    def pump(src, dst, payload, key):
        writer = threading.Thread(target=lambda: [src.write(payload[i:i + 5000], 30.0)
                                                  for i in range(0, len(payload), 5000)])
        writer.start()
        got[key] = read_exactly(dst, len(payload))
        writer.join()

    threads = [threading.Thread(target=pump, args=(a, b, out_a, "b")),
               threading.Thread(target=pump, args=(b, a, out_b, "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return out_a, got.get("b", b""), out_b, got.get("a", b"")


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\x00\x00", b"abc", bytes(range(256)), b"\x01" * 253, b"\x01" * 254, b"\x01" * 255,
    b"\x01" * 254 + b"\x00", b"\x00" + b"\x02" * 600 + b"\x00",
])
def test_cobs_round_trip_without_zeros(data):
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(encoded) == data


def test_cobs_round_trip_random():
    rng = random.Random(7)
    for _ in range(200):
        data = bytes(rng.choice([0, 1, 255, rng.randrange(256)]) for _ in range(rng.randrange(2000)))
        assert cobs_decode(cobs_encode(data)) == data


def test_frame_layout_is_delimited_cobs_of_header_payload_crc():
    frame = encode_frame(DATA, 0x01020304, 0xA0B0C0D0, 5, b"hi")
    body = b"D\x01\x02\x03\x04\xa0\xb0\xc0\xd0\x00\x00\x00\x05hi"
    assert frame == b"\x00" + cobs_encode(body + zlib.crc32(body).to_bytes(4, "big")) + b"\x00"
    assert decode_frame(frame[1:-1]) == (DATA, 0x01020304, 0xA0B0C0D0, 5, b"hi")


def test_every_single_bit_flip_is_detected():
    raw = encode_frame(DATA, 99, 7, 12345, bytes(range(200)))[1:-1]
    for bit in range(len(raw) * 8):
        corrupt = bytearray(raw)
        corrupt[bit // 8] ^= 1 << (bit % 8)
        if 0 in corrupt:
            continue  # a flip to 0x00 splits the frame at the receiver instead
        assert decode_frame(bytes(corrupt)) is None, bit


def test_clean_line_carries_both_directions_without_retransmitting(make_line):
    line = make_line()
    with line.pair() as (a, b):
        sent_a, got_b, sent_b, got_a = exchange(a, b, 100_000, seed=3)
        assert got_b == sent_a and got_a == sent_b
        assert a.stats.retransmissions == 0 and b.stats.bad_frames == 0


def test_corrupting_line_delivers_intact_payload_by_retransmitting(make_line):
    line = make_line(flip_rate=2e-4, drop_rate=2e-4, seed=11)
    with line.pair(ack_timeout=0.1, max_retries=30) as (a, b):
        sent_a, got_b, sent_b, got_a = exchange(a, b, 100_000, seed=4)
        assert line.proxy.flipped > 0 and line.proxy.dropped > 0
        assert got_b == sent_a and got_a == sent_b
        assert a.stats.retransmissions + b.stats.retransmissions > 0
        assert a.stats.bad_frames + b.stats.bad_frames > 0


def test_protocol_frames_run_unchanged_on_the_link(make_line):
    line = make_line(flip_rate=1e-4, drop_rate=1e-4, seed=5)
    with line.pair(ack_timeout=0.1, max_retries=30) as (host, agent):
        chunk = random.Random(2).randbytes(300_000)
        host.write(protocol.encode(protocol.request(9, "store.put", {"offset": 0, "data": chunk})), 30)
        decoder = protocol.FrameDecoder()
        messages = []
        while not messages:
            messages = decoder.feed(agent.read(65536, 10))
        assert messages[0]["params"]["data"] == chunk


def test_dead_line_fails_after_bounded_retries(make_line):
    line = make_line(drop_rate=1.0)
    a = line.open(line.end_a, "host", ack_timeout=0.05, max_retries=3)
    try:
        start = time.monotonic()
        with pytest.raises(TransportError) as info:
            a.write(b"hello", 10)
        assert info.value.fields["reason"] == "retries"
        assert time.monotonic() - start < 10  # by its retries, not the write's own deadline
        assert a.stats.retransmissions == 3
    finally:
        a.close()


def test_restarted_peer_starts_a_new_session(make_line):
    line = make_line()
    agent = line.open(line.end_a, "agent")
    host = line.open(line.end_b, "host")
    try:
        host.write(b"first session", 5)
        assert read_exactly(agent, 13) == b"first session"
        host.write(b"unread tail", 5)
        host.close()
        host = line.open(line.end_b, "host")
        host.write(b"second", 5)
        with pytest.raises(TransportClosed) as info:
            agent.read(100, 5)
        assert info.value.fields["peer_restarted"] is True
        # every call of the old session hears it (its heartbeat thread heard it first and the
        # measurement's reply to the dead host became the new host's first message)
        for call in (lambda: agent.write(b"old session's reply", 5), lambda: agent.read(100, 5)):
            with pytest.raises(TransportClosed, match="restarted"):
                call()
        agent.serve_new_peer()
        assert read_exactly(agent, 6) == b"second"
        agent.write(b"reply", 5)
        assert read_exactly(host, 5) == b"reply"
    finally:
        agent.close()
        host.close()


def test_stale_frames_for_a_closed_peer_do_not_reach_its_successor(make_line):
    line = make_line()
    agent = line.open(line.end_a, "agent", ack_timeout=0.05, max_retries=100)
    host = line.open(line.end_b, "host")
    try:
        host.write(b"request 1", 5)
        assert read_exactly(agent, 9) == b"request 1"
        host.close()  # gone before the reply: the agent keeps resending it
        aborted = []

        def reply():
            try:
                agent.write(b"stale reply", 10)
            except TransportClosed as exc:
                aborted.append(exc)

        writer = threading.Thread(target=reply)
        writer.start()
        wait_until(lambda: agent.stats.retransmissions > 0, 10, "the agent resending to the gone host")
        host = line.open(line.end_b, "host")
        # resends addressed to the old host now reach the new one
        wait_until(lambda: host.stats.frames_received > 0, 10, "a stale resend at the new host")
        host.write(b"request 2", 5)
        writer.join(5)
        assert aborted and aborted[0].fields["peer_restarted"] is True
        with pytest.raises(TransportClosed):
            agent.read(100, 5)
        agent.serve_new_peer()
        assert read_exactly(agent, 9) == b"request 2"
        agent.write(b"reply 2", 5)
        assert read_exactly(host, 7) == b"reply 2"
        assert host.stats.payload_bytes_in == 7
    finally:
        agent.close()
        host.close()


def test_an_agent_epoch_that_acknowledged_us_and_restarted_is_a_restart(make_line):
    """The host speaks first; the agent link epoch that acknowledges it then gives up and a new
    epoch greets the host: that greeting is a restart, and the host's next frames start at seq 0
    (a host that took it for a first stream went on with seq 1, which the new epoch ignores)."""
    line = make_line()
    host = line.open(line.end_b, "host", max_retries=3)
    first = line.open(line.end_a, "agent")
    try:
        host.write(b"wake", 5)  # acknowledged by `first`, before the host heard anything from it
        assert read_exactly(first, 4) == b"wake"
    finally:
        first.close()
    agent = line.open(line.end_a, "agent")
    try:
        agent.write(b"hello", 10)
        with pytest.raises(TransportClosed) as restarted:
            host.read(100, 10)
        assert restarted.value.fields["peer_restarted"] is True
        assert read_exactly(host, 5) == b"hello"
        host.write(b"open", 10)
        assert read_exactly(agent, 4) == b"open"
    finally:
        agent.close()
        host.close()


class RawEnd:
    """One end of the line driven frame by frame, to play a peer (or stale frames) in any state."""

    def __init__(self, path: str) -> None:
        self.tty = SerialTransport.open(path)
        self._pending = b""
        self._frames: collections.deque[tuple[int, int, int, int, bytes]] = collections.deque()

    def send(self, kind: int, src: int, dst: int, seq: int, payload: bytes = b"") -> None:
        self.tty.write(encode_frame(kind, src, dst, seq, payload), 5)

    def next_frame(self, kind: int = DATA, timeout: float = 20.0) -> tuple[int, int, int, int, bytes]:
        """The next intact frame of ``kind`` (type, src, dst, seq, payload); skips other kinds."""
        deadline = time.monotonic() + timeout
        while True:
            while self._frames:
                frame = self._frames.popleft()
                if frame[0] == kind:
                    return frame
            data = self.tty.read(65536, max(0.01, deadline - time.monotonic()))
            *raws, self._pending = (self._pending + data).split(b"\0")
            self._frames.extend(frame for raw in raws if raw and (frame := decode_frame(raw)))

    def close(self) -> None:
        self.tty.close()


def test_a_host_trusts_only_agent_epochs_that_name_it(make_line):
    """The host side of the epoch state machine (framing module docstring), played by a raw agent."""
    line = make_line()
    host = line.open(line.end_b, "host")
    agent = RawEnd(line.end_a)
    try:
        agent.send(DATA, 0x57A1E, 0, 0, b"stale hello")  # queued by a bridge: nobody it names
        woke = threading.Thread(target=host.write, args=(b"wake", 30))
        woke.start()
        _, h, dst, seq, payload = agent.next_frame()
        assert (dst, seq, payload) == (0, 0, b"wake")
        agent.send(ACK, 0xA, h, 1)  # agent epoch 0xA heard the host: the host binds to it
        woke.join(30)
        agent.send(DATA, 0xA, h, 0, b"hello")
        assert read_exactly(host, 5) == b"hello"
        assert host.stats.ignored_frames == 1  # the stale hello reached the host and was dropped

        # A new agent epoch naming the host restarted on the host's stream: the host's receiving
        # side restarts, its epoch and outgoing stream go on (seq 1, now addressed to 0xB).
        agent.send(DATA, 0xB, h, 0, b"hello again")
        with pytest.raises(TransportClosed) as restarted:
            host.read(100, 10)
        assert restarted.value.fields["peer_restarted"] is True
        assert read_exactly(host, 11) == b"hello again"
        sent = threading.Thread(target=host.write, args=(b"open", 30))
        sent.start()
        assert agent.next_frame()[1:] == (h, 0xB, 1, b"open")
        agent.send(ACK, 0xB, h, 2)
        sent.join(30)

        # A new agent epoch that does not know the host (a new agent link): both directions
        # restart, with a new host epoch, and the host's next stream starts at seq 0.
        agent.send(DATA, 0xC, 0, 0, b"new link")
        with pytest.raises(TransportClosed):
            host.read(100, 10)
        assert read_exactly(host, 8) == b"new link"
        sent = threading.Thread(target=host.write, args=(b"open", 30))
        sent.start()
        _, new_h, dst, seq, payload = agent.next_frame()
        assert new_h != h and (dst, seq, payload) == (0xC, 0, b"open")
        ignored = host.stats.ignored_frames
        agent.send(ACK, 0xB, new_h, 1)  # from a former agent epoch: acknowledges nothing
        wait_until(lambda: host.stats.ignored_frames == ignored + 1, 10, "the former epoch's ACK ignored")
        assert sent.is_alive()
        agent.send(ACK, 0xC, new_h, 1)
        sent.join(30)
        assert not sent.is_alive()
    finally:
        agent.close()
        host.close()


def test_an_agent_answers_the_host_that_spoke_first_at_once(make_line):
    """The agent's hello went out to nobody (dst 0), which a host ignores; when a host starts a
    stream, the agent resends the hello addressed to it at once, not after ``ack_timeout``."""
    line = make_line()
    agent = line.open(line.end_a, "agent", ack_timeout=60)
    host = RawEnd(line.end_b)
    try:
        hello = threading.Thread(target=agent.write, args=(b"hello", 90))
        hello.start()
        _, a, dst, seq, payload = host.next_frame()
        assert (dst, seq, payload) == (0, 0, b"hello")
        host.send(DATA, 0x40, 0, 0, b"wake")
        assert host.next_frame(ACK)[1:4] == (a, 0x40, 1)
        assert host.next_frame(timeout=30)[1:] == (a, 0x40, 0, b"hello")  # long before ack_timeout
        host.send(ACK, 0x40, a, 1)
        hello.join(30)
        assert read_exactly(agent, 4) == b"wake"
        with pytest.raises(TransportTimeout):
            agent.read(100, 0.2)  # nothing else was delivered
    finally:
        host.close()
        agent.close()
