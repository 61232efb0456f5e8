"""The wire protocol: golden bytes, round trips, truncated and oversized frames, versions."""
from __future__ import annotations

import random

import msgpack
import numpy as np
import pytest

from edgert.device_agents import protocol
from edgert.errors import BundleError, ProtocolError, from_dict


def test_request_encodes_to_golden_bytes():
    frame = protocol.encode(protocol.request(1, "ping", {}))
    assert frame == (
        b"\x00\x00\x00\x26"  # body length 38
        b"\x84"  # map of 4
        b"\xa4kind\xa7request"
        b"\xa2id\x01"
        b"\xa6method\xa4ping"
        b"\xa6params\x80"
    )


def test_binary_payload_is_msgpack_bin_not_base64():
    frame = protocol.encode(protocol.response(7, {"data": b"\x00\xff"}))
    assert frame == (
        b"\x00\x00\x00\x24"  # body length 36
        b"\x83\xa4kind\xa8response\xa2id\x07"
        b"\xa6result\x81\xa4data\xc4\x02\x00\xff"  # bin 8, length 2
    )


def test_hello_round_trip_and_version_check():
    caps = protocol.Capabilities(engines=("ort", "tvm"), sensors=("ina3221:VDD_IN",),
                                 dvfs_domains=("cpu0",), free_bytes=123 << 30, arch="aarch64",
                                 emulated=True)
    message = protocol.decode(protocol.encode(protocol.hello("0.1.0", caps)))
    assert protocol.check_hello(message) == caps


def test_version_mismatch_names_both_versions():
    message = protocol.hello("9.0.0", protocol.Capabilities())
    message["protocol"] = protocol.PROTOCOL_VERSION + 1
    version = protocol.PROTOCOL_VERSION
    with pytest.raises(ProtocolError, match=rf"edgert 9\.0\.0\) speaks protocol {version + 1} but this edgert "
                                            rf"speaks protocol {version}"):
        protocol.check_hello(protocol.decode(protocol.encode(message)))


def test_check_hello_refuses_other_kinds():
    with pytest.raises(ProtocolError, match="expected a hello"):
        protocol.check_hello(protocol.heartbeat())


@pytest.mark.parametrize("message", [
    protocol.request(3, "bench.run", {"runs": 10, "nested": {"a": [1, 2.5, None, True]}}),
    protocol.response(3, {"samples": b"\x01" * 100}),
    protocol.progress(3, {"done": 5, "total": 10}),
    protocol.response(3, True),
    protocol.response(3, None),
    protocol.heartbeat(),
])
def test_round_trip(message):
    assert protocol.decode(protocol.encode(message)) == message


def test_error_round_trip_rebuilds_the_exception():
    message = protocol.decode(protocol.encode(protocol.error(4, BundleError("hash mismatch", sha256="ab"))))
    exc = from_dict(message["error"])
    assert isinstance(exc, BundleError) and exc.fields == {"sha256": "ab"} and message["id"] == 4


def test_numpy_scalars_encode_as_plain_numbers():
    message = protocol.decode(protocol.encode(protocol.response(1, {"median_ms": np.float64(1.5), "n": np.int64(3)})))
    assert message["result"] == {"median_ms": 1.5, "n": 3}


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array([1.5, -2.0], dtype=">f8"),
    np.zeros((0, 3), dtype=np.int8),
    np.array([True, False]),
    np.float16(3.0) * np.ones((2, 1, 2), dtype=np.float16),
    np.arange(6, dtype=np.int64).reshape(2, 3).T,  # non-contiguous
    np.array(2.5, dtype=np.float32),  # 0-d: a model's scalar output (was sent as shape [1])
    np.float64(-1.0),  # a numpy scalar is a 0-d array too
])
def test_array_round_trip_keeps_dtype_shape_and_values(array):
    message = protocol.decode(protocol.encode(protocol.response(1, protocol.pack_array(array))))
    assert isinstance(message["result"]["data"], bytes)
    back = protocol.unpack_array(message["result"])
    assert back.dtype == np.asarray(array).dtype and back.shape == np.shape(array)
    np.testing.assert_array_equal(back, array)


def test_samples_travel_as_raw_float64_bytes():
    samples = np.array([0.25, 1e-6, 3.0])
    packed = protocol.pack_array(samples)
    assert packed["data"] == samples.astype("<f8").tobytes() and packed["dtype"] == "<f8"


def test_object_arrays_are_refused():
    with pytest.raises(ProtocolError, match="dtype object"):
        protocol.pack_array(np.array([object()]))
    with pytest.raises(ProtocolError, match="malformed array"):
        protocol.unpack_array({"dtype": "<f4", "shape": [3], "data": b"\x00" * 8})


def test_decoder_accepts_any_chunking():
    messages = [protocol.request(i, "m", {"blob": bytes(range(i % 256)) * 3}) for i in range(50)]
    stream = b"".join(protocol.encode(m) for m in messages)
    rng = random.Random(0)
    decoder = protocol.FrameDecoder()
    got = []
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 2, 3, 7, 100, 4096])
        got += decoder.feed(stream[pos:pos + step])
        pos += step
    assert got == messages and decoder.pending == 0
    decoder.eof()


