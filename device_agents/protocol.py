"""The host <-> agent wire protocol: message dicts, msgpack frames, a streaming decoder.

Pure: no I/O, so it runs unchanged over SSH stdio, TCP and the serial link layer.

Frame  = 4-byte big-endian body length + msgpack body (at most ``MAX_FRAME_BYTES``).
Body   = a msgpack map with a ``"kind"`` key; the layouts are built by the functions below:

    hello      {"kind": "hello", "protocol": int, "agent_version": str, "capabilities": {...}}
    request    {"kind": "request", "id": int, "method": str, "params": {...}}
    response   {"kind": "response", "id": int, "result": any}
    error      {"kind": "error", "id": int | None, "error": EdgertError.to_dict()}
    progress   {"kind": "progress", "id": int, "data": any}
    heartbeat  {"kind": "heartbeat"}

Requests are named by ``method``; most carry free-form params. ``artifact.run`` (protocol 2)
has its layouts here, built and read by the ``artifact_run_*`` functions:

    params     {"sha256": str, "suffix": str, "backend": str, "target": str,
                "cases": [{input name: array}, ...]}
    result     {"done": int, "results": [{"outputs": [array, ...], "names": [str, ...],
                                          "path": {...} (bundles: Trace.to_dict + "segments")}
                                         | {"error": str}, ...]}

``done`` may be less than the number of cases: the agent stops once the outputs would not
fit in one frame, and the host sends the rest again.

Binary payloads (bundle chunks, tensors, sample arrays) travel as msgpack ``bin`` (``bytes``),
never base64: ``pack_array`` gives ``{"dtype": "<f4", "shape": [..], "data": b".."}``.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Any

import msgpack
import numpy as np

from edgert.errors import EdgertError, ProtocolError

# History of PROTOCOL_VERSION (bump on any change a peer of the old version would misread):
#   1  edgert 0.1.0: hello/request/response/error/progress/heartbeat, 4-byte length frames.
#   2  the "artifact.run" request (run a stored model or bundle on input cases; outputs and the
#      path taken come back): an agent of version 1 would answer it with "unknown request".
#   3  sweep.run carries a typed SweepRequest (settings.SweepRequest.to_dict) under "request".
#   4  the "bench.interleaved" request (several stored artifacts timed in alternating blocks,
#      device_agents.interleave): an agent of version 3 would answer it with "unknown request".
# Not a bump: 0-d arrays travel with shape [] (they were sent as [1]; any version reads []).
# Not a bump: "session.close" (the host's goodbye, so a serial agent greets the next host at
# once) is best effort; an older agent answers "unknown request" and the host ignores it.
PROTOCOL_VERSION = 4

MAX_FRAME_BYTES = 16 * 1024 * 1024  # body bytes; bundle chunks must stay well below this
HEADER = struct.Struct(">I")

KINDS = ("hello", "request", "response", "error", "progress", "heartbeat")

# Required keys and their types per kind; checked on decode so the agent never sees half a message.
_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "hello": {"protocol": (int,), "agent_version": (str,), "capabilities": (dict,)},
    "request": {"id": (int,), "method": (str,), "params": (dict,)},
    "response": {"id": (int,), "result": (object,)},
    "error": {"id": (int, type(None)), "error": (dict,)},
    "progress": {"id": (int,), "data": (object,)},
    "heartbeat": {},
}


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What an agent can do, sent in its hello so the host can refuse early and say why."""

    engines: tuple[str, ...] = ()  # backend names that load on this device, e.g. ("ort", "tvm")
    sensors: tuple[str, ...] = ()  # power/temperature sensor names the agent can sample
    dvfs_domains: tuple[str, ...] = ()  # cpufreq/devfreq domains it may pin
    free_bytes: int = 0  # space left in the artifact store
    arch: str = ""  # platform.machine(), e.g. "aarch64"
    emulated: bool = False  # an emulated board: the host labels every timing it takes there

    def to_dict(self) -> dict[str, Any]:
        return {
            "engines": list(self.engines), "sensors": list(self.sensors),
            "dvfs_domains": list(self.dvfs_domains), "free_bytes": self.free_bytes,
            "arch": self.arch, "emulated": self.emulated,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Capabilities":
        try:
            return cls(
                engines=tuple(data.get("engines", ())), sensors=tuple(data.get("sensors", ())),
                dvfs_domains=tuple(data.get("dvfs_domains", ())),
                free_bytes=int(data.get("free_bytes", 0)), arch=str(data.get("arch", "")),
                emulated=bool(data.get("emulated", False)),
            )
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"the agent sent malformed capabilities: {exc}") from exc


