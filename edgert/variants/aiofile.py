"""Read and write All-in-One files: safetensors-compatible, memory-mapped, checksummed.

Layout (docs/aio-format.md): 8-byte little-endian header length N, N bytes of JSON (padded
with spaces so the data section starts at a multiple of 64), then the data section. Tensors
are laid out largest element size first, so every tensor is aligned to its element size
and can be viewed in place. ``__metadata__`` (string -> string, as safetensors requires)
comes first and starts with ``header_sha256``: the sha256 of the first 8 + N bytes with
those 64 hex digits read as zeros, checked before the header is parsed. It also carries
``format``, ``version``, ``sha256`` (of the data section) and ``aio`` (JSON); every field
is then checked by ``aiocheck``.

Device-side: stdlib and numpy only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import mmap
import os
import stat
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgert.atomic import replace_file
from edgert.errors import BundleError
from edgert.variants import aiocheck

FORMAT = "edgert-aio"
# 1: first version (levels, groups, template, per-level graphs, calibration)
# 2: __metadata__.header_sha256 first: the header (and so the level table) is checksummed
VERSION = 2
DATA_ALIGN = 64
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_DIGEST_KEY = b'{"__metadata__":{"header_sha256":"'
_DIGEST_AT = 8 + len(_DIGEST_KEY)  # where the 64 hex digits start in the file


@dataclasses.dataclass
class AioFile:
    """An opened file: read-only tensor views into one memory map, plus the decoded metadata."""

    path: Path
    meta: dict[str, Any]  # the decoded ``aio`` JSON
    metadata: dict[str, str]  # the raw ``__metadata__`` strings
    tensors: dict[str, np.ndarray]
    data_bytes: int
    _map: mmap.mmap | None = None

    def release_pages(self) -> None:
        """Drop this process's resident pages of the map (the checksum pass and ORT's private
        copies touched them all). The views stay valid: a page read again faults back in
        from the page cache, so only what sessions still read in place stays resident."""
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self.tensors = {}
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # views still alive elsewhere; the map closes with them
                pass
            self._map = None


def _header(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    order = sorted(tensors, key=lambda k: -np.dtype(tensors[k].dtype).itemsize)  # stable
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name in order:
        value = tensors[name]
        dtype = np.dtype(value.dtype)
        if dtype not in _CODES:
            raise BundleError(f"tensor {name!r} has dtype {dtype}, which the format cannot hold", tensor=name)
        header[name] = {"dtype": _CODES[dtype], "shape": list(value.shape),
                        "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
    return header, order


def _head_bytes(header: Mapping[str, Any]) -> bytes:
    """Length, padded JSON and the header checksum filled in: the file up to the data section."""
    metadata = {k: v for k, v in header["__metadata__"].items() if k != "header_sha256"}
    body = {"__metadata__": {"header_sha256": "0" * 64, **metadata},
            **{k: v for k, v in header.items() if k != "__metadata__"}}
    text = json.dumps(body, separators=(",", ":"), sort_keys=False).encode()
    text += b" " * ((-(8 + len(text))) % DATA_ALIGN)
    head = bytearray(struct.pack("<Q", len(text)) + text)
    head[_DIGEST_AT:_DIGEST_AT + 64] = hashlib.sha256(head).hexdigest().encode()
    return bytes(head)


def data_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """The checksum stored in the metadata: sha256 over the data section as it will be written."""
    _, order = _header(tensors, {})
    digest = hashlib.sha256()
    for name in order:
        digest.update(np.ascontiguousarray(tensors[name]).tobytes())
    return digest.hexdigest()


def write(path: Path, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any],
          extra: Mapping[str, str] | None = None) -> None:
    """Write atomically (temp file + rename), so a reader never sees half a file."""
    tensors = {k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in tensors.items()}  # keeps 0-d
    metadata = {"format": FORMAT, "version": str(VERSION), "sha256": data_sha256(tensors),
                "aio": json.dumps(meta, separators=(",", ":")), **(extra or {})}
    header, order = _header(tensors, metadata)
    _replace(Path(path), lambda: [_head_bytes(header), *(tensors[name].tobytes() for name in order)])


def _replace(path: Path, chunks: Callable[[], Iterable[bytes]]) -> None:
    """Write ``path`` whole (``atomic.replace_file``: a temp file of its own, renamed over it)."""
    def write(file: Any) -> None:
        for chunk in chunks():
            file.write(chunk)

    replace_file(path, write)


def _parse_header(raw: bytes | memoryview, size: int, path: Path) -> tuple[dict[str, Any], int]:
    """The header object (checksum verified, ``__metadata__`` checked) and where the data starts."""
    if size < 8:
        raise BundleError(f"{path} is truncated: {size} bytes, shorter than the 8-byte header length",
                          path=str(path))
    (n,) = struct.unpack("<Q", bytes(raw[:8]))
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise BundleError(f"{path} is truncated or corrupt: its header claims {n} bytes", path=str(path))
    head = bytearray(raw[:8 + n])
    if head[8:_DIGEST_AT] != _DIGEST_KEY or len(head) < _DIGEST_AT + 64:
        _refuse_unchecksummed(bytes(head[8:]), path)
    stored = bytes(head[_DIGEST_AT:_DIGEST_AT + 64])
    head[_DIGEST_AT:_DIGEST_AT + 64] = b"0" * 64
    actual = hashlib.sha256(head).hexdigest()
    if actual.encode() != stored:
        raise BundleError(f"{path} is corrupt: the header checksum does not match (sha256 {actual}, "
                          f"expected {stored.decode(errors='replace')})", path=str(path))
    header = aiocheck.parse_json(bytes(head[8:]), path, "the header")
    if not isinstance(header, dict):
        raise BundleError(f"{path} has a corrupt header: not a JSON object", path=str(path))
    aiocheck.check(path, aiocheck.metadata, header.get("__metadata__"))
    return header, 8 + n


def _refuse_unchecksummed(text: bytes, path: Path) -> None:
    """A header without the checksum: a version-1 file (say so) or damage."""
    try:
        old = json.loads(text)["__metadata__"]
        if old["format"] == FORMAT and old["version"] == "1":
            raise BundleError(f"{path} is an All-in-One file of format version 1, whose header is not "
                              "checksummed: re-create it with this edgert (edgert prune)", path=str(path),
                              version="1")
    except (ValueError, KeyError, TypeError, RecursionError):
        pass
    raise BundleError(f"{path} is corrupt or not an All-in-One file: its header does not start with "
                      "the header checksum", path=str(path))


def read(path: Path, verify: bool = True) -> AioFile:
    """Map ``path`` and return views of its tensors; ``verify`` checks the data's sha256 (the
    header's checksum and fields are always checked)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO would block a plain open()
    except OSError as exc:
        raise BundleError(f"cannot open {path}: {exc.strerror}", path=str(path)) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # a FIFO, a device (/dev/zero), a directory
        os.close(fd)
        raise BundleError(f"{path} is not a regular file", path=str(path))
    with open(fd, "rb") as f:
        size = st.st_size
        if size == 0:
            raise BundleError(f"{path} is empty", path=str(path))
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    header, start = _parse_header(mm, size, path)
    metadata = header.pop("__metadata__")
    if metadata.get("format") != FORMAT:
        raise BundleError(f"{path} is not an All-in-One file (format {metadata.get('format')!r})",
                          path=str(path))
    if metadata.get("version") != str(VERSION):
        raise BundleError(f"{path} has All-in-One format version {metadata.get('version')}; this "
                          f"edgert reads version {VERSION}", path=str(path), version=metadata.get("version"))
    data_bytes = size - start
    entries = sorted(((name, aiocheck.check(path, aiocheck.tensor_entry, name, info, _DTYPES))
                      for name, info in header.items()), key=lambda item: item[1][2])
    tensors: dict[str, np.ndarray] = {}
    end = 0
    for name, (code, shape, lo, hi) in entries:
        dtype = np.dtype(_DTYPES[code])
        if lo != end or hi > data_bytes or hi - lo != math.prod(shape) * dtype.itemsize:
            raise BundleError(f"{path} is truncated or corrupt: tensor {name!r} does not fit the data "
                              "section", path=str(path), tensor=name)
        tensors[name] = np.frombuffer(mm, dtype, math.prod(shape), start + lo).reshape(shape)
        end = hi
    if end != data_bytes:
        raise BundleError(f"{path} has {data_bytes - end} stray bytes after its tensors", path=str(path))
    if verify:
        digest = hashlib.sha256(memoryview(mm)[start:]).hexdigest()
        if digest != metadata.get("sha256"):
            raise BundleError(f"{path} is corrupt: the data checksum does not match (sha256 {digest}, "
                              f"expected {metadata.get('sha256')})", path=str(path))
    meta = aiocheck.check(path, aiocheck.meta, aiocheck.parse_json(metadata.get("aio", ""), path, "aio"), tensors)
    if "calibration" in metadata:
        aiocheck.check(path, aiocheck.calibration,
                       aiocheck.parse_json(metadata["calibration"], path, "calibration"))
    return AioFile(path, meta, metadata, tensors, data_bytes, mm)


def read_meta(path: Path, verify: bool = True) -> dict[str, Any]:
    """The decoded ``aio`` metadata of ``path`` alone (the map is closed again at once)."""
    f = read(path, verify=verify)
    try:
        return f.meta
    finally:
        f.close()


def rewrite_metadata(path: Path, updates: Mapping[str, str]) -> None:
    """Replace ``__metadata__`` entries (e.g. the calibration table) keeping the data bytes."""
    path = Path(path)
    raw = path.read_bytes()
    header, start = _parse_header(raw, len(raw), path)
    header["__metadata__"] = {**header["__metadata__"], **updates}
    _replace(path, lambda: [_head_bytes(header), raw[start:]])
