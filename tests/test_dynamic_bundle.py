"""The bundle container: verified members, tamper detection, foreign-arch refusal."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgert import backends
import edgert.dynamic as dyn
from edgert.dynamic.bundle import FORMAT_VERSION, MANIFEST, SEAL_BYTES, Bundle, seal, write_bundle
from edgert.errors import BundleError

ZOO = Path(dyn.__file__).resolve().parent.parent / "zoo" / "dynamic"


@pytest.fixture
def bundle(tmp_path) -> Path:
    return dyn.compile(ZOO / "early_exit_cnn.onnx", backend="ort", out=tmp_path / "ee.edgert")


def rewrite(src: Path, dst: Path, change) -> None:
    """Copy a zip member by member, letting ``change(name, data)`` alter the bytes."""
    """The file's checksum at its end is recomputed, as a careful repacker would."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, change(info.filename, zin.read(info.filename)))
        zout.comment = zin.comment
    dst.write_bytes(seal(dst.read_bytes()))


def test_manifest_is_first_and_lists_every_member(bundle):
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read(MANIFEST))
    assert names[0] == MANIFEST
    assert manifest["format_version"] == FORMAT_VERSION
    assert sorted(manifest["members"]) == sorted(names[1:])
    assert manifest["source"]["name"] == "early_exit_cnn.onnx"
    assert len(manifest["source"]["sha256"]) == 64
    assert manifest["engines"]["ort"]
    assert [s["name"] for s in manifest["inputs"]] == ["x"]
    assert [s["name"] for s in manifest["outputs"]] == ["probs", "exit"]
    for seg in manifest["segments"]:
        assert seg["artifact"] in manifest["members"]


def test_same_model_gives_identical_bundle_bytes(bundle, tmp_path):
    again = dyn.compile(ZOO / "early_exit_cnn.onnx", backend="ort", out=tmp_path / "again.edgert")
    assert again.read_bytes() == bundle.read_bytes()


def test_tampered_member_is_named(bundle, tmp_path):
    manifest = dyn.inspect(bundle)
    victim = manifest["segments"][0]["artifact"]
    bad = tmp_path / "bad.edgert"
    # rewrite re-computes the zip CRC, so only the manifest's sha256 can catch this
    rewrite(bundle, bad, lambda name, data: data.replace(b"conv1", b"convX") if name == victim else data)
    with pytest.raises(BundleError) as err:
        dyn.load(bad)
    assert err.value.fields["member"] == victim
    assert victim in err.value.message


def test_flipped_byte_in_the_file_is_caught(bundle, tmp_path):
    data = bytearray(bundle.read_bytes())
    with zipfile.ZipFile(bundle) as archive:
        info = archive.getinfo(dyn.inspect(bundle)["segments"][-1]["artifact"])
    data[info.header_offset + 30 + len(info.filename) + 5] ^= 0xFF  # inside the member's data
    bad = tmp_path / "flipped.edgert"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError) as err:
        Bundle(bad)
    assert err.value.fields["member"] == info.filename


def test_unlisted_member_is_refused(bundle, tmp_path):
    extra = tmp_path / "extra.edgert"
    rewrite(bundle, extra, lambda name, data: data)
    with zipfile.ZipFile(extra, "a") as archive:
        archive.writestr("segments/evil.so", b"\x7fELF")
    with pytest.raises(BundleError, match="evil.so"):
        dyn.load(extra)


def test_manifest_must_come_first(tmp_path):
    path = tmp_path / "swapped.edgert"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("consts/a.npy", b"")
        archive.writestr(MANIFEST, "{}")
        archive.comment = bytes(SEAL_BYTES)
    path.write_bytes(seal(path.read_bytes()))
    with pytest.raises(BundleError, match="first member"):
        Bundle(path)


def test_newer_format_version_is_refused(tmp_path):
    path = write_bundle(tmp_path / "v.edgert", {}, {})
    rewrite(path, tmp_path / "v2.edgert", lambda name, data: json.dumps(
        dict(json.loads(data), format_version=FORMAT_VERSION + 1)).encode() if name == MANIFEST else data)
    with pytest.raises(BundleError, match="format version"):
        Bundle(tmp_path / "v2.edgert")