def hello(agent_version: str, capabilities: Capabilities) -> dict[str, Any]:
    return {"kind": "hello", "protocol": PROTOCOL_VERSION, "agent_version": agent_version,
            "capabilities": capabilities.to_dict()}


def request(id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "request", "id": id, "method": method, "params": params or {}}


def response(id: int, result: Any) -> dict[str, Any]:
    return {"kind": "response", "id": id, "result": result}


def error(id: int | None, exc: EdgertError) -> dict[str, Any]:
    """An error reply; the host rebuilds the exception with ``edgert.errors.from_dict``."""
    return {"kind": "error", "id": id, "error": exc.to_dict()}


def progress(id: int, data: Any) -> dict[str, Any]:
    return {"kind": "progress", "id": id, "data": data}


def heartbeat() -> dict[str, Any]:
    return {"kind": "heartbeat"}


def check_hello(message: dict[str, Any]) -> Capabilities:
    """The agent's capabilities, or a ProtocolError telling the user to align versions."""
    if message.get("kind") != "hello":
        raise ProtocolError(f"expected a hello from the agent, got a {message.get('kind')!r} message",
                            kind=message.get("kind"))
    check_version(message["protocol"], message["agent_version"])
    return Capabilities.from_dict(message["capabilities"])


def check_version(peer_protocol: int, peer_version: str = "unknown") -> None:
    if peer_protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            f"the agent (edgert {peer_version}) speaks protocol {peer_protocol} but this edgert "
            f"speaks protocol {PROTOCOL_VERSION}: install the same edgert version on host and device",
            peer_protocol=peer_protocol, protocol=PROTOCOL_VERSION, peer_version=peer_version,
        )


def pack_array(array: np.ndarray) -> dict[str, Any]:
    """A numpy array as dtype string (with byte order), shape and raw bytes (msgpack bin).

    ``np.asarray``, not ``np.ascontiguousarray``: the latter returns at least one dimension,
    so a 0-d output (a ReduceMean to a scalar) arrived as shape (1,). ``tobytes`` is C order.
    """
    array = np.asarray(array)
    if array.dtype.hasobject or array.dtype.fields is not None:
        raise ProtocolError(f"cannot send an array of dtype {array.dtype} (only plain numeric/bool dtypes)")
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def unpack_array(packed: dict[str, Any]) -> np.ndarray:
    """The inverse of ``pack_array``; a read-only view on the received bytes (copy to mutate)."""
    try:
        dtype = np.dtype(packed["dtype"])
        shape = tuple(int(d) for d in packed["shape"])
        if dtype.hasobject or dtype.fields is not None:
            raise ValueError(f"dtype {dtype} is not a plain numeric/bool dtype")
        return np.frombuffer(packed["data"], dtype=dtype).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed array in message: {exc}") from exc


# -- artifact.run (protocol 2) -------------------------------------------------------------
ARTIFACT_RUN = "artifact.run"
CASES_BUDGET_BYTES = MAX_FRAME_BYTES // 2  # array bytes per artifact.run frame, either way


def array_bytes(arrays: Any) -> int:
    """Raw bytes of the numpy arrays in a dict or list (what they add to a frame)."""
    values = arrays.values() if isinstance(arrays, dict) else arrays
    return sum(np.asarray(a).nbytes for a in values)


def artifact_run_params(sha256: str, suffix: str, backend: str, cases: list[dict[str, np.ndarray]],
                        target: str = "host") -> dict[str, Any]:
    return {"sha256": sha256, "suffix": suffix, "backend": backend, "target": target,
            "cases": [{name: pack_array(np.asarray(v)) for name, v in case.items()}
                      for case in cases]}


