"""Step 1 of dynamic compilation: make an ONNX model easy to partition (host only).

Local functions are inlined so every control-flow node is visible, every node gets a
unique name (paths and errors refer to nodes by name), shapes are inferred so segment
boundaries have types (loop-carried values included, where ``carry`` proves them static),
and each subgraph's outer-scope captures are recorded.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgert.errors import ModelError
from edgert.onnx_file import load_model, model_digest

from .carry import carry_static_shapes
from .graphs import free_names, iter_graphs  # noqa: F401 (partition, whole and tests use them from here)

CONTROL_FLOW = ("If", "Loop", "Scan")
# Operators that only make sense with sequence/optional values.
_SEQUENCE_OPS = {
    "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceAt", "SequenceErase",
    "SequenceLength", "SplitToSequence", "ConcatFromSequence", "SequenceMap",
    "Optional", "OptionalHasElement", "OptionalGetElement",
}


@dataclasses.dataclass
class NormalizedModel:
    """The inlined, shape-inferred model plus facts the partitioner needs."""

    model: Any  # onnx.ModelProto
    source_sha256: str
    captures: dict[str, list[str]]  # "node/attr" -> outer names that subgraph body reads


def _name_nodes(graph: Any, used: set[str], counter: list[int]) -> None:
    for node in graph.node:
        if not node.name or node.name in used:
            counter[0] += 1
            node.name = f"{node.op_type}_{counter[0]}"
            while node.name in used:
                counter[0] += 1
                node.name = f"{node.op_type}_{counter[0]}"
        used.add(node.name)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else list(attr.graphs)):
                _name_nodes(sub, used, counter)


def _canonical_constants(graph: Any) -> None:
    """Rewrite Constant(value_float/ints/...) as Constant(value=tensor): one form for engines."""
    import numpy as np
    from onnx import helper, numpy_helper

    kinds = {"value_float": np.float32, "value_floats": np.float32,
             "value_int": np.int64, "value_ints": np.int64}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name in kinds:
            attr = node.attribute[0]
            value = np.asarray(helper.get_attribute_value(attr), dtype=kinds[attr.name])
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else list(attr.graphs)):
                _canonical_constants(sub)


def _unsupported_type(type_proto: Any) -> str | None:
    kind = type_proto.WhichOneof("value")
    if kind in ("sequence_type", "optional_type", "map_type", "sparse_tensor_type"):
        return kind.replace("_type", "")
    return None


def _reject_non_tensors(graph: Any, where: str) -> None:
    infos = list(graph.input) + list(graph.output) + list(graph.value_info)
    for info in infos:
        kind = _unsupported_type(info.type)
        if kind:
            raise ModelError(
                f"value {info.name!r} in {where} has {kind} type; edgert's dynamic compiler supports "
                f"only tensor values so far (sequence/optional/map types are not supported yet)",
                value=info.name, kind=kind,
            )
    for node in graph.node:
        if node.op_type in _SEQUENCE_OPS:
            raise ModelError(
                f"operator {node.op_type} (node {node.name!r}) works on sequence/optional values, "
                f"which are not supported yet by edgert's dynamic compiler",
                op=node.op_type, node=node.name,
            )
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else list(attr.graphs)):
                _reject_non_tensors(sub, f"subgraph {node.name}/{attr.name}")


def normalize(model_path: Path) -> NormalizedModel:
    """Load, inline, name, type-check and shape-infer ``model_path``."""
    import onnx.inliner

    path = Path(model_path)
    model = load_model(path)  # weights inline: the bundle's segments carry them
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    _name_nodes(model.graph, set(), [0])
    _canonical_constants(model.graph)
    _reject_non_tensors(model.graph, "the main graph")
    return _typed(model, model_digest(path), str(path))


def _typed(model: Any, source_sha256: str, what: str) -> NormalizedModel:
    """Shape inference (loop-carried shapes proved by ``carry``) and captures."""
    import onnx.shape_inference

    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                  data_prop=True)
    except Exception as exc:
        raise ModelError(f"ONNX shape inference failed on {what}: {exc}", path=what) from exc
    _reject_non_tensors(model.graph, "the main graph")
    model = carry_static_shapes(model)
    captures = {key: free_names(sub) for key, sub in iter_graphs(model.graph)}
    return NormalizedModel(model, source_sha256, captures)


def with_constant_inputs(norm: NormalizedModel, values: dict[str, Any]) -> NormalizedModel:
    """``norm`` with the inputs in ``values`` replaced by those constants, re-inferred, so
    shapes computed from their values become static (a value-guarded program's model)."""
    from onnx import ModelProto, numpy_helper

    model = ModelProto()
    model.CopyFrom(norm.model)
    graph = model.graph
    kept = [i for i in graph.input if i.name not in values]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in values.items())
    del graph.value_info[:]  # re-inferred from the constants
    return _typed(model, norm.source_sha256, "the model with constant inputs")
