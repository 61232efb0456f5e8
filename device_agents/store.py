"""The agent's artifact store: content-addressed files that uploads fill chunk by chunk.

Layout under ``root``:

    objects/<sha256>        complete, verified artifacts (mtime = last use, for LRU eviction);
                            re-hashed before use by each agent process, and again whenever the
                            file changed since (inode, size, ctime): a corrupt one is removed
    partial/<sha256>.part   uploads in progress; they survive agent restarts, so the host asks
                            ``have()`` and sends only the missing tail
    labels/<name>           a host-chosen name -> sha256 (text), e.g. "resnet18.tvm"
    named/<sha256><suffix>  hard links giving an artifact the file suffix an engine needs

Everything the host names is checked before it touches a path: digests must be 64 lowercase hex
characters and labels a plain file name, so nothing escapes ``root``. Nor does a symlink
planted inside it: store files are opened with ``O_NOFOLLOW`` and one that is not a regular
file is refused (``_size``).

Uploads and publishing take an exclusive ``fcntl`` lock on ``root/.lock``, so agents serving
several hosts at once (TCP threads, one process per SSH session) never interleave writes.
Two hosts pushing one artifact share the upload: a chunk the store already holds is skipped,
and chunks for an artifact completed meanwhile are accepted and dropped.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from edgert.device_agents.fsutil import fsync_dir
from edgert.errors import BundleError, DeviceError, ProtocolError, UsageError
from edgert.hashing import sha256_file

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def check_sha256(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ProtocolError(f"artifact id {sha256!r} is not a sha256 hex digest (64 lowercase hex characters)",
                            sha256=repr(sha256))
    return sha256


def check_label(name: str) -> str:
    """``name`` if it is a plain file name, else a UsageError that says what is wrong with it."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "it is empty"
    elif "\x00" in name:
        problem = "it contains a NUL byte"
    elif name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        problem = "it is an absolute path"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator"
    elif ".." in name:
        problem = "it contains '..'"
    elif not _LABEL.fullmatch(name):
        problem = "it must be 1-200 letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
    if problem:
        raise UsageError(f"artifact label {name!r} is not allowed: {problem}", label=repr(name))
    return name


def _probe_write(directory: Path) -> None:
    """Create and remove a file in ``directory``: an existing tree on a read-only mount (or
    without write permission) passes ``mkdir(exist_ok=True)``, and every upload failed later."""
    fd, name = tempfile.mkstemp(prefix=".probe-", dir=directory)
    os.close(fd)
    os.unlink(name)


