"""Give a segment static types before TVM imports it (host only).

TVM's ONNX importer needs every value's rank, and it cannot do arithmetic on shapes
("cannot handle ShapeExpr inputs"). A segment cut out of a larger graph often lacks
both: a loop-carried value's rank is unknown to ONNX shape inference, and shape
computations (``Shape -> Div -> Concat -> Reshape``) survive as nodes. This module

* fills in the rank of inputs ONNX could not type from the ranks a sample run saw
  (only when every call agreed; the dims stay symbolic, so nothing is fixed that the
  model left open), and
* folds every node whose inputs are constants, or that reads only the static shape of
  a value (``Shape``/``Size``), into an initializer, repeating shape inference in between.

The result is semantically the segment; only the TVM artifact is built from it (the
bundle keeps the original segment ONNX for ORT).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from .graphs import free_names

# Never folded: results differ from run to run.
_RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
               "Multinomial", "Bernoulli", "Dropout"}
# Above this many elements a computed constant is left as a node: it would bloat the library.
MAX_FOLD_ELEMENTS = 1 << 16
_ROUNDS = 4


@dataclasses.dataclass
class Specialized:
    model: Any  # onnx.ModelProto
    folded: int  # nodes replaced by constants
    ranks_from_sample: list[str]  # inputs whose rank came from the sample run

    @property
    def kernel_less(self) -> bool:
        """Nothing left to compute: every output is an input or a constant."""
        return len(self.model.graph.node) == 0


def _static_shape(info: Any) -> tuple[int, ...] | None:
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return None if any(d is None for d in dims) else tuple(dims)


def _fill_ranks(model: Any, observed: Mapping[str, set[tuple[int, ...]]]) -> list[str]:
    filled = []
    for info in model.graph.input:
        tensor = info.type.tensor_type
        ranks = {len(s) for s in observed.get(info.name, ())}
        if tensor.HasField("shape") or len(ranks) != 1:
            continue
        rank = ranks.pop()
        shape = tensor.shape  # accessing it creates the (empty) shape: rank 0 so far
        for axis in range(rank):
            shape.dim.add().dim_param = f"{info.name}__{axis}"
        filled.append(info.name)
    return filled


def _evaluate(node: Any, consts: dict[str, np.ndarray], opsets: list[Any]) -> list[np.ndarray]:
    """``node`` run on constant inputs: onnx's reference evaluator, else ONNX Runtime.

    The reference evaluator has gaps and bugs (its GatherElements fails on BERT's
    position-id gather); ORT, where installed, evaluates what it cannot.
    """
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    names = [n for n in node.input if n]
    graph = helper.make_graph([node], "fold", [],
                              [helper.ValueInfoProto(name=o) for o in node.output if o],
                              initializer=[numpy_helper.from_array(consts[n], n) for n in names])
    model = helper.make_model(graph, opset_imports=opsets)
    try:
        return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, {})]
    except Exception:
        import onnxruntime as ort  # an ImportError keeps the node, as the failure would

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        return [np.asarray(v) for v in session.run(None, {})]


def _shape_value(node: Any, shape: tuple[int, ...]) -> np.ndarray:
    from onnx import helper

    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.array(shape[start:end], dtype=np.int64)


def _fold_once(model: Any) -> int:
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    infos = list(graph.input) + list(graph.value_info)
    shapes = {i.name: _static_shape(i) for i in infos}
    types = {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in infos
             if i.type.tensor_type.elem_type}
    types.update({name: value.dtype for name, value in consts.items()})
    keep, folded = [], 0
    for node in graph.node:
        values = None
        reads = [n for n in node.input if n]
        try:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                values = [numpy_helper.to_array(node.attribute[0].t)]
            elif node.op_type == "CastLike" and node.input[0] in consts and node.input[1] in types:
                values = [consts[node.input[0]].astype(types[node.input[1]])]
            elif node.op_type in ("Shape", "Size") and shapes.get(node.input[0]) is not None:
                values = [_shape_value(node, shapes[node.input[0]])]
            elif (node.domain in ("", "ai.onnx") and node.op_type not in _RANDOM_OPS
                  and reads and all(n in consts for n in reads)
                  and not any(a.HasField("g") or a.graphs for a in node.attribute)):
                values = _evaluate(node, consts, list(model.opset_import))
        except Exception:  # the reference evaluator lacks this op or case: keep the node
            values = None
        if values is None or any(v.size > MAX_FOLD_ELEMENTS for v in values):
            keep.append(node)
            continue
        folded += 1
        for name, value in zip([o for o in node.output if o], values):
            consts[name] = value
    if not folded:
        return 0
    used = {n for node in keep for n in node.input} | {o.name for o in graph.output}
    used.update(n for node in keep for a in node.attribute if a.HasField("g")
                for n in free_names(a.g))  # what a Loop/Scan/If body reads from here
    inputs = {i.name for i in graph.input}
    initializers = [numpy_helper.from_array(v, n) for n, v in consts.items()
                    if n in used and n not in inputs]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    for info in graph.output:  # an output that is now an initializer keeps its full type
        if info.name in consts and not _static_shape(info):
            value = consts[info.name]
            info.type.CopyFrom(helper.make_tensor_type_proto(
                helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    return folded


def specialize(model_bytes: bytes,
               observed: Mapping[str, set[tuple[int, ...]]] | None = None,
               known: Sequence[Any] = ()) -> Specialized:
    """Ranks from ``observed`` (input -> shapes a sample run saw), then fold to a fixpoint.

    ``known``: value_info that holds although ONNX inference cannot derive it (``carry``'s
    proved loop outputs); every round of inference starts from it.
    """
    import onnx
    import onnx.shape_inference

    model = onnx.load_from_string(model_bytes)
    filled = _fill_ranks(model, observed or {})
    folded = 0
    for _ in range(_ROUNDS):
        del model.graph.value_info[:]
        model.graph.value_info.extend(known)
        model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                  data_prop=True)
        done = _fold_once(model)
        folded += done
        if not done:
            break
    del model.graph.value_info[:]
    model.graph.value_info.extend(known)
    model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                              data_prop=True)
    return Specialized(model, folded, filled)


def fold_constants(part: Any) -> list[dict[str, Any]]:
    """Propagate constants through the host program, segment by segment, in program order.

    A segment output that folds to a constant (constants, shape arithmetic on static
    shapes) becomes a host ``const`` step, and later segments get it as an initializer,
    where an engine can use it as a value (a Reshape's shape, an Unsqueeze's axes)
    instead of a runtime tensor. A segment left with no outputs is removed: it has no
    kernel for any engine to run. An ``if`` whose condition is a constant becomes the
    steps of the branch it takes (folded in turn, so what it computes folds downstream);
    the other branch's segments are removed. Returns one record per removed segment.
    """
    folder = _ConstantFolder(part)
    folder.block(part.program["body"])
    return folder.removed


class _ConstantFolder:
    def __init__(self, part: Any) -> None:
        self.part = part
        self.segments = {seg.id: seg for seg in part.segments}
        self.known: dict[str, np.ndarray] = {}
        # Static types of segment outputs (after specialising), given to later segments
        # whose input ONNX could not type (a resolved If's outputs, for instance). Sound:
        # they follow from the producer's declared input shapes, which the runtime checks.
        self.types: dict[str, Any] = {}
        self.removed: list[dict[str, Any]] = []

    def block(self, block: dict[str, Any]) -> None:
        steps = []
        for step in block["steps"]:
            if step["op"] == "const":
                self.known[step["name"]] = self.part.consts[step["const"]]
            elif step["op"] == "alias":
                self._alias(step["src"], step["dst"])
            elif step["op"] == "call":
                steps.extend(self.call(step))
                continue
            elif step["op"] == "if" and self._condition(step) is not None:
                steps.extend(self.taken(step))
                continue
            for key in ("then", "else", "body"):
                if key in step:
                    self.block(step[key])
            steps.append(step)
        block["steps"] = steps

    def _condition(self, step: dict[str, Any]) -> bool | None:
        value = self.known.get(step["cond"])
        return None if value is None or np.size(value) != 1 else bool(np.asarray(value).item())

    def taken(self, step: dict[str, Any]) -> list[dict[str, Any]]:
        """The steps of the branch a constant-condition If takes, its outputs bound by alias."""
        branch = "then" if self._condition(step) else "else"
        dead = "else" if branch == "then" else "then"
        reason = f"dead branch: If {step['node']}'s condition is a constant, it always takes {branch}"
        for seg_id in _segment_ids(step[dead]):
            seg = self.segments[seg_id]
            self.part.segments.remove(seg)
            self.removed.append({"segment": seg.id, "nodes": seg.nodes, "ops": seg.ops,
                                 "reason": reason})
        block = step[branch]
        self.block(block)
        steps = list(block["steps"])
        for dst, src in zip(step["outputs"], block["outputs"]):
            if dst:
                steps.append({"op": "alias", "src": src, "dst": dst})
                self._alias(src, dst)
        return steps

    def _alias(self, src: str, dst: str) -> None:
        if src in self.known:
            self.known[dst] = self.known[src]
        if src in self.types:
            self.types[dst] = self.types[src]

    def call(self, step: dict[str, Any]) -> list[dict[str, Any]]:
        import onnx
        from onnx import numpy_helper

        seg = self.segments[step["segment"]]
        model = onnx.load_from_string(seg.model_bytes)
        fixed = [name for name in seg.inputs if name in self.known]
        for info in [i for i in model.graph.input if i.name in fixed]:
            model.graph.input.remove(info)
            model.graph.initializer.append(numpy_helper.from_array(self.known[info.name], info.name))
        typed = [i for i in model.graph.input if i.name in self.types and _static_shape(i) is None]
        for info in typed:
            info.type.CopyFrom(self.types[info.name])
        special = specialize(model.SerializeToString(deterministic=True))
        self.types.update((o.name, o.type) for o in special.model.graph.output
                          if _static_shape(o) is not None)
        consts = {t.name: numpy_helper.to_array(t) for t in special.model.graph.initializer}
        const_outputs = [name for name in seg.outputs if name in consts]
        if not fixed and not typed and not special.folded:
            return [step]
        steps = []
        for name in const_outputs:
            self.known[name] = consts[name]
            const_id = f"{self.part.prefix}const_{len(self.part.consts):03d}"
            self.part.consts[const_id] = consts[name]
            steps.append({"op": "const", "name": name, "const": const_id})
        if len(const_outputs) == len(seg.outputs):
            self.part.segments.remove(seg)
            self.removed.append({
                "segment": seg.id, "nodes": seg.nodes, "ops": seg.ops,
                "reason": "kernel-less: every output folds to a constant (constants and shape "
                          "arithmetic on static shapes); the host program holds them"})
            return steps
        graph = special.model.graph
        for info in [o for o in graph.output if o.name in const_outputs]:
            graph.output.remove(info)
        seg.inputs = [name for name in seg.inputs if name not in fixed]
        seg.outputs = [name for name in seg.outputs if name not in const_outputs]
        seg.model_bytes = special.model.SerializeToString(deterministic=True)
        return steps + [dict(step, inputs=seg.inputs, outputs=seg.outputs)]


def _segment_ids(block: dict[str, Any]) -> list[str]:
    """Every segment a program block calls, nested blocks included."""
    ids = []
    for step in block["steps"]:
        if step["op"] == "call":
            ids.append(step["segment"])
        ids += [i for key in ("then", "else", "body") if key in step for i in _segment_ids(step[key])]
    return ids