def test_truncated_frame_is_held_then_reported_at_eof():
    frame = protocol.encode(protocol.request(1, "ping", {}))
    decoder = protocol.FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending == len(frame) - 1
    with pytest.raises(ProtocolError, match=f"inside a frame \\({len(frame) - 1} of {len(frame)} bytes\\)"):
        decoder.eof()
    with pytest.raises(ProtocolError, match="inside a frame"):
        protocol.decode(frame[:2])


def test_oversized_frame_is_refused_on_decode_before_buffering():
    decoder = protocol.FrameDecoder()
    with pytest.raises(ProtocolError, match="above the 16777216-byte limit"):
        decoder.feed((protocol.MAX_FRAME_BYTES + 1).to_bytes(4, "big") + b"\x80")


def test_oversized_message_is_refused_on_encode():
    with pytest.raises(ProtocolError, match="frame limit: send large data in chunks"):
        protocol.encode(protocol.response(1, b"\x00" * protocol.MAX_FRAME_BYTES))
    protocol.encode(protocol.response(1, b"\x00" * (protocol.MAX_FRAME_BYTES - 100)))


@pytest.mark.parametrize("body, match", [
    (msgpack.packb([1, 2]), "must be a map"),
    (msgpack.packb({"kind": "shutdown"}), "unknown message kind 'shutdown'"),
    (msgpack.packb({"kind": "request", "id": 1, "method": "x"}), "lacks 'params'"),
    (msgpack.packb({"kind": "request", "id": "1", "method": "x", "params": {}}), "'id' of type str"),
    (msgpack.packb({"kind": "response", "id": True, "result": 1}), "'id' of type bool"),
    (msgpack.packb({"kind": "heartbeat"}) + b"\xc1", "undecodable"),
    (b"\xc1", "undecodable"),
    (msgpack.packb({"kind": "heartbeat", "x": msgpack.ExtType(5, b"")}), "extension type 5"),
])
def test_malformed_bodies_raise_protocol_error(body, match):
    with pytest.raises(ProtocolError, match=match):
        protocol.decode(len(body).to_bytes(4, "big") + body)


def test_random_garbage_never_escapes_as_another_exception():
    rng = random.Random(1)
    for _ in range(2000):
        body = rng.randbytes(rng.randrange(1, 40))
        try:
            protocol.FrameDecoder().feed(len(body).to_bytes(4, "big") + body)
        except ProtocolError:
            pass


def test_artifact_run_request_encodes_to_golden_bytes():
    cases = [{"x": np.array([1.0], dtype="<f4")}]
    frame = protocol.encode(protocol.request(
        3, protocol.ARTIFACT_RUN, protocol.artifact_run_params("ab", ".onnx", "ort", cases)))
    assert frame == (
        b"\x00\x00\x00\x85\x84\xa4kind\xa7request\xa2id\x03"
        b"\xa6method\xacartifact.run"
        b"\xa6params\x85\xa6sha256\xa2ab\xa6suffix\xa5.onnx\xa7backend\xa3ort\xa6target\xa4host"
        b"\xa5cases\x91\x81\xa1x"  # one case: {"x": array}
        b"\x83\xa5dtype\xa3<f4\xa5shape\x91\x01\xa4data\xc4\x04\x00\x00\x80?"  # float32 1.0
    )
    [case] = protocol.artifact_run_cases(protocol.decode(frame)["params"])
    assert case["x"].dtype == np.float32 and case["x"].tolist() == [1.0]


def test_artifact_run_result_encodes_to_golden_bytes_and_reads_back():
    records = [{"outputs": [np.array([2], dtype="<i8")], "path": {"key": "straight"}},
               {"error": "bad"}]
    frame = protocol.encode(protocol.response(3, protocol.artifact_run_result(records, 2)))
    assert frame == (
        b"\x00\x00\x00t\x83\xa4kind\xa8response\xa2id\x03"
        b"\xa6result\x82\xa4done\x02\xa7results\x92"
        b"\x82\xa7outputs\x91\x83\xa5dtype\xa3<i8\xa5shape\x91\x01"
        b"\xa4data\xc4\x08\x02\x00\x00\x00\x00\x00\x00\x00\xa4path\x81\xa3key\xa8straight"
        b"\x81\xa5error\xa3bad"
    )
    done, got = protocol.read_artifact_run_result(protocol.decode(frame)["result"])
    assert done == 2 and got[0]["outputs"][0].tolist() == [2] and got[1] == {"error": "bad"}


@pytest.mark.parametrize("params", [{}, {"cases": {"x": 1}}, {"cases": [1]},
                                    {"cases": [{"x": {"dtype": "O", "shape": [], "data": b""}}]}])
def test_malformed_artifact_run_cases_raise_protocol_error(params):
    with pytest.raises(ProtocolError):
        protocol.artifact_run_cases(params)


def test_malformed_artifact_run_result_raises_protocol_error():
    with pytest.raises(ProtocolError, match="artifact.run"):
        protocol.read_artifact_run_result({"done": 1})
