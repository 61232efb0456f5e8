"""Damaged bundles are refused before use, by every command (issue 16, case 4)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgert.dynamic as dyn
from edgert.errors import BundleError
from conftest import run_cli
from edgert.dynamic.bundle import Bundle
from fileflips import survivors



def tiny_if_model(path):
    """y = x*2 if sum(x) > 0 else x+1: one If, two one-node branches; its bundle is about 2 KB."""
    then = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])])
    other = helper.make_graph([helper.make_node("Add", ["x", "one"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    inits = [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in (("two", 2.0), ("one", 1.0), ("zero", 0.0))]
    graph = helper.make_graph(nodes, "tiny_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def bundle(tmp_path):
    return dyn.compile(tiny_if_model(tmp_path / "tiny_if.onnx"), backend="ort", out=tmp_path / "tiny.edgert")


def _contents(path):
    """Everything the runtime can get from a bundle: the verified manifest and member bytes."""
    opened = Bundle(path)
    return opened.manifest, {name: opened.read(name) for name in opened.manifest["members"]}


def test_every_single_byte_flip_is_refused(bundle):
    """Every flip ends in BundleError, one in a zip field nothing reads (a timestamp, an
    attribute) too: format version 2 let 682 of 1,900 such flips through unnoticed."""
    _contents(bundle)  # the undamaged bundle opens
    assert survivors(bundle, lambda: _contents(bundle), BundleError) == {}


def test_bytes_around_the_zip_a_cut_or_an_older_bundle_are_refused_as_such(bundle, tmp_path):
    """zipfile reads an archive with bytes prepended or appended as if they were not there; a
    cut or older file is said to be one (each was 'not of format version 3: recompile')."""
    raw = bundle.read_bytes()
    v2 = raw[:-85] + b"edgert-bundle manifest-sha256=" + bytes(64)  # the previous format's comment
    for name, data, says in (("appended", raw + b"\0", "damaged: its checksum is not at its end"),
                             ("prepended", b"#!/bin/sh\n" + raw, "does not match the sha256 at its end"),
                             ("cut", raw[:-1], "its checksum is not at its end .* or it was cut"),
                             ("half", raw[:len(raw) // 2], "no edgert checksum at its end"),
                             ("old", v2, "format version 2; this edgert reads version 3: recompile")):
        path = tmp_path / f"{name}.edgert"
        path.write_bytes(data)
        with pytest.raises(BundleError, match=says):
            Bundle(path)


def _damaged(bundle, tmp_path):
    raw = bundle.read_bytes()
    manifest_byte = raw.index(b"manifest.json") + 40  # inside the (deflated) manifest
    flipped = bytearray(raw)
    flipped[manifest_byte] ^= 0x10
    cases = {"truncated": raw[:len(raw) // 2], "flipped": bytes(flipped),
             "comment": raw[:-3] + b"000", "not a zip": b"\x89PNG\r\n" + raw[6:]}
    paths = {}
    for name, data in cases.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.edgert"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("command", [["validate", "--reference", "REF"], ["bench", "--runs", "2"], ["push", "--device", "tcp://127.0.0.1:9"]])
def test_commands_refuse_damaged_bundles_in_one_line(bundle, tmp_path, command):
    for name, path in _damaged(bundle, tmp_path).items():
        args = [str(tmp_path / "tiny_if.onnx") if a == "REF" else a for a in command[1:]]
        proc = run_cli(command[0], str(path), *args, timeout=300)
        assert proc.returncode not in (0, 130), (name, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (name, proc.stderr)
        assert path.name in proc.stderr, (name, proc.stderr)
