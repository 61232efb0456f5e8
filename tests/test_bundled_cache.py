"""The bundle cache behind ``bench --backend tvm`` on a control-flow model: keyed by what
changes the bundle, and a damaged entry is rebuilt, not served."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tvm")

from edgert.backends.base import BackendOptions  # noqa: E402
from edgert.compilers import bundled  # noqa: E402
from edgert.dynamic.bundle import Bundle, intact  # noqa: E402
from edgert.errors import BundleError, UsageError  # noqa: E402

MODEL = Path(__file__).resolve().parent.parent / "edgert" / "zoo" / "dynamic" / "early_exit_cnn.onnx"


def test_the_key_follows_the_pipeline_the_tuning_records_and_edgerts_code(tmp_path, monkeypatch):
    from edgert.compilers import tvm as tvm_compiler

    options = BackendOptions(cache_dir=tmp_path)
    first = bundled.bundle_path(MODEL, options)
    assert bundled.bundle_path(MODEL, options) == first  # stable
    monkeypatch.setattr(tvm_compiler, "PIPELINE_VERSION", "another-pipeline")
    assert bundled.bundle_path(MODEL, options) != first
    monkeypatch.undo()
    monkeypatch.setattr(bundled, "_compiler_code_digest", lambda: "edited")
    assert bundled.bundle_path(MODEL, options) != first
    monkeypatch.undo()
    import edgert.compilers.tvm_db as tvm_db

    db = tmp_path / "db"
    monkeypatch.setattr(tvm_db, "database_digest", lambda root, target: "records-a")
    tuned_a = bundled.bundle_path(MODEL, BackendOptions(cache_dir=tmp_path, tuning_db=db))
    monkeypatch.setattr(tvm_db, "database_digest", lambda root, target: "records-b")
    tuned_b = bundled.bundle_path(MODEL, BackendOptions(cache_dir=tmp_path, tuning_db=db))
    assert len({first, tuned_a, tuned_b}) == 3  # same database path, other records: other bundle


def test_the_key_follows_weights_kept_beside_the_model(tmp_path):
    from conftest import with_external_weights

    model = with_external_weights(MODEL, tmp_path / "m")
    options = BackendOptions(cache_dir=tmp_path)
    first = bundled.bundle_path(model, options)
    data = tmp_path / "m" / "early_exit_cnn.onnx.data"
    weights = bytearray(data.read_bytes())
    weights[-1] ^= 1  # retrained: the .onnx is byte-identical, only the weights differ
    data.write_bytes(bytes(weights))
    assert bundled.bundle_path(model, options) != first


def test_a_damaged_cached_bundle_is_rebuilt(tmp_path):
    options = BackendOptions(cache_dir=tmp_path)
    built = bundled.compile_bundle(MODEL, options)
    Bundle(built)
    data = bytearray(built.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside a member
    built.write_bytes(bytes(data))
    with pytest.raises(BundleError):
        Bundle(built)
    again = bundled.compile_bundle(MODEL, options)
    assert again == built
    Bundle(again)  # checksums hold: rebuilt, not served damaged
    data = bytearray(built.read_bytes())
    data[10] ^= 0x01  # the first local header's time: a byte nothing reads
    built.write_bytes(bytes(data))
    assert not intact(built)
    assert bundled.compile_bundle(MODEL, options) == built and intact(built)
    assert not list(built.parent.glob(".*.part*"))  # no temporary files left


def test_a_directory_in_the_cache_slot_is_named_and_no_partial_file_is_left(tmp_path):
    """It was a traceback (IsADirectoryError at the final rename) leaving OUT.PID.part."""
    options = BackendOptions(cache_dir=tmp_path)
    slot = bundled.bundle_path(MODEL, options)
    slot.mkdir(parents=True)
    with pytest.raises(UsageError, match="is not a bundle file: remove it"):
        bundled.compile_bundle(MODEL, options)
    slot.rmdir()
    assert bundled.compile_bundle(MODEL, options) == slot and intact(slot)
    assert not list(slot.parent.glob(".*.part"))
