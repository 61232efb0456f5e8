"""The artifact store on real files under tmp_path: resume, verification, confinement, quota."""
from __future__ import annotations

import hashlib
import os

import pytest

from edgert.device_agents.store import ArtifactStore, check_label
from edgert.errors import BundleError, DeviceError, ProtocolError, UsageError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(store: ArtifactStore, data: bytes, chunk_bytes: int = 1000, stop_after_chunks: int | None = None) -> int:
    """What the host does: ask what is there, send the rest; returns the payload bytes sent."""
    digest = sha(data)
    complete, offset = store.have(digest)
    if complete:
        return 0
    sent = 0
    for number, start in enumerate(range(offset, len(data), chunk_bytes)):
        if number == stop_after_chunks:
            return sent  # the link died here
        chunk = data[start:start + chunk_bytes]
        assert store.write_chunk(digest, start, chunk, len(data)) == start + len(chunk)
        sent += len(chunk)
    store.finish(digest)
    return sent


def test_chunked_upload_publishes_a_verified_file(tmp_path):
    store = ArtifactStore(tmp_path)
    data = os.urandom(10_500)
    assert store.have(sha(data)) == (False, 0)
    assert upload(store, data) == len(data)
    assert store.have(sha(data)) == (True, len(data))
    assert store.path(sha(data)).read_bytes() == data
    assert upload(store, data) == 0


@pytest.mark.parametrize("fresh_process", [False, True])
def test_a_stored_artifact_changed_on_disk_is_refused_removed_and_uploaded_again(tmp_path, fresh_process):
    """Bytes changed in objects/ (bit rot, an editor, a bad card) were run as if intact: the
    store only looked at the size."""
    store = ArtifactStore(tmp_path)
    data = os.urandom(300_000)
    upload(store, data)
    store.named_path(sha(data), ".onnx")
    store.path(sha(data))  # hashed; used again without hashing until the file changes
    stored = tmp_path / "objects" / sha(data)
    with open(stored, "r+b") as f:  # same size, same inode: only the bytes differ
        f.seek(150_000)
        f.write(bytes([data[150_000] ^ 0x40]))
    store = ArtifactStore(tmp_path) if fresh_process else store
    with pytest.raises(BundleError, match=rf"artifact {sha(data)[:12]} in the device's store is corrupt .*: "
                                          "removed; push it again"):
        store.named_path(sha(data), ".onnx")
    assert not stored.exists() and not list((tmp_path / "named").iterdir())
    assert store.have(sha(data)) == (False, 0)
    assert upload(store, data) == len(data)
    assert store.path(sha(data)).read_bytes() == data


def test_have_finds_a_corrupt_artifact_so_the_host_uploads_it_again(tmp_path):
    data = os.urandom(5_000)
    upload(ArtifactStore(tmp_path), data)
    (tmp_path / "objects" / sha(data)).write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # always a change
    store = ArtifactStore(tmp_path)
    assert store.have(sha(data)) == (False, 0)
    assert upload(store, data) == len(data)


def test_interrupted_upload_resumes_after_agent_restart_sending_only_the_rest(tmp_path):
    data = os.urandom(10_000)
    assert upload(ArtifactStore(tmp_path), data, stop_after_chunks=3) == 3000
    restarted = ArtifactStore(tmp_path)
    assert restarted.have(sha(data)) == (False, 3000)
    assert upload(restarted, data) == 7000
    assert restarted.path(sha(data)).read_bytes() == data


def test_chunk_at_the_wrong_offset_says_where_to_resume(tmp_path):
    store = ArtifactStore(tmp_path)
    data = os.urandom(3000)
    store.write_chunk(sha(data), 0, data[:1000], 3000)
    with pytest.raises(ProtocolError, match="starts at byte 2000 but the store holds 1000: resume from 1000") as info:
        store.write_chunk(sha(data), 2000, data[2000:], 3000)
    assert info.value.fields["received_bytes"] == 1000


def test_wrong_hash_is_rejected_and_the_partial_discarded(tmp_path):
    store = ArtifactStore(tmp_path)
    claimed = sha(b"the real bundle")
    store.write_chunk(claimed, 0, b"a tampered bundle", 17)
    with pytest.raises(BundleError, match="partial file was discarded") as info:
        store.finish(claimed)
    assert info.value.fields["actual"] == sha(b"a tampered bundle")
    assert store.have(claimed) == (False, 0)
    with pytest.raises(DeviceError, match="not on the device"):
        store.path(claimed)


@pytest.mark.parametrize("name, problem", [
    ("../outside", "path separator"),
    ("..", "contains '..'"),
    ("a..b", "contains '..'"),
    ("/etc/passwd", "absolute path"),
    ("C:evil", "absolute path"),
    ("dir/file", "path separator"),
    ("dir\\file", "path separator"),
    ("nul\x00byte", "NUL byte"),
    ("", "empty"),
    (".hidden", "must be 1-200 letters"),
    ("x" * 201, "must be 1-200 letters"),
])
def test_labels_never_escape_the_store(tmp_path, name, problem):
    store = ArtifactStore(tmp_path / "store")
    data = b"bundle"
    upload(store, data)
    with pytest.raises(UsageError, match=problem):
        store.set_label(name, sha(data))
    with pytest.raises(UsageError, match=problem):
        store.resolve(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert store.labels() == {}


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "0" * 63, "0" * 64 + "/x", "0" * 64 + "\x00"])
def test_digests_are_checked_before_touching_paths(tmp_path, bad):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ProtocolError, match="not a sha256 hex digest"):
        store.write_chunk(bad, 0, b"x", 1)
    with pytest.raises(ProtocolError, match="not a sha256 hex digest"):
        store.have(bad)