def test_not_a_zip_is_a_bundle_error(tmp_path):
    path = tmp_path / "junk.edgert"
    path.write_bytes(b"not a zip")
    with pytest.raises(BundleError):
        dyn.load(path)


def test_foreign_arch_bundle_can_be_inspected_not_run(bundle, tmp_path):
    foreign = tmp_path / "foreign.edgert"
    manifest = dyn.inspect(bundle)
    arch = "riscv64" if manifest["target_arch"] != "riscv64" else "aarch64"
    members = {}
    with zipfile.ZipFile(bundle) as archive:
        for name in archive.namelist()[1:]:
            members[name] = archive.read(name)
    for key in ("members", "format", "format_version"):
        manifest.pop(key)
    write_bundle(foreign, dict(manifest, target_arch=arch), members)
    assert dyn.inspect(foreign)["target_arch"] == arch
    with pytest.raises(BundleError, match=f"compiled for {arch}.*only be inspected"):
        dyn.load(foreign)


def test_runtime_needs_no_onnx(bundle):
    """Device side: loading and running a bundle works with the onnx package blocked."""
    script = (
        "import sys; sys.modules['onnx'] = None\n"
        "import numpy as np, edgert.dynamic as dyn\n"
        f"rt = dyn.load({str(bundle)!r})\n"
        "out = rt.run({'x': np.zeros((1, 3, 64, 64), np.float32)})\n"
        "assert 'onnx' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(out[0].shape, rt.last_path.key())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("(1, 10) exit1_if=")


def test_consts_round_trip_through_the_bundle(bundle):
    manifest = dyn.inspect(bundle)
    opened = Bundle(bundle)
    values = [opened.array(member) for member in manifest["consts"].values()]
    # each exit returns a Constant exit id; Constant nodes are host consts (never segment
    # outputs), so all three ids 0, 1, 2 are bundle consts
    assert sorted(int(v[0]) for v in values if v.dtype == np.int64) == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.skipif(not backends.backend_class("tvm").available(), reason="TVM is not installed")
def test_aarch64_bundle_holds_arm_libraries_and_refuses_to_run_here(tmp_path):
    import platform

    bundle = dyn.compile(ZOO / "symbolic_batch.onnx", backend="tvm", target="aarch64",
                         out=tmp_path / "arm.edgert", cache_dir=tmp_path / "cache")
    manifest = dyn.inspect(bundle)
    assert manifest["target"] == "aarch64" and manifest["target_arch"] == "aarch64"
    opened = Bundle(bundle)
    for seg in manifest["segments"]:
        elf = opened.read(seg["artifact"])
        assert elf[:4] == b"\x7fELF"
        assert int.from_bytes(elf[18:20], "little") == 183  # e_machine EM_AARCH64
    if platform.machine() not in ("aarch64", "arm64"):
        with pytest.raises(BundleError, match="compiled for aarch64"):
            dyn.load(bundle)


def test_two_writers_of_one_bundle_never_leave_a_broken_one(tmp_path):
    """Two compiles to one -o shared 'OUT.partial': one renamed the other's half-written zip
    into place ('Bad CRC-32 for file manifest.json') and the other crashed."""
    from conftest import two_writers_at_once

    out = tmp_path / "cc.edgert"
    two_writers_at_once("from pathlib import Path\nfrom edgert.dynamic.bundle import write_bundle\n"
                        "for i in range(int(sys.argv[3])):\n"
                        "    write_bundle(Path(sys.argv[1]), {'who': sys.argv[2]}, {'d': sys.argv[2].encode() * 200000})\n",
                        out, 30)
    Bundle(out)  # every member checked against the manifest
    assert [p.name for p in tmp_path.iterdir()] == ["cc.edgert"]


def test_compile_and_report_refuse_to_overwrite_their_input(tmp_path):
    from conftest import run_cli

    model = tmp_path / "m.onnx"
    model.write_bytes((Path(dyn.__file__).parents[1] / "zoo" / "dynamic" / "early_exit_cnn.onnx").read_bytes())
    before = model.read_bytes()
    proc = run_cli("compile", str(model), "-o", str(model), "--backend", "ort")
    assert proc.returncode == 2 and "is also an input" in proc.stderr and model.read_bytes() == before
    result = tmp_path / "r.json"
    result.write_text("{}")
    proc = run_cli("report", str(result), "-o", str(result))
    assert proc.returncode == 2 and "is also an input" in proc.stderr and result.read_text() == "{}"


def test_a_fifo_is_not_a_bundle(tmp_path):
    """`validate fifo.edgert` hung in zipfile's read."""
    import os

    fifo = tmp_path / "fifo.edgert"
    os.mkfifo(fifo)
    with pytest.raises(BundleError, match="not a regular file"):
        Bundle(fifo)


def test_compiling_an_empty_file_is_refused(tmp_path):
    """It 'succeeded' with a bundle of 0 segments that then refused every input."""
    from edgert.errors import ModelError

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="no nodes"):
        dyn.compile(empty, backend="ort", out=tmp_path / "x.edgert")
    assert not (tmp_path / "x.edgert").exists()


