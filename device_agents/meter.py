"""External power meters on a serial line (pyserial): a plain line format and RDTech UM testers.

URLs (``--power``):

    meter+line:///dev/ttyUSB1?baud=115200   a meter that prints one reading per line
    meter+um25c:///dev/rfcomm0              RDTech UM24C/UM25C/UM34C, polled with byte 0xF0

Line format (docs/sweep-schema.md): whitespace- or comma-separated ``key=value`` tokens,
keys case-insensitive: ``W`` (watts) or ``V`` and ``A`` (volts, amps; watts = V*A), optional
``t`` (the meter's own seconds, kept but not used for alignment). ``#`` starts a comment.
Example lines: ``t=12.500 W=4.87`` and ``V=5.02,A=0.97``. Readings are timestamped on this
machine's monotonic clock when the line arrives.

UM frame (libsigrok ``rdtech-um``): 130 bytes, big-endian; bytes 0-1 the model id
(0x0963 UM24C, 0x09c9 UM25C, 0x0d4c UM34C), 2-3 voltage (UM25C mV, others 10 mV),
4-5 current (UM25C 0.1 mA, others mA), 10-11 temperature °C; UM24C/UM25C end in 0xFFF1,
the UM34C's last byte is the XOR of fixed positions.
"""
from __future__ import annotations

import dataclasses
import re
import struct
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edgert.errors import DeviceError, UsageError

POLL = b"\xf0"
FRAME_LEN = 130
UM_MODELS = {0x0963: "UM24C", 0x09C9: "UM25C", 0x0D4C: "UM34C"}
# (volts per count, amps per count) by model; the UM25C has one more digit of each.
_UM_SCALE = {"UM24C": (0.01, 0.001), "UM25C": (0.001, 0.0001), "UM34C": (0.01, 0.001)}
_UM34C_CSUM_AT = (1, 3, 7, 9, 15, 17, 19, 23, 31, 39, 41, 45, 49, 53, 55, 57, 59, 63, 67, 69,
                  73, 79, 83, 89, 97, 99, 109, 111, 113, 119, 121, 127)
# The UM testers refresh their readings twice a second (RDTech's UM25C specification);
# polling faster only returns the same value again.
UM_UPDATE_INTERVAL_S = 0.5
PROTOCOLS = {"line": 115200, "um24c": 9600, "um25c": 9600, "um34c": 9600}

_TOKEN = re.compile(r"([A-Za-z]+)\s*=\s*([-+0-9.eE]+)")


@dataclasses.dataclass(frozen=True)
class MeterUrl:
    protocol: str  # "line" or "um24c"/"um25c"/"um34c" (one protocol: the model is read from the frame)
    path: str
    baud: int
    timeout_s: float = 1.0


def parse_meter_url(url: str) -> MeterUrl:
    """``meter+PROTOCOL:///dev/X?baud=N&timeout=S`` -> MeterUrl; UsageError naming the bad part."""
    parts = urlsplit(url)
    protocol = parts.scheme[len("meter+"):] if parts.scheme.startswith("meter+") else ""
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown power meter {url!r}: use meter+line:///dev/ttyX?baud=N or "
                         "meter+um25c:///dev/rfcommN")
    if not parts.path:
        raise UsageError(f"power meter URL {url!r} names no serial device")
    query = parse_qs(parts.query)
    try:
        baud = int(query.get("baud", [PROTOCOLS[protocol]])[0])
        timeout = float(query.get("timeout", [1.0])[0])
    except ValueError as exc:
        raise UsageError(f"power meter URL {url!r}: {exc}") from None
    return MeterUrl(protocol, parts.path, baud, timeout)


def parse_line(text: str) -> dict[str, float] | None:
    """One line of the line format -> ``{"watts", "volts"?, "amps"?, "meter_t_s"?}``, or None
    for blank/comment lines. A line with neither W nor both V and A raises DeviceError."""
    text = text.split("#", 1)[0].strip()
    if not text:
        return None
    fields = {k.lower(): float(v) for k, v in _TOKEN.findall(text)}
    out: dict[str, float] = {}
    if "t" in fields:
        out["meter_t_s"] = fields["t"]
    if "v" in fields and "a" in fields:
        out["volts"], out["amps"] = fields["v"], fields["a"]
    if "w" in fields:
        out["watts"] = fields["w"]
    elif "volts" in out:
        out["watts"] = out["volts"] * out["amps"]
    else:
        raise DeviceError(f"power meter line {text!r} has neither W= nor V= and A=", line=text)
    return out


