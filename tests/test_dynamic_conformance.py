"""ONNX's own node conformance cases that contain If, Loop or Scan (anywhere, including the
function-expanded ones), compiled through edgert with ORT segments and with TVM segments.

With backend="tvm" a segment TVM cannot build falls back to ORT, and the manifest says
why. Each case's own input is also its compile-time sample. ``TVM_ALL`` lists the cases
whose input runs only TVM segments (possibly in a program specialised to that input's
small integer values, behind a guard); ``TVM_FALLBACK`` the ones that still need ORT for
some segment (docs/conformance.md explains each). Both
lists are asserted, so a regression fails and so does an improvement nobody recorded.

The tests are parametrized over these lists rather than over onnx's cases: generating the
cases runs every node test's reference implementation (about 30 s), which collection must
not pay for every `pytest -k`. They are generated once, by the first test that needs one;
``test_lists_name_every_control_flow_case`` checks the lists against them."""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgert.dynamic as dyn
from edgert.dynamic.normalize import CONTROL_FLOW, iter_graphs
from edgert.backends import backend_class
from edgert.errors import ModelError

# Cases edgert refuses on purpose, with the reason its ModelError must give.
REFUSED = {
    "test_if_seq": "sequence", "test_if_opt": "optional", "test_loop13_seq": "sequence",
    "test_loop16_seq_none": "optional", "test_scan_sum": "opset-8",
    "test_sequence_map_identity_1_sequence_expanded": "sequence",
    "test_sequence_map_identity_2_sequences_expanded": "sequence",
    "test_sequence_map_identity_1_sequence_1_tensor_expanded": "sequence",
    "test_sequence_map_add_2_sequences_expanded": "sequence",
    "test_sequence_map_add_1_sequence_1_tensor_expanded": "sequence",
    "test_sequence_map_extract_shapes_expanded": "sequence",
}

# ONNX Runtime's Python API takes no bfloat16 numpy inputs, so these cannot be run here.
BFLOAT16_INPUTS = {"test_range_bfloat16_type_positive_delta_expanded"}
# backend="tvm": every segment on TVM (or folded into the host program).
TVM_ALL = {
    "test_if", "test_loop11", "test_scan9_sum", "test_scan9_scalar", "test_scan9_multi_state",
    "test_range_float_type_positive_delta_expanded", "test_range_int32_type_negative_delta_expanded",
    "test_range_float16_type_positive_delta_expanded",
    "test_linear_attention_decode_step_expanded", "test_linear_attention_prefill_with_past_expanded",
    "test_linear_attention_no_past_explicit_zeros_expanded",
    "test_linear_attention_delta_expanded", "test_linear_attention_explicit_scale_expanded",
    "test_linear_attention_fp16_expanded", "test_linear_attention_gated_delta_beta_scalar_expanded",
    "test_linear_attention_gated_delta_expanded", "test_linear_attention_gated_delta_gqa_expanded",
    "test_linear_attention_gated_delta_mqa_expanded", "test_linear_attention_gated_expanded",
    "test_linear_attention_gated_per_head_decay_expanded", "test_linear_attention_linear_expanded",
    "test_linear_attention_linear_t1_no_past_expanded",
    # via a program specialised to the case's `size` (guarded at run time; docs/conformance.md)
    "test_affine_grid_2d_expanded", "test_affine_grid_2d_align_corners_expanded",
    "test_affine_grid_3d_expanded", "test_affine_grid_3d_align_corners_expanded",
}
# backend="tvm": correct, but some segment runs on ORT; docs/conformance.md says why.
TVM_FALLBACK: set[str] = set()


def _has_control_flow(model: onnx.ModelProto) -> bool:
    graphs = [model.graph] + [g for _, g in iter_graphs(model.graph)]
    nodes = [n for g in graphs for n in g.node] + [n for f in model.functions for n in f.node]
    return any(n.op_type in CONTROL_FLOW for n in nodes)


KNOWN = set(REFUSED) | BFLOAT16_INPUTS | TVM_ALL | TVM_FALLBACK