class ArtifactStore:
    """Content-addressed files under ``root``; ``quota_bytes`` (None: unlimited) evicts LRU artifacts."""

    def __init__(self, root: Path, quota_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.quota_bytes = quota_bytes
        self._objects = self.root / "objects"
        self._partial = self.root / "partial"
        self._labels = self.root / "labels"
        self._named = self.root / "named"  # <sha256><suffix> hard links, see named_path
        self._checked: dict[str, tuple[int, int, int]] = {}  # sha256 -> file identity when last hashed
        try:
            for directory in (self._objects, self._partial, self._labels, self._named):
                directory.mkdir(parents=True, exist_ok=True)
                _probe_write(directory)
        except OSError as exc:  # a file, not a directory; /proc; no permission; a read-only mount
            raise UsageError(f"cannot use {self.root} as the artifact store: {exc.strerror or exc}",
                             path=str(self.root)) from exc

    def have(self, sha256: str) -> tuple[bool, int]:
        """(complete, bytes held): resume an upload at ``bytes held`` when not complete. A
        complete artifact whose bytes no longer match its name is removed (not complete, 0
        held), so the host uploads it again."""
        check_sha256(sha256)
        for complete, path in ((True, self._objects / sha256), (False, self._partial_path(sha256))):
            size = _size(path)
            if size is not None:
                if complete and self._corrupt(sha256) is not None:
                    return False, 0
                return complete, size
        return False, 0

    def _corrupt(self, sha256: str) -> str | None:
        """The actual sha256 of a complete artifact that no longer matches its name (it is then
        removed), else None. Hashed once per process and again after any change to the file."""
        path = self._objects / sha256
        seen = _identity(path)
        if seen is None or self._checked.get(sha256) == seen:
            return None
        actual = sha256_file(path)
        if actual == sha256:
            self._checked[sha256] = seen
            return None
        self._checked.pop(sha256, None)
        path.unlink(missing_ok=True)
        self._drop_names(sha256)
        return actual

    def write_chunk(self, sha256: str, offset: int, data: bytes, total_bytes: int) -> int:
        """Store ``data`` at ``offset`` (at most the bytes held); returns the bytes now held.

        Bytes the store already holds (sent by another host pushing the same artifact) are
        skipped. ``total_bytes`` is the whole artifact's size, so room for all of it is made (or
        refused) on the first chunk instead of evicting artifacts for an upload that cannot fit.
        """
        if not isinstance(data, (bytes, bytearray)):  # before anything is created
            raise ProtocolError(f"chunk for artifact {sha256[:12]} is {type(data).__name__}, not bytes",
                                sha256=sha256)
        with self._locked():
            complete, held = self.have(sha256)
            if offset + len(data) > total_bytes:
                raise ProtocolError(f"chunk for artifact {sha256[:12]} ends at byte {offset + len(data)}, "
                                    f"past its announced size of {total_bytes}", sha256=sha256)
            if complete:
                return held  # another host finished it meanwhile
            if offset > held:
                raise ProtocolError(
                    f"chunk for artifact {sha256[:12]} starts at byte {offset} but the store holds {held}: "
                    f"resume from {held}", sha256=sha256, offset=offset, received_bytes=held,
                )
            fresh = data[held - offset:]
            if not fresh:
                return held
            self._make_room(total_bytes - held)
            try:
                fd = os.open(self._partial_path(sha256), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                             0o644)
                with open(fd, "ab") as file:
                    file.write(fresh)
            except OSError as exc:
                raise DeviceError(f"cannot write artifact {sha256[:12]} to {self.root}: {exc}",
                                  sha256=sha256) from exc
            return held + len(fresh)

    def finish(self, sha256: str) -> Path:
        """Verify the upload against its digest and publish it atomically; a corrupt one is discarded."""
        check_sha256(sha256)
        with self._locked():
            partial = self._partial_path(sha256)
            final = self._objects / sha256
            if _size(final) is not None:
                return self.path(sha256)
            if _size(partial) is None:
                raise ProtocolError(f"no upload of artifact {sha256[:12]} to finish", sha256=sha256)
            digest = hashlib.sha256()
            with open(os.open(partial, os.O_RDONLY | os.O_NOFOLLOW), "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
                os.fsync(file.fileno())
            actual = digest.hexdigest()
            if actual != sha256:
                partial.unlink()
                raise BundleError(
                    f"upload of artifact {sha256[:12]} arrived with sha256 {actual[:12]}; "
                    "the partial file was discarded, upload it again", sha256=sha256, actual=actual,
                )
            os.replace(partial, final)
            fsync_dir(self._objects)
            self._checked[sha256] = _identity(final)  # just hashed
            return self.path(sha256)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive over every process and thread using this store (a fresh open file per holder)."""
        with open(os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644), "r+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def path(self, sha256: str) -> Path:
        """A complete artifact's file, its bytes checked against its name (``_corrupt``); marks
        it as recently used."""
        path = self._objects / check_sha256(sha256)
        if _size(path) is None:
            raise DeviceError(f"artifact {sha256[:12]} is not on the device; upload it first", sha256=sha256)
        actual = self._corrupt(sha256)
        if actual is not None:
            raise BundleError(f"artifact {sha256[:12]} in the device's store is corrupt (its bytes now hash "
                              f"to {actual[:12]}): removed; push it again", sha256=sha256, actual=actual)
        was_checked = self._checked.get(sha256) == _identity(path)
        os.utime(path, follow_symlinks=False)
        if was_checked:  # our own touch changes the ctime: still the bytes we hashed
            self._checked[sha256] = _identity(path)
        return path

    def named_path(self, sha256: str, suffix: str) -> Path:
        """A complete artifact under a file name ending in ``suffix`` (engines pick a loader by
        the real file's suffix). A hard link, so resolving links keeps the name; it goes away
        with the artifact and costs no extra space."""
        if not _SUFFIX.fullmatch(suffix):
            raise UsageError(f"bad file suffix {suffix!r}: expected something like '.onnx'")
        target = self.path(sha256)
        named = self._named / f"{sha256}{suffix}"
        with self._locked():  # two hosts naming one artifact at once shared the temp name
            if _size(named) is None:
                tmp = self._named / f".{named.name}.tmp"
                tmp.unlink(missing_ok=True)
                os.link(target, tmp, follow_symlinks=False)
                os.replace(tmp, named)
        return named

    def discard(self, sha256: str) -> None:
        """Forget an artifact, complete or partial (e.g. when the host restarts an upload from 0)."""
        for path in (self._objects / check_sha256(sha256), self._partial_path(sha256)):
            path.unlink(missing_ok=True)
        self._drop_names(sha256)

    def _drop_names(self, sha256: str) -> None:
        for named in self._named.glob(f"{sha256}.*"):
            named.unlink(missing_ok=True)

    def set_label(self, name: str, sha256: str) -> None:
        """Point ``name`` at a complete artifact (replacing what it pointed at)."""
        check_label(name)
        self.path(sha256)
        tmp = self._labels / f".{name}.tmp"
        tmp.write_text(sha256)
        os.replace(tmp, self._labels / name)

    def resolve(self, name: str) -> str:
        """The sha256 a label points at."""
        try:
            return check_sha256((self._labels / check_label(name)).read_text().strip())
        except FileNotFoundError:
            raise DeviceError(f"no artifact is labelled {name!r} on the device", label=name) from None

    def labels(self) -> dict[str, str]:
        return {p.name: p.read_text().strip() for p in sorted(self._labels.iterdir())
                if not p.name.startswith(".")}

    def used_bytes(self) -> int:
        """Bytes of complete and partial artifacts (a file renamed or dropped meanwhile by another
        host's upload counts as gone: this runs unlocked, e.g. at every hello)."""
        return sum(_size(p, others_as_zero=True) or 0 for d in (self._objects, self._partial) for p in d.iterdir())

    def free_bytes(self) -> int:
        """What an upload may still use: the disk's free space, capped by the quota."""
        free = shutil.disk_usage(self.root).free
        if self.quota_bytes is not None:
            free = min(free, max(0, self.quota_bytes - self.used_bytes()))
        return free

    def _partial_path(self, sha256: str) -> Path:
        return self._partial / f"{sha256}.part"

    def _make_room(self, extra: int) -> None:
        """Evict least recently used complete artifacts until ``extra`` more bytes fit the quota."""
        if self.quota_bytes is None:
            return
        excess = self.used_bytes() + extra - self.quota_bytes
        if excess <= 0:
            return
        by_age = sorted(self._objects.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        sizes = [p.stat().st_size for p in by_age]
        if sum(sizes) < excess:  # refuse before deleting anything
            raise DeviceError(
                f"the artifact store quota of {self.quota_bytes} bytes cannot fit {extra} more bytes even "
                f"after evicting every complete artifact; raise the agent's quota or discard partial uploads",
                quota_bytes=self.quota_bytes, missing_bytes=excess - sum(sizes),
            )
        for path, size in zip(by_age, sizes):
            if excess <= 0:
                break
            path.unlink()
            self._drop_names(path.name)
            excess -= size


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, ctime): any write, truncation, chmod or replacement changes one of them."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_ctime_ns


def _size(path: Path, others_as_zero: bool = False) -> int | None:
    """The size of the regular file at ``path`` (not following a symlink), None when there is
    none; any other kind of file there is a DeviceError (``others_as_zero``: counted as 0)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        if others_as_zero:
            return 0
        raise DeviceError(f"store entry {path} is not a regular file (a symlink?): refusing to use it; "
                          "remove it from the store", path=str(path))
    return st.st_size
