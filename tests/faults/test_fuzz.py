"""Hypothesis fuzzing of every parser that reads bytes from outside: the wire protocol, the
serial link frames, the All-in-One header and the bundle container (issue 16, case 4).
Each may only answer with its own error class, never another exception."""
from __future__ import annotations

import hashlib
import json
import struct
import zipfile

import msgpack
from hypothesis import HealthCheck, given, settings, strategies as st

from edgert.device_agents import framing, protocol
from edgert.dynamic.bundle import FORMAT_VERSION, SEAL_BYTES, Bundle, seal
from edgert.errors import BundleError, ProtocolError
from edgert.variants import aiofile

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20) \
    | st.binary(max_size=20)
json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) \
    | st.text(max_size=12)


def nested(leaves):
    return st.recursive(leaves, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.text(max_size=8), kids, max_size=4), max_leaves=20)


@FUZZ
@given(st.binary(max_size=300), st.integers(1, 64))
def test_frame_decoder_on_arbitrary_bytes_cut_anywhere(data, cut):
    decoder = protocol.FrameDecoder(max_frame_bytes=4096)
    try:
        for start in range(0, len(data), cut):
            for message in decoder.feed(data[start:start + cut]):
                assert protocol.validate(message) is message
        decoder.eof()
    except ProtocolError:
        pass


@FUZZ
@given(nested(scalars) | st.fixed_dictionaries({"kind": st.sampled_from(protocol.KINDS)}, optional={
    "id": scalars, "method": scalars, "params": nested(scalars), "protocol": scalars, "result": nested(scalars),
    "error": nested(scalars), "data": nested(scalars), "agent_version": scalars, "capabilities": nested(scalars)}))
def test_any_msgpack_body_is_a_valid_message_or_a_protocol_error(value):
    body = msgpack.packb(value, use_bin_type=True)
    try:
        message = protocol.decode(protocol.HEADER.pack(len(body)) + body)
    except ProtocolError:
        return
    assert message["kind"] in protocol.KINDS


@FUZZ
@given(st.binary(max_size=200))
def test_serial_frame_decoder_never_raises(raw):
    decoded = framing.decode_frame(raw.replace(b"\0", b""))
    assert decoded is None or decoded[0] in (framing.DATA, framing.ACK, framing.NAK)


@FUZZ
@given(st.binary(max_size=300))
def test_cobs_round_trip(data):
    assert b"\0" not in framing.cobs_encode(data)
    assert framing.cobs_decode(framing.cobs_encode(data)) == data


def _checksummed(header_text: bytes) -> bytes:
    """An All-in-One head around ``header_text`` (a JSON object body after the checksum key)."""
    text = b'{"__metadata__":{"header_sha256":"' + b"0" * 64 + b'"' + header_text
    text += b" " * (-(8 + len(text)) % 64)
    head = struct.pack("<Q", len(text)) + text
    return head.replace(b"0" * 64, hashlib.sha256(head).hexdigest().encode(), 1)


tensor_entries = st.fixed_dictionaries({}, optional={
    "dtype": st.sampled_from(["F32", "U8", "I64", "Q9"]) | json_scalars,
    "shape": st.lists(st.integers(-3, 2**40) | json_scalars, max_size=4) | nested(json_scalars),
    "data_offsets": st.lists(st.integers(-8, 64) | json_scalars, max_size=3) | nested(json_scalars)})
aio_meta = st.fixed_dictionaries({}, optional={
    "levels": st.lists(st.fixed_dictionaries({}, optional={
        "ratio": json_scalars, "weight_bytes": json_scalars, "kept": nested(json_scalars),
        "graph": st.sampled_from(["t0", "t1"]) | json_scalars, "sliced_graph": json_scalars,
        "params": st.dictionaries(st.text(max_size=3), st.fixed_dictionaries({}, optional={
            "tensor": st.sampled_from(["t0", "t1"]) | json_scalars, "ranges": nested(json_scalars)}), max_size=2)}),
        max_size=2) | nested(json_scalars)})


@FUZZ
@given(st.dictionaries(st.text(max_size=8), nested(json_scalars), max_size=3),
       st.dictionaries(st.sampled_from(["t0", "t1", "t2"]), tensor_entries | nested(json_scalars), max_size=3),
       aio_meta | nested(json_scalars), st.binary(max_size=32), st.booleans())
def test_aio_header_parser_answers_only_with_bundle_errors(tmp_path_factory, extra_meta, tensors, meta, data,
                                                          valid_data_sha):
    metadata = {"format": "edgert-aio", "version": "2", **extra_meta,
                "aio": json.dumps(meta), "sha256": hashlib.sha256(data).hexdigest() if valid_data_sha else "x"}
    body = json.dumps(metadata)[1:-1]
    text = (("," + body) if body else "") + "}" + "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in tensors.items()) + "}"
    path = tmp_path_factory.mktemp("aio") / "fuzz.aio"
    path.write_bytes(_checksummed(text.encode()) + data)
    try:
        aiofile.read(path).close()
    except BundleError as exc:
        assert "fuzz.aio" in exc.message


@FUZZ
@given(st.binary(max_size=400), st.integers(0, 399), st.binary(min_size=1, max_size=8))
def test_bundle_reader_on_damaged_zips_answers_only_with_bundle_errors(tmp_path_factory, member, at, junk):
    path = tmp_path_factory.mktemp("zip") / "fuzz.edgert"
    with zipfile.ZipFile(path, "w") as archive:
        manifest = json.dumps({"format": "edgert-bundle", "format_version": FORMAT_VERSION, "members": {
            "m": {"sha256": hashlib.sha256(member).hexdigest(), "size": len(member)}}}).encode()
        archive.writestr(zipfile.ZipInfo("manifest.json"), manifest, zipfile.ZIP_DEFLATED)
        archive.writestr(zipfile.ZipInfo("m"), member, zipfile.ZIP_DEFLATED)
        archive.comment = bytes(SEAL_BYTES)  # sealed below, as write_bundle does
    raw = bytearray(seal(path.read_bytes()))
    at %= len(raw)
    raw[at:at + len(junk)] = junk
    path.write_bytes(bytes(raw))
    try:
        Bundle(path)
    except BundleError as exc:
        assert "fuzz.edgert" in exc.message
