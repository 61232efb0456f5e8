"""The bundle file: one zip holding a manifest, segment artifacts and host constants.

Device side (stdlib + numpy). The spec is docs/bundle-format.md; this module is the
only code that reads or writes the container, and it checks the whole file's sha256 (at
its end) and every member's before anything is loaded from it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from edgert.atomic import replace_file
from edgert.errors import BundleError
from edgert.files import not_a_file

# 1: first version (zip, manifest.json first, sha256 per member).
# 2: the zip comment carries the manifest's sha256, checked before the manifest is parsed.
# 3: the zip comment carries the sha256 of every byte before it, checked before zip is parsed
#    (zip fields nothing reads, such as timestamps, and bytes before or after the zip were
#    not covered by version 2: a flipped byte there went unnoticed).
FORMAT_VERSION = 3
FORMAT_NAME = "edgert-bundle"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
MAX_MEMBERS = 10_000
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same inputs give byte-identical bundles
_COMMENT = b"edgert-bundle sha256="
SEAL_BYTES = len(_COMMENT) + 64  # the comment: the last bytes of the file
# What zipfile raises on damaged archives: bad CRC or deflate data, truncation, a compression
# method or encryption flag that a flipped bit invented, impossible offsets or sizes.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError,
               NotImplementedError, struct.error, UnicodeDecodeError)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npy_bytes(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(value), allow_pickle=False)
    return buffer.getvalue()


def write_bundle(path: Path, manifest: dict[str, Any], members: dict[str, bytes]) -> Path:
    """Write ``manifest`` (with a ``members`` table added) and ``members`` to ``path``."""
    manifest = dict(manifest, format=FORMAT_NAME, format_version=FORMAT_VERSION)
    manifest["members"] = {name: {"sha256": sha256(data), "size": len(data)}
                           for name, data in sorted(members.items())}
    text = json.dumps(manifest, indent=1, sort_keys=True).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in [(MANIFEST, text)] + sorted(members.items()):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
        archive.comment = bytes(SEAL_BYTES)  # its length is part of what the digest covers
    sealed = seal(buffer.getvalue())
    replace_file(path, lambda file: file.write(sealed))  # two compiles to one output shared 'OUT.partial'
    return Path(path)


def seal(raw: bytes) -> bytes:
    """``raw``, a zip whose comment is ``SEAL_BYTES`` long, with that comment set to the sha256 of every
    byte before it (for tools that repack a bundle)."""
    body = raw[:-SEAL_BYTES]
    return body + _COMMENT + sha256(body).encode()


_TAIL_BYTES = 1 << 16  # a zip comment is at most 64 KiB: the seal, if any, is in the last ones
_V2_COMMENT = b"edgert-bundle manifest-sha256="


def _why_unsealed(tail: bytes) -> str:
    """What a file whose last bytes are not a seal is, from its last 64 KiB."""
    if tail[-(len(_V2_COMMENT) + 64):].startswith(_V2_COMMENT):
        return f"is a bundle of format version 2; this edgert reads version {FORMAT_VERSION}: recompile the model"
    if _COMMENT in tail:
        return "is damaged: its checksum is not at its end (bytes were added after it, or it was cut)"
    return ("has no edgert checksum at its end: it is not an edgert bundle (of format version "
            f"{FORMAT_VERSION}), or it was cut short")


def intact(path: Path) -> bool:
    """Every byte of ``path`` is as its writer sealed it (one streamed sha256, nothing parsed or
    inflated): a cache's cheap check before handing a bundle on to be loaded."""
    try:
        return _seal_mismatch(Path(path)) is None
    except BundleError:
        return False