def parse_um_frame(frame: bytes) -> dict[str, Any]:
    """A 130-byte UM24C/UM25C/UM34C reply -> ``{"model", "volts", "amps", "watts", "celsius"}``."""
    if len(frame) != FRAME_LEN:
        raise DeviceError(f"UM meter sent {len(frame)} bytes, expected {FRAME_LEN}", size=len(frame))
    (model_id,) = struct.unpack_from(">H", frame, 0)
    model = UM_MODELS.get(model_id)
    if model is None:
        raise DeviceError(f"unknown UM meter model id 0x{model_id:04x}", model_id=model_id)
    if model == "UM34C":
        csum = 0
        for i in _UM34C_CSUM_AT:
            csum ^= frame[i]
        ok = frame[-1] == csum
    else:
        ok = frame[-2:] == b"\xff\xf1"
    if not ok:
        raise DeviceError(f"{model} frame failed its check bytes (line noise or a partial frame)",
                          model=model)
    raw_v, raw_a = struct.unpack_from(">HH", frame, 2)
    (celsius,) = struct.unpack_from(">H", frame, 10)
    v_step, a_step = _UM_SCALE[model]
    volts, amps = raw_v * v_step, raw_a * a_step
    return {"model": model, "volts": volts, "amps": amps, "watts": volts * amps,
            "celsius": float(celsius)}


def _open_serial(url: MeterUrl) -> Any:
    import serial  # pyserial: only needed when a meter is in use

    try:
        return serial.serial_for_url(url.path, baudrate=url.baud, timeout=url.timeout_s)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DeviceError(f"cannot open power meter {url.path}: {exc}", path=url.path) from exc


class LineMeter:
    """A meter that pushes lines; ``read`` blocks until one arrives (or the timeout)."""

    kind = "watts"
    streaming = True
    min_interval_s = 0.0

    def __init__(self, url: MeterUrl, port: Any = None) -> None:
        self.url = url
        self.name = f"meter+line://{url.path}"
        self._port = port if port is not None else _open_serial(url)
        self._partial = b""

    def read(self) -> float | None:
        """Watts from the next complete line; None when nothing arrived within the timeout."""
        import serial

        try:
            data = self._port.readline()
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"power meter {self.url.path} failed: {exc}", path=self.url.path) from exc
        self._partial += data
        if not self._partial.endswith(b"\n"):
            return None  # timed out mid-line; the rest follows on the next read
        line, self._partial = self._partial, b""
        reading = parse_line(line.decode("ascii", errors="replace"))
        return None if reading is None else reading["watts"]

    def close(self) -> None:
        self._port.close()


class UmMeter:
    """RDTech UM24C/UM25C/UM34C: write 0xF0, read one 130-byte frame."""

    kind = "watts"
    streaming = False
    min_interval_s = UM_UPDATE_INTERVAL_S

    def __init__(self, url: MeterUrl, port: Any = None) -> None:
        self.url = url
        self.name = f"meter+{url.protocol}://{url.path}"
        self._port = port if port is not None else _open_serial(url)
        self.model: str | None = None

    def poll(self) -> dict[str, Any]:
        import serial

        try:
            self._port.reset_input_buffer()  # drop the tail of a frame we gave up on
            self._port.write(POLL)
            frame = self._port.read(FRAME_LEN)
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"power meter {self.url.path} failed: {exc}", path=self.url.path) from exc
        if len(frame) < FRAME_LEN:
            raise DeviceError(f"UM meter on {self.url.path} answered {len(frame)} of {FRAME_LEN} "
                              f"bytes within {self.url.timeout_s} s (is it paired and on?)",
                              path=self.url.path)
        reading = parse_um_frame(frame)
        self.model = reading["model"]
        return reading

    def read(self) -> float:
        return self.poll()["watts"]

    def close(self) -> None:
        self._port.close()


def open_meter(url: str) -> LineMeter | UmMeter:
    """Open the meter named by a ``meter+...`` URL (a sampler source)."""
    parsed = parse_meter_url(url)
    meter = LineMeter(parsed) if parsed.protocol == "line" else UmMeter(parsed)
    if isinstance(meter, UmMeter):
        try:
            meter.poll()  # fail now, with the reason, rather than as a sweep full of gaps
        except DeviceError:
            meter.close()
            raise
    return meter