def test_labels_point_at_complete_artifacts(tmp_path):
    store = ArtifactStore(tmp_path)
    upload(store, b"v1")
    upload(store, b"v2")
    store.set_label("resnet18.tvm", sha(b"v1"))
    store.set_label("resnet18.tvm", sha(b"v2"))
    assert store.resolve("resnet18.tvm") == sha(b"v2")
    assert store.labels() == {"resnet18.tvm": sha(b"v2")}
    assert check_label("mobilenet_v2-int8+aio") == "mobilenet_v2-int8+aio"
    with pytest.raises(DeviceError, match="not on the device"):
        store.set_label("missing", sha(b"never uploaded"))
    with pytest.raises(DeviceError, match="no artifact is labelled 'other'"):
        store.resolve("other")


def test_quota_evicts_least_recently_used_complete_artifacts(tmp_path):
    store = ArtifactStore(tmp_path, quota_bytes=3000)
    a, b, c, d = (bytes([i]) * 1000 for i in range(4))
    for data in (a, b, c):
        upload(store, data)
    store.path(sha(a))  # a is used again: b is now the least recently used
    assert store.free_bytes() == 0
    upload(store, d)
    assert store.have(sha(b)) == (False, 0)
    assert all(store.have(sha(x)) == (True, 1000) for x in (a, c, d))
    assert store.used_bytes() == 3000


def test_quota_too_small_refuses_without_evicting(tmp_path):
    store = ArtifactStore(tmp_path, quota_bytes=1500)
    upload(store, b"k" * 1000)
    big = b"z" * 2000
    with pytest.raises(DeviceError, match="cannot fit 2000 more bytes") as info:
        upload(store, big)
    assert info.value.fields["missing_bytes"] == 500
    assert store.have(sha(b"k" * 1000)) == (True, 1000)
    assert store.have(sha(big)) == (False, 0)


def test_chunk_past_the_announced_size_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ProtocolError, match="past its announced size of 4"):
        store.write_chunk(sha(b"12345"), 0, b"12345", 4)


def test_named_path_keeps_the_suffix_through_links_and_goes_with_the_artifact(tmp_path):
    import hashlib

    from edgert.device_agents.store import ArtifactStore
    from edgert.errors import UsageError

    store = ArtifactStore(tmp_path / "s", quota_bytes=150)
    data = b"x" * 100
    sha = hashlib.sha256(data).hexdigest()
    store.write_chunk(sha, 0, data, len(data))
    store.finish(sha)
    named = store.named_path(sha, ".so")
    assert named.resolve().name == f"{sha}.so"  # a loader that resolves links still sees .so
    assert named.read_bytes() == data and store.named_path(sha, ".so") == named
    with pytest.raises(UsageError, match="bad file suffix"):
        store.named_path(sha, "/../../x")
    other = b"y" * 100
    other_sha = hashlib.sha256(other).hexdigest()
    store.write_chunk(other_sha, 0, other, len(other))  # over quota: the first one is evicted
    assert not named.exists()


@pytest.mark.parametrize("where", ["partial", "objects"])
def test_a_symlink_planted_in_the_store_is_never_followed(tmp_path, where):
    """A .part symlinked to a file outside the store: the upload appended the artifact to it."""
    store = ArtifactStore(tmp_path / "store")
    data = os.urandom(5000)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious\n")
    name = f"{sha(data)}.part" if where == "partial" else sha(data)
    (tmp_path / "store" / where / name).symlink_to(outside)
    with pytest.raises(DeviceError, match="not a regular file"):
        upload(store, data)
    assert outside.read_bytes() == b"precious\n"


def test_a_chunk_that_is_not_bytes_leaves_nothing_behind(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(ProtocolError, match="not bytes"):
        store.write_chunk("1" * 64, 0, "text", 4)
    assert list((tmp_path / "store" / "partial").iterdir()) == []


def test_hosts_naming_one_artifact_at_once_all_succeed(tmp_path):
    """Four threads (agents serving several hosts) naming one artifact with new suffixes: the
    shared temp name raced (FileExistsError/FileNotFoundError) and left hard links behind."""
    import threading

    store = ArtifactStore(tmp_path / "store")
    data = os.urandom(3000)
    upload(store, data)
    errors: list[BaseException] = []

    def name(worker: int) -> None:
        try:
            for i in range(60):
                store.named_path(sha(data), f".r{i}")
                store.used_bytes()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=name, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert not [p for p in (tmp_path / "store" / "named").iterdir() if p.name.startswith(".")]