def artifact_run_cases(params: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """The request's input cases as numpy feeds (ProtocolError when malformed)."""
    cases = params.get("cases")
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise ProtocolError("artifact.run needs 'cases': a list of {input name: array}")
    return [{str(name): unpack_array(v) for name, v in case.items()} for case in cases]


def artifact_run_result(records: list[dict[str, Any]], done: int) -> dict[str, Any]:
    """``edgert.execute.run_cases`` records (numpy outputs) as a result body."""
    return {"done": done, "results": [
        dict(r, outputs=[pack_array(o) for o in r["outputs"]]) if "outputs" in r else r
        for r in records]}


def read_artifact_run_result(result: Any) -> tuple[int, list[dict[str, Any]]]:
    """(cases done, their records with numpy outputs) from an artifact.run result."""
    try:
        done, records = int(result["done"]), list(result["results"])
        return done, [dict(r, outputs=[unpack_array(o) for o in r["outputs"]])
                      if "outputs" in r else dict(r) for r in records[:done]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed artifact.run result: {exc}") from exc


def _default(value: Any) -> Any:
    """numpy scalars from engines and stats become plain ints/floats/bools."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode(message: dict[str, Any], max_frame_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """One frame (length header + body) for ``message``."""
    validate(message)
    try:
        body = msgpack.packb(message, use_bin_type=True, default=_default)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode {message['kind']} message: {exc}") from exc
    if len(body) > max_frame_bytes:
        raise ProtocolError(
            f"{message['kind']} message is {len(body)} bytes, above the {max_frame_bytes}-byte "
            "frame limit: send large data in chunks", size=len(body), limit=max_frame_bytes,
        )
    return HEADER.pack(len(body)) + body


def decode(frame: bytes, max_frame_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Exactly one complete frame -> message."""
    decoder = FrameDecoder(max_frame_bytes)
    messages = decoder.feed(frame)
    decoder.eof()
    if len(messages) != 1:
        raise ProtocolError(f"expected one frame, got {len(messages)}")
    return messages[0]


def validate(message: Any) -> dict[str, Any]:
    """``message`` itself if it has a known kind and that kind's fields, else ProtocolError."""
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a map, got {type(message).__name__}")
    kind = message.get("kind")
    if kind not in _FIELDS:
        raise ProtocolError(f"unknown message kind {kind!r} (known: {', '.join(KINDS)})", kind=kind)
    for key, types in _FIELDS[kind].items():
        if key not in message:
            raise ProtocolError(f"{kind} message lacks {key!r}", kind=kind, key=key)
        value = message[key]
        if not isinstance(value, types) or (isinstance(value, bool) and int in types):  # ids: no bools
            raise ProtocolError(f"{kind} message has {key!r} of type {type(value).__name__}",
                                kind=kind, key=key)
    return message


class FrameDecoder:
    """Turns a byte stream cut anywhere into messages: ``feed(chunk) -> [message, ...]``."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if size > self.max_frame_bytes:
                # Checked before buffering the body: a corrupt header must not make us wait for 4 GiB.
                raise ProtocolError(
                    f"peer announced a {size}-byte frame, above the {self.max_frame_bytes}-byte limit "
                    "(corrupt stream or wrong protocol?)", size=size, limit=self.max_frame_bytes,
                )
            end = HEADER.size + size
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[HEADER.size:end])
            del self._buffer[:end]
            messages.append(_unpack_body(body))
        return messages

    def eof(self) -> None:
        """The stream ended: a held-back partial frame means the peer was cut off mid-message."""
        if self._buffer:
            have = len(self._buffer)
            need = HEADER.unpack_from(self._buffer)[0] + HEADER.size if have >= HEADER.size else HEADER.size
            raise ProtocolError(f"stream ended inside a frame ({have} of {need} bytes)",
                                received=have, expected=need)


def _unpack_body(body: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # ExtraData, FormatError, ...
        raise ProtocolError(f"undecodable frame body: {exc}") from exc
    return validate(message)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")