@pytest.mark.skipif(not backends.backend_class("tvm").available(), reason="TVM is not installed")
def test_kept_candidates_are_whole_files_and_an_unfinished_directory_says_so(tmp_path, monkeypatch):
    """compile --keep-candidates stopped part way left some candidates and no sign that others
    were missing (and a copy cut off mid-write): now each file is whole and INCOMPLETE marks
    a directory the compile did not finish filling."""
    from test_dynamic_partition import if_model

    from edgert.dynamic import compiler
    from edgert.dynamic.candidates import INCOMPLETE

    model = if_model(tmp_path)
    done = tmp_path / "done"
    dyn.compile(model, backend="auto", out=tmp_path / "a.edgert", cache_dir=tmp_path / "cache",
                keep_candidates=done)
    kept = sorted(p.name for p in done.iterdir())
    assert kept and INCOMPLETE not in kept and any(name.endswith(".edgert") for name in kept)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compiler.whole, "choose", interrupted)  # after the segments' candidates
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        dyn.compile(model, backend="auto", out=tmp_path / "b.edgert", cache_dir=tmp_path / "cache",
                    keep_candidates=cut)
    assert (cut / INCOMPLETE).is_file() and not (tmp_path / "b.edgert").exists()
    for bundle in cut.glob("*.edgert"):
        assert Bundle(bundle).manifest["segments"]  # whole: its checksums hold


def _first_call(manifest):
    return next(s for s in manifest["program"]["body"]["steps"] if s["op"] == "call")


@pytest.mark.parametrize("change, says", [
    (lambda m: m.pop("program"), "host program version None"),
    (lambda m: m.update(segments="x"), "segments must be a list"),
    (lambda m: m.update(inputs=[{"name": "x"}]), "inputs must be a list of {name, shape, dtype}"),
    (lambda m: m["segments"][0].update(artifact="segments/nope.onnx"), "artifact/extra_members listed"),
    (lambda m: m["program"]["body"]["steps"][0].update(op="jump"), "unknown host program step 'jump'"),
    (lambda m: _first_call(m).update(segment="seg_999"), "calls segment 'seg_999'"),
    (lambda m: _first_call(m).update(inputs=["ghost"]), "reads 'ghost' before anything binds it"),
    (lambda m: m["program"]["body"].update(outputs=["ghost"]), "reads 'ghost' before anything binds it"),
])
def test_a_resealed_bundle_with_a_malformed_manifest_is_refused_in_one_line(bundle, tmp_path, change, says):
    """Its checksums hold (``seal`` is public, for repacking tools), but the loader and the
    interpreter read the manifest without checking: KeyError and TypeError tracebacks."""
    def edited(name, data):
        if name != MANIFEST:
            return data
        manifest = json.loads(data)
        change(manifest)
        return json.dumps(manifest).encode()

    bad = tmp_path / "bad.edgert"
    rewrite(bundle, bad, edited)
    with pytest.raises(BundleError, match=re.escape(says)):
        dyn.load(bad)
