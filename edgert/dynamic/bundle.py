"""The bundle file: one zip holding a manifest, segment artifacts and host constants.

Device side (stdlib + numpy). The spec is docs/bundle-format.md; this module is the
only code that reads or writes the container, and it checks every member's sha256
before anything is loaded from it.
"""
from __future__ import annotations

import hashlib
import io
import json
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
FORMAT_VERSION = 2
FORMAT_NAME = "edgert-bundle"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
MAX_MEMBERS = 10_000
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same inputs give byte-identical bundles
_COMMENT = b"edgert-bundle manifest-sha256="
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
    def write(file: Any) -> None:
        with zipfile.ZipFile(file, "w") as archive:
            for name, data in [(MANIFEST, text)] + sorted(members.items()):
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
            archive.comment = _COMMENT + sha256(text).encode()

    replace_file(path, write)  # two compiles to one output shared 'OUT.partial' and corrupted it
    return Path(path)


class Bundle:
    """An opened bundle whose members have all been checked against the manifest."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        why = not_a_file(self.path)
        if why:  # a FIFO would block the read
            raise BundleError(f"{self.path} {why}, not a bundle", path=str(self.path))
        try:
            archive = zipfile.ZipFile(self.path)
        except FileNotFoundError as exc:
            raise BundleError(f"{self.path} does not exist", path=str(self.path)) from exc
        except _ZIP_ERRORS as exc:
            raise BundleError(f"{self.path} is not an edgert bundle or is damaged: {exc}",
                              path=str(self.path)) from exc
        with archive:
            self.manifest = self._read_manifest(archive)
            self._data = self._read_members(archive)

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
        comment = archive.comment
        if not comment.startswith(_COMMENT):
            raise BundleError(f"{self.path} is not an edgert bundle of format version {FORMAT_VERSION} "
                              "(no manifest checksum in the zip comment): recompile the model",
                              path=str(self.path), member=MANIFEST)
        if comment[len(_COMMENT):] != sha256(text).encode():
            raise BundleError(f"{self.path}: {MANIFEST} does not match its sha256 in the zip comment "
                              "(the bundle was modified or damaged)", path=str(self.path), member=MANIFEST)
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
