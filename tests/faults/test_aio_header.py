"""All-in-One files: the header is checksummed and every field checked (issue 16, case 3)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgert.errors import BundleError
from edgert.variants import aiofile, open as open_variants
from edgert.variants.prune import prune
from conftest import run_cli
from fileflips import survivors


def small_aio(tmp_path: Path) -> Path:
    """conv(2->4) -> relu -> conv(4->3) -> GAP -> flatten, pruned to levels 0 and 0.5: a few KB."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("c0.w", (4, 2, 3, 3)), ("c1.w", (3, 4, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "c0.w"], ["c0"], name="c0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"], name="r0"),
             helper.make_node("Conv", ["r0", "c1.w"], ["c1"], name="c1"),
             helper.make_node("GlobalAveragePool", ["c1"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["y"], name="flat")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    model = tmp_path / "small.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    prune(model, [0, 0.5], tmp_path / "small.aio")
    return tmp_path / "small.aio"


def _outputs(path: Path) -> list[np.ndarray]:
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    with open_variants(path) as model:
        return [model.select_index(i) and model.run({"x": x})[0] for i in range(len(model.levels))]


def test_every_single_byte_flip_is_refused_or_harmless(tmp_path):
    path = small_aio(tmp_path)
    reference = _outputs(path)

    def attempt():
        aiofile.read(path).close()  # the cheap refusal first; whole runs only for what opens
        return _outputs(path)

    opened = survivors(path, attempt, BundleError)
    for offset, outputs in opened.items():
        for got, want in zip(outputs, reference):
            np.testing.assert_array_equal(got, want, err_msg=f"flip at byte {offset} changed the outputs")
    assert path.stat().st_size > 1000 and len(opened) < path.stat().st_size  # the loop really ran


def _crafted(tmp_path: Path, change) -> Path:
    """A copy of a good file with ``change(header)`` applied and the header checksum recomputed:
    what an attacker (not a flipped bit) can produce."""
    good = small_aio(tmp_path)
    raw = good.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    change(header)
    bad = tmp_path / "crafted.aio"
    bad.write_bytes(_checksummed(header) + raw[8 + n:])
    return bad


def _checksummed(header: dict) -> bytes:
    """The header as docs/aio-format.md specifies it, written independently of aiofile: the
    checksum key first (a non-object ``__metadata__`` follows as a duplicate key, which JSON
    readers take as the value)."""
    metadata = header.pop("__metadata__")
    if isinstance(metadata, dict):
        first = {"header_sha256": "0" * 64, **{k: v for k, v in metadata.items() if k != "header_sha256"}}
        text = json.dumps({"__metadata__": first, **header}, separators=(",", ":")).encode()
    else:
        text = json.dumps({"__metadata__": metadata, **header}, separators=(",", ":")).encode()
        text = b'{"__metadata__":{"header_sha256":"' + b"0" * 64 + b'"},' + text[1:]
    text += b" " * (-(8 + len(text)) % 64)
    head = len(text).to_bytes(8, "little") + text
    return head.replace(b"0" * 64, hashlib.sha256(head).hexdigest().encode(), 1)


def _set_meta(key, value):
    def change(header):
        header["__metadata__"][key] = value
    return change


def _set_aio(edit):
    def change(header):
        meta = json.loads(header["__metadata__"]["aio"])
        edit(meta)
        header["__metadata__"]["aio"] = json.dumps(meta)
    return change


def _first_tensor(edit):
    def change(header):
        name = next(k for k in header if k != "__metadata__")
        edit(header[name])
    return change


CRAFTED = {
    "metadata is a list": lambda h: h.__setitem__("__metadata__", ["format", "edgert-aio"]),
    "metadata value not a string": _set_meta("aio", {"levels": []}),
    "deeply nested aio": _set_meta("aio", "[" * 100_000 + "]" * 100_000),
    "nested 40 deep": _set_meta("aio", "[" * 40 + "]" * 40),
    "aio not an object": _set_meta("aio", "[1, 2]"),
    "levels not a list": _set_aio(lambda m: m.__setitem__("levels", {"a": 1})),
    "level ratio a string": _set_aio(lambda m: m["levels"][0].__setitem__("ratio", "half")),
    "param names a missing tensor": _set_aio(
        lambda m: next(iter(m["levels"][1]["params"].values())).__setitem__("tensor", "nope")),
    "ranges past the tensor": _set_aio(
        lambda m: next(iter(m["levels"][1]["params"].values())).__setitem__("ranges", [[[0, 10**6]]] * 4)),
    "graph names a missing tensor": _set_aio(lambda m: m["levels"][0].__setitem__("graph", "graph/none")),
    "shape 1e300": _first_tensor(lambda t: t.__setitem__("shape", [1e300])),
    "shape huge int": _first_tensor(lambda t: t.__setitem__("shape", [10**30, 10**30])),
    "negative offsets": _first_tensor(lambda t: t.__setitem__("data_offsets", [-8, 0])),
    "offsets not a pair": _first_tensor(lambda t: t.__setitem__("data_offsets", [0])),
    "bool shape": _first_tensor(lambda t: t.__setitem__("shape", [True])),
    "calibration not a table": _set_meta("calibration", '{"p50_ms": "fast"}'),
    "calibration rows mismatch": _set_meta("calibration", '{"frequencies": [1], "ratios": [0, 0.5], "p50_ms": [[1]]}'),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_header_is_one_bundle_error_naming_the_file(tmp_path, case):
    bad = _crafted(tmp_path, CRAFTED[case])
    with pytest.raises(BundleError, match="crafted.aio"):
        open_variants(bad)


@pytest.mark.parametrize("case", ["metadata is a list", "deeply nested aio", "shape 1e300",
                                  "calibration not a table"])
def test_calibrate_and_report_refuse_a_crafted_file_in_one_line(tmp_path, case):
    bad = _crafted(tmp_path, CRAFTED[case])
    for args in (["calibrate", str(bad), "--emulated", "1.0", "--max-time", "0.1"],
                 ["report", str(bad), "-o", str(tmp_path / "r.html")]):
        proc = run_cli(*args, timeout=300)
        assert proc.returncode != 0, (args, proc.stdout)
        assert "Traceback" not in proc.stderr and "crafted.aio" in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_version_1_file_is_refused_with_what_to_do(tmp_path):
    good = small_aio(tmp_path)
    raw = good.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = {k: v for k, v in header.pop("__metadata__").items() if k != "header_sha256"}
    text = json.dumps({"__metadata__": {**meta, "version": "1"}, **header}).encode()
    old = tmp_path / "old.aio"
    old.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    with pytest.raises(BundleError, match="format version 1.*re-create it"):
        aiofile.read(old)
    assert hashlib.sha256(raw[8 + n:]).hexdigest() == meta["sha256"]  # only the header differs
