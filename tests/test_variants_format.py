"""The All-in-One file format: golden bytes, round trip, safetensors compatibility, corruption."""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from edgert.errors import BundleError
from edgert.variants import aiofile

TENSORS = {"w": np.arange(4, dtype=np.float32), "g": np.array([[7, 9]], np.uint8)}
GOLDEN_HEADER = (
    '{"__metadata__":{"header_sha256":"4851e040611aa57c23469b21e715b63d14fcf26c3fd0e0538b19783296263035",'
    '"format":"edgert-aio","version":"2","sha256":'
    '"55df25ae85e44284271d4a757d88501d8805ddb4455f3b71e39a0f6b89484fa3","aio":"{\\"levels\\":[]}"},'
    '"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},'
    '"g":{"dtype":"U8","shape":[1,2],"data_offsets":[16,18]}}'
)


def _write(path: Path) -> Path:
    aiofile.write(path, TENSORS, {"levels": []})
    return path


def test_golden_bytes(tmp_path: Path) -> None:
    raw = _write(tmp_path / "g.aio").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n == 376 and (8 + n) % aiofile.DATA_ALIGN == 0
    assert raw[8:8 + n].decode().rstrip(" ") == GOLDEN_HEADER
    zeroed = raw[:8 + n].replace(json.loads(GOLDEN_HEADER)["__metadata__"]["header_sha256"].encode(), b"0" * 64)
    assert hashlib.sha256(zeroed).hexdigest() == json.loads(GOLDEN_HEADER)["__metadata__"]["header_sha256"]
    assert raw[8 + n:] == np.arange(4, dtype="<f4").tobytes() + b"\x07\x09"
    assert hashlib.sha256(raw[8 + n:]).hexdigest() == json.loads(GOLDEN_HEADER)["__metadata__"]["sha256"]


def test_round_trip_is_zero_copy(tmp_path: Path) -> None:
    f = aiofile.read(_write(tmp_path / "g.aio"))
    assert f.meta == {"levels": []}
    for name, value in TENSORS.items():
        np.testing.assert_array_equal(f.tensors[name], value)
        assert f.tensors[name].dtype == value.dtype
        assert not f.tensors[name].flags.writeable  # a view of the read-only map, not a copy
    f.close()


def test_safetensors_library_reads_it(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    path = _write(tmp_path / "g.aio")
    loaded = load_file(str(path))
    assert set(loaded) == set(TENSORS)
    for name, value in TENSORS.items():
        np.testing.assert_array_equal(loaded[name], value)
    with safetensors.safe_open(str(path), framework="np") as f:
        assert f.metadata()["format"] == "edgert-aio"


def test_flipped_data_byte_fails_the_checksum(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.aio")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum"):
        aiofile.read(path)


@pytest.mark.parametrize("cut", [0, 4, 100, 337])
def test_truncated_file(tmp_path: Path, cut: int) -> None:
    path = _write(tmp_path / "g.aio")
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(BundleError):
        aiofile.read(path)


def test_absurd_header_length(tmp_path: Path) -> None:
    path = tmp_path / "bad.aio"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(BundleError, match="header claims"):
        aiofile.read(path)


@pytest.mark.parametrize("entry", [
    {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]},  # size does not match the shape
    {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]},  # unknown dtype
    {"dtype": "F32", "shape": "x", "data_offsets": [0, 4]},  # not a shape
    {"dtype": "F32", "shape": [1]},  # no offsets
    [1, 2, 3],  # not an object
])
def test_malformed_tensor_entry(tmp_path: Path, entry: object) -> None:
    meta = {"format": "edgert-aio", "version": "2", "sha256": hashlib.sha256(b"\0" * 4).hexdigest(), "aio": "{}"}
    path = tmp_path / "bad.aio"
    path.write_bytes(aiofile._head_bytes({"__metadata__": meta, "x": entry}) + b"\0\0\0\0")  # checksum right
    with pytest.raises(BundleError, match="bad.aio"):
        aiofile.read(path)


def test_plain_safetensors_file_is_refused(tmp_path: Path) -> None:
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "plain.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")
    with pytest.raises(BundleError, match="not an All-in-One file"):
        aiofile.read(path)


def test_rewrite_metadata_keeps_data(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.aio")
    table = '{"frequencies": [1.0], "ratios": [0.0], "p50_ms": [[2.5]]}'
    aiofile.rewrite_metadata(path, {"calibration": table})
    f = aiofile.read(path)  # both checksums still verify
    assert f.metadata["calibration"] == table
    np.testing.assert_array_equal(f.tensors["w"], TENSORS["w"])
    f.close()


def test_two_writers_at_once_never_corrupt_the_file(tmp_path: Path) -> None:
    """Two processes storing tables in one file at once (two `edgert search` runs): each writes
    its own temp file and renames a whole one, so the file stays valid (the last one wins)."""
    from conftest import two_writers_at_once

    path = _write(tmp_path / "a.aio")
    two_writers_at_once("from edgert.variants import tables\n"
                        "for i in range(int(sys.argv[3])):\n"
                        "    tables.store(sys.argv[1], {'ofa/test': {'who': sys.argv[2], 'pad': sys.argv[2] * 1000 * (1 + i % 5)}})\n",
                        path, 40)
    aiofile.read(path).close()  # valid, checksum and all
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_rewriting_keeps_mode_and_links_and_ignores_planted_temp_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.aio")
    path.chmod(0o600)
    link = tmp_path / "link.aio"
    link.symlink_to(path)
    victim = tmp_path / "victim.txt"
    victim.write_text("important")
    (tmp_path / "link.aio.tmp").symlink_to(victim)  # the old fixed temp name
    (tmp_path / "a.aio.tmp").symlink_to(victim)
    aiofile.rewrite_metadata(link, {"note": "x"})
    assert link.is_symlink() and aiofile.read(path).metadata["note"] == "x"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert victim.read_text() == "important"


def test_a_fifo_or_a_device_is_refused_without_blocking(tmp_path: Path) -> None:
    """`edgert search fifo.aio` hung in open() waiting for a writer; /dev/zero was 'empty'."""
    import os

    fifo = tmp_path / "fifo.aio"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(BundleError, match="not a regular file"):
            aiofile.read(path)


def test_a_flip_inside_the_stored_digest_shows_two_different_digests(tmp_path: Path) -> None:
    """The message showed 12 characters of each, identical when the flip fell after them."""
    import re

    path = _write(tmp_path / "a.aio")
    raw = bytearray(path.read_bytes())
    at = bytes(raw).index(b'"header_sha256":"') + len(b'"header_sha256":"') + 40
    raw[at] = ord("0") if raw[at] != ord("0") else ord("1")
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="header checksum") as caught:
        aiofile.read(path)
    digests = re.findall(r"[0-9a-f]{64}", str(caught.value))
    assert len(digests) == 2 and digests[0] != digests[1]