@functools.cache
def _cases() -> dict:
    """onnx's node cases that contain control flow, by name (generated once per process)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators warn about overflow in casts
        found = collect_testcases(None)
    return {c.name: c for c in found if c.kind == "node" and _has_control_flow(c.model)}


def _case(name: str):
    found = _cases()
    if name not in found:
        pytest.fail(f"onnx {onnx.__version__} has no control-flow case {name}")
    return found[name]


def test_lists_name_every_control_flow_case():
    found = set(_cases())
    assert {"test_if", "test_loop11", "test_scan9_sum"} <= found and len(found) >= 30
    assert found - KNOWN == set(), "new cases: add each to REFUSED, TVM_ALL or TVM_FALLBACK"
    assert KNOWN - found == set(), "cases this onnx no longer has"


def _feeds(name: str) -> dict:
    case = _case(name)
    return dict(zip([i.name for i in case.model.graph.input], case.data_sets[0][0]))


def _host_control_flow(block: dict) -> bool:
    """Does the host program still run some If/Loop/Scan (not all resolved at compile time)?"""
    return any(s["op"] in ("if", "loop", "scan")
               or any(_host_control_flow(s[k]) for k in ("then", "else", "body") if k in s)
               for s in block["steps"])


def _check_case(name: str, bundle: Path) -> tuple[dict, list[str]]:
    """Run the case's input; returns the manifest and the segments that ran."""
    expected = _case(name).data_sets[0][1]
    with dyn.load(bundle) as runtime:
        got = runtime.run(_feeds(name))
        assert len(got) == len(expected)
        for g, want in zip(got, expected):
            np.testing.assert_allclose(g, np.asarray(want), rtol=1e-3, atol=1e-4)
        path = runtime.last_path
        program = (runtime.manifest["guarded"]["program"] if path.program == "guarded"
                   else runtime.manifest["program"])
        host_steps = any(e["kind"] != "call" for e in path.events)
        assert host_steps == _host_control_flow(program["body"]), path.key()
        return runtime.manifest, path.segments


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_conformance_case(name, tmp_path: Path):
    case = _case(name)
    path = tmp_path / f"{name}.onnx"
    onnx.save(case.model, path)
    if name in REFUSED:
        with pytest.raises(ModelError, match=REFUSED[name]):
            dyn.compile(path, backend="ort", out=tmp_path / "b.edgert")
        return
    if any(np.asarray(v).dtype.name == "bfloat16" for v in case.data_sets[0][0]):
        pytest.skip("ONNX Runtime's Python API takes no bfloat16 numpy inputs")
    _check_case(name, dyn.compile(path, backend="ort", out=tmp_path / "b.edgert",
                                  samples=[_feeds(name)]))


def test_lists_are_disjoint():
    lists = [set(REFUSED), BFLOAT16_INPUTS, TVM_ALL, TVM_FALLBACK]
    assert sum(map(len, lists)) == len(KNOWN)


@pytest.fixture(scope="session")
def tvm_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tvm-cache")


@pytest.mark.slow
@pytest.mark.skipif(not backend_class("tvm").available(), reason="TVM is not installed")
@pytest.mark.parametrize("name", sorted(TVM_ALL | TVM_FALLBACK))
def test_conformance_case_with_tvm(name, tmp_path: Path, tvm_cache):
    path = tmp_path / f"{name}.onnx"
    onnx.save(_case(name).model, path)
    bundle = dyn.compile(path, backend="tvm", out=tmp_path / "b.edgert", cache_dir=tvm_cache,
                         samples=[_feeds(name)])
    manifest, ran = _check_case(name, bundle)
    for seg in manifest["segments"]:  # the manifest says which engine runs what, and why
        if seg["engine"] != "tvm":
            assert seg["engine"] == "ort" and seg["choice"]["fallback_from"] == "tvm"
            assert seg["choice"]["failed"] and seg["choice"]["reason"]
    for record in manifest["host_folded"] + manifest.get("guarded", {}).get("host_folded", []):
        assert record["reason"].startswith(("kernel-less", "dead branch"))
    engine = {s["id"]: s["engine"] for s in manifest["segments"]}
    fallbacks = [seg for seg in ran if engine[seg] != "tvm"]  # for the case's own input
    if name in TVM_ALL:
        assert not fallbacks, fallbacks
    else:
        assert fallbacks, f"{name} now runs fully on TVM: move it to TVM_ALL"