def _seal_mismatch(path: Path) -> BundleError | None:
    """The error to raise if the file's last bytes are not the sha256 of all bytes before them
    (streamed: a bundle can be large, and its members are read into memory next); a file
    without them is refused at once."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < SEAL_BYTES:
                raise BundleError(f"{path} is not an edgert bundle ({size} bytes)", path=str(path))
            file.seek(max(0, size - _TAIL_BYTES))
            tail = file.read()
            comment = tail[-SEAL_BYTES:]
            if not comment.startswith(_COMMENT):
                raise BundleError(f"{path} {_why_unsealed(tail)}", path=str(path))
            file.seek(0)
            digest = hashlib.sha256()
            left = size - SEAL_BYTES
            while left:
                chunk = file.read(min(left, 1 << 20))
                if not chunk:
                    raise BundleError(f"{path} changed while it was read", path=str(path))
                digest.update(chunk)
                left -= len(chunk)
    except FileNotFoundError as exc:
        raise BundleError(f"{path} does not exist", path=str(path)) from exc
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror}", path=str(path)) from exc
    if comment[len(_COMMENT):] == digest.hexdigest().encode():
        return None
    return BundleError(f"{path} does not match the sha256 at its end (the bundle was modified or damaged): "
                       f"stored {comment[len(_COMMENT):].decode('ascii', 'replace')}, "
                       f"computed {digest.hexdigest()}", path=str(path))


class Bundle:
    """An opened bundle whose members have all been checked against the manifest."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        why = not_a_file(self.path)
        if why:  # a FIFO would block the read
            raise BundleError(f"{self.path} {why}, not a bundle", path=str(self.path))
        mismatch = _seal_mismatch(self.path)
        try:
            archive = zipfile.ZipFile(self.path)
        except _ZIP_ERRORS as exc:
            raise BundleError(f"{self.path} is not an edgert bundle or is damaged: {exc}",
                              path=str(self.path)) from exc
        with archive:  # damage inside the manifest or a member is named by the checks below
            self.manifest = self._read_manifest(archive)
            self._data = self._read_members(archive)
        if mismatch is not None:  # elsewhere: zip fields nothing reads, bytes around the zip
            raise mismatch

    def _read_manifest(self, archive: zipfile.ZipFile) -> dict[str, Any]:
        infos = archive.infolist()
        if not infos or infos[0].filename != MANIFEST:
            raise BundleError(f"{self.path}: the first member must be {MANIFEST}",
                              path=str(self.path), member=MANIFEST)
        if infos[0].file_size > MAX_MANIFEST_BYTES or len(infos) > MAX_MEMBERS + 1:
            raise BundleError(f"{self.path}: manifest or member count exceeds the format limits",
                              path=str(self.path), member=MANIFEST)
        try:
            text = archive.read(MANIFEST)
        except _ZIP_ERRORS as exc:
            raise BundleError(f"{self.path}: {MANIFEST} is unreadable: {exc}",
                              path=str(self.path), member=MANIFEST) from exc
        try:
            manifest = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BundleError(f"{self.path}: {MANIFEST} is unreadable: {exc}",
                              path=str(self.path), member=MANIFEST) from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise BundleError(f"{self.path} is not an edgert bundle", path=str(self.path))
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{self.path} has bundle format version {manifest.get('format_version')!r}; "
                f"this edgert reads version {FORMAT_VERSION}: recompile the model",
                path=str(self.path), member=MANIFEST)
        return manifest

    def _read_members(self, archive: zipfile.ZipFile) -> dict[str, bytes]:
        listed = self.manifest.get("members")
        if not isinstance(listed, dict) or not all(isinstance(e, dict) for e in listed.values()):
            raise BundleError(f"{self.path}: the manifest's members table is malformed",
                              path=str(self.path), member=MANIFEST)
        present = [i.filename for i in archive.infolist()[1:]]
        for name in present:
            if name not in listed:
                raise BundleError(f"{self.path}: member {name!r} is not listed in the manifest",
                                  path=str(self.path), member=name)
        data: dict[str, bytes] = {}
        for name, entry in listed.items():
            if name not in present:
                raise BundleError(f"{self.path}: member {name!r} is missing",
                                  path=str(self.path), member=name)
            try:
                blob = archive.read(name)
            except _ZIP_ERRORS as exc:
                raise BundleError(f"{self.path}: member {name!r} is corrupt: {exc}",
                                  path=str(self.path), member=name) from exc
            if sha256(blob) != entry.get("sha256"):
                raise BundleError(
                    f"{self.path}: member {name!r} does not match its sha256 in the manifest "
                    f"(the bundle was modified or damaged)", path=str(self.path), member=name)
            data[name] = blob
        return data

    def read(self, name: str) -> bytes:
        return self._data[name]

    def array(self, name: str) -> np.ndarray:
        return np.load(io.BytesIO(self._data[name]), allow_pickle=False)

    def extract(self, name: str, directory: Path) -> Path:
        """Write one verified member under ``directory`` (engines load from files)."""
        dest = Path(directory) / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self._data[name])
        return dest
