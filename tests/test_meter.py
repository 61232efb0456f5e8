"""Serial power meters against emulators on real ptys (raw mode; pyserial on the host end)."""
from __future__ import annotations

import os
import select
import struct
import threading
import time
import tty

import pytest

from edgert.device_agents.meter import (LineMeter, UmMeter, open_meter, parse_line, parse_meter_url,
                                 parse_um_frame)
from edgert.device_agents.sampler import Sampler
from edgert.errors import DeviceError, UsageError

UM34C_CSUM_AT = (1, 3, 7, 9, 15, 17, 19, 23, 31, 39, 41, 45, 49, 53, 55, 57, 59, 63, 67, 69,
                 73, 79, 83, 89, 97, 99, 109, 111, 113, 119, 121, 127)


class Pty:
    """A pty pair in raw mode: the emulator writes ``master``, pyserial opens ``path``."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave  # held open so the master never sees EOF between host opens
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:  # before closing: a reused fd number must not reach them
            thread.join()
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


def um_frame(model_id: int, raw_volts: int, raw_amps: int, celsius: int = 31) -> bytes:
    """A 130-byte UM reply laid out as libsigrok's rdtech-um driver reads it."""
    frame = bytearray(130)
    struct.pack_into(">HHHIH", frame, 0, model_id, raw_volts, raw_amps, 0, celsius)
    if model_id == 0x0D4C:
        csum = 0
        for i in UM34C_CSUM_AT:
            csum ^= frame[i]
        frame[129] = csum
    else:
        frame[128:130] = b"\xff\xf1"
    return bytes(frame)


def serve_um(pty: Pty, frame: bytes) -> threading.Thread:
    """Answer every 0xF0 poll byte with ``frame``, like the meter's SPP link."""
    def run() -> None:
        while not pty.stop.is_set():
            ready, _, _ = select.select([pty.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(pty.master, 64)
            except OSError:
                return
            for byte in data:
                if byte == 0xF0:
                    os.write(pty.master, frame)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    pty.threads.append(thread)
    return thread


def test_line_format_parses_watts_and_volts_amps():
    assert parse_line("t=12.5 W=4.87") == {"meter_t_s": 12.5, "watts": 4.87}
    assert parse_line("V=5.0,A=0.5") == {"volts": 5.0, "amps": 0.5, "watts": 2.5}
    assert parse_line("v=5 a=1 w=4.9  # W wins when given") == {"volts": 5.0, "amps": 1.0, "watts": 4.9}
    assert parse_line("   # comment only") is None
    with pytest.raises(DeviceError, match="neither"):
        parse_line("t=3 V=5.0")


def test_meter_urls():
    url = parse_meter_url("meter+line:///dev/ttyUSB1?baud=57600")
    assert (url.protocol, url.path, url.baud) == ("line", "/dev/ttyUSB1", 57600)
    assert parse_meter_url("meter+um25c:///dev/rfcomm0").baud == 9600
    with pytest.raises(UsageError, match="unknown power meter"):
        parse_meter_url("meter+fluke:///dev/ttyUSB0")
    with pytest.raises(UsageError, match="no serial device"):
        parse_meter_url("meter+line://")


def test_line_meter_on_a_pty_feeds_the_sampler_every_line(pty):
    values = [4.0 + i / 100 for i in range(30)]

    def emit() -> None:
        time.sleep(0.1)
        for i, w in enumerate(values):
            line = f"t={i * 0.01:.2f} W={w}\n" if i % 2 else f"V=5.0,A={w / 5.0}\n"
            os.write(pty.master, line[:5].encode())
            time.sleep(0.08 if i < 3 else 0.002)  # longer than the read timeout: joined again
            os.write(pty.master, line[5:].encode())
            time.sleep(0.01)

    meter = open_meter(f"meter+line://{pty.path}?timeout=0.05")
    assert isinstance(meter, LineMeter) and meter.streaming
    sampler = Sampler(meter, rate_hz=1000).start()
    t0 = time.perf_counter_ns()
    writer = threading.Thread(target=emit)
    writer.start()
    writer.join()
    deadline = time.monotonic() + 30
    while len(sampler._v) < len(values) and time.monotonic() < deadline:
        time.sleep(0.01)  # the sampler thread reads what is queued in the pty at its own pace
    block = sampler.stop()
    meter.close()
    assert block["kind"] == "watts" and block["read_errors"] == 0
    assert block["values"] == pytest.approx(values)
    assert all(t0 < t for t in block["t_ns"]) and block["t_ns"] == sorted(block["t_ns"])


def test_um25c_on_a_pty(pty):
    serve_um(pty, um_frame(0x09C9, 5123, 4567, celsius=29))  # 5.123 V, 0.4567 A
    meter = open_meter(f"meter+um25c://{pty.path}?timeout=0.5")
    assert isinstance(meter, UmMeter)
    reading = meter.poll()
    assert reading["model"] == "UM25C" and reading["celsius"] == 29.0
    assert reading["volts"] == pytest.approx(5.123) and reading["amps"] == pytest.approx(0.4567)
    assert meter.read() == pytest.approx(5.123 * 0.4567)
    sampler = Sampler(meter, rate_hz=100)
    assert sampler.interval_s == 0.5  # bounded by the meter's 2 Hz refresh
    block = sampler.sample_for(0.8)
    meter.close()
    assert block["values"] == pytest.approx([5.123 * 0.4567] * 3)  # at 0, 0.5 s and on stop


def test_um24c_and_um34c_scales_and_checksums():
    um24 = parse_um_frame(um_frame(0x0963, 512, 1234))
    assert (um24["model"], um24["volts"], um24["amps"]) == ("UM24C", pytest.approx(5.12), pytest.approx(1.234))
    um34 = parse_um_frame(um_frame(0x0D4C, 1999, 250))
    assert (um34["model"], um34["volts"], um34["amps"]) == ("UM34C", pytest.approx(19.99), pytest.approx(0.25))
    bad = bytearray(um_frame(0x0D4C, 1999, 250))
    bad[3] ^= 0x01  # a flipped bit in a checksummed byte
    with pytest.raises(DeviceError, match="check bytes"):
        parse_um_frame(bytes(bad))
    with pytest.raises(DeviceError, match="model id"):
        parse_um_frame(um_frame(0x1234, 1, 1))
    with pytest.raises(DeviceError, match="expected 130"):
        parse_um_frame(um_frame(0x09C9, 1, 1)[:129])


def test_a_silent_um_meter_fails_at_open_with_the_reason(pty):
    with pytest.raises(DeviceError, match="0 of 130 bytes"):
        open_meter(f"meter+um25c://{pty.path}?timeout=0.2")
