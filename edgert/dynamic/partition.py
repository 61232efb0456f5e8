"""Step 2: cut a normalized ONNX graph at If/Loop/Scan into static segments (host only).

Each block (the main graph, a branch, a loop or scan body) becomes a list of host steps.
Static nodes are grouped into maximal runs: a node joins the earliest run not before
the last step that produces one of its inputs, so work that does not depend on a control
flow result is hoisted above it. Each run becomes a standalone ONNX model (a segment)
whose inputs are the runtime values it reads and whose outputs are the values read
later in the block, by control flow, or as block outputs. Runs made only of Identity
and Constant become host ``alias``/``const`` steps: no engine call.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Any

import numpy as np

from edgert.errors import ModelError

from .graphs import free_names
from .normalize import CONTROL_FLOW, NormalizedModel
from .program import PROGRAM_VERSION

_HOST_OPS = ("Identity", "Constant")
_COMPARE = {"Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal"}
_PASS_THROUGH = {"Squeeze", "Unsqueeze", "Reshape", "Flatten", "Identity", "Not", "Cast"}
_FLOAT_TYPES = {1, 10, 11, 16}  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclasses.dataclass
class Segment:
    """One static sub-graph, serialised as a standalone ONNX model."""

    id: str
    model_bytes: bytes
    inputs: list[str]
    outputs: list[str]
    nodes: list[str]  # node names, for error messages
    ops: list[str]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_bytes).hexdigest()


@dataclasses.dataclass
class Partition:
    program: dict[str, Any]
    segments: list[Segment]
    consts: dict[str, np.ndarray]  # const id -> value the host program needs directly
    prefix: str = ""  # of segment and const ids (a guarded program's differ from the main one's)


class _Scope:
    """Names visible in a block: types, initializers (constants) and runtime values."""

    def __init__(self, types: collections.ChainMap, inits: collections.ChainMap,
                 values: collections.ChainMap) -> None:
        self.types, self.inits, self.values = types, inits, values

    @classmethod
    def root(cls) -> "_Scope":
        return cls(collections.ChainMap(), collections.ChainMap(), collections.ChainMap())

    def child(self, graph: Any) -> "_Scope":
        scope = _Scope(self.types.new_child(), self.inits.new_child(), self.values.new_child())
        for info in list(graph.input) + list(graph.output) + list(graph.value_info):
            if info.type.WhichOneof("value"):
                scope.types[info.name] = info.type
        for init in graph.initializer:
            scope.inits[init.name] = init
        for info in graph.input:
            scope.values[info.name] = True
        return scope

    def elem_type(self, name: str) -> int:
        """ONNX element type of a visible name, 0 when unknown."""
        if name in self.types:
            return self.types[name].tensor_type.elem_type
        return self.inits[name].data_type if name in self.inits else 0

    def is_constant(self, name: str) -> bool:
        return name in self.inits and name not in self.values


class _Partitioner:
    def __init__(self, norm: NormalizedModel, prefix: str) -> None:
        self.model = norm.model
        self.prefix = prefix
        self.segments: list[Segment] = []
        self.consts: dict[str, np.ndarray] = {}
        self._const_ids: dict[str, str] = {}

    # -- blocks ---------------------------------------------------------------------------
    def block(self, graph: Any, scope: _Scope, block_outputs: list[str]) -> dict[str, Any]:
        groups = self._group(graph, scope)
        uses = [self._uses(g) for g in groups]
        producers = {out: node for node in graph.node for out in node.output}
        probes = {i: self._probe(g[1], producers, scope) for i, g in enumerate(groups) if g[0] == "cf"}
        for index, probe in probes.items():
            uses[index].update(probe)
        steps: list[dict[str, Any]] = []
        host_reads = [n for g in groups if g[0] == "cf" for n in g[1].input if n] + block_outputs
        host_reads += [n for probe in probes.values() for n in probe]
        for name in dict.fromkeys(host_reads):
            if scope.is_constant(name):
                steps.append({"op": "const", "name": name, "const": self._const(scope.inits[name])})
        for index, (kind, item) in enumerate(groups):
            if kind == "cf":
                steps.append(self._control(item, scope))
                if probes[index]:
                    steps[-1]["probe"] = probes[index]
                continue
            later = set(block_outputs).union(*uses[index + 1:])
            steps.extend(self._static(item, scope, later))
        return {"steps": steps, "outputs": list(block_outputs)}

    def _group(self, graph: Any, scope: _Scope) -> list[tuple[str, Any]]:
        """Order nodes into static runs and control-flow steps (see module docstring)."""
        groups: list[tuple[str, Any]] = []
        made_by: dict[str, int] = {}
        for node in graph.node:
            if self._constant_init(node, scope):
                continue  # an initializer now: segments embed it, the host reads it as a const
            if node.op_type in CONTROL_FLOW:
                groups.append(("cf", node))
                where = len(groups) - 1
            else:
                deps = [made_by[n] for n in node.input if n in made_by]
                after = max(deps, default=-1)
                where = next((i for i in range(max(after, 0), len(groups))
                              if groups[i][0] == "static"), None)
                if where is None:
                    groups.append(("static", []))
                    where = len(groups) - 1
                groups[where][1].append(node)
            for out in node.output:
                if out:
                    made_by[out] = where
                    scope.values[out] = True
        return groups

    @staticmethod
    def _constant_init(node: Any, scope: _Scope) -> bool:
        """Record a ``Constant(value=...)`` node's output as an initializer of this block.

        Kept as nodes, constants end up as runtime segment inputs (a run computes them and
        hands them on), so the engine importing the next segment sees a tensor where it
        needs a value (an Unsqueeze's axes, a Reshape's shape).
        """
        if node.op_type != "Constant" or len(node.attribute) != 1 or node.attribute[0].name != "value":
            return False
        tensor = type(node.attribute[0].t)()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        scope.inits[node.output[0]] = tensor
        scope.values.pop(node.output[0], None)
        return True

    @staticmethod
    def _probe(node: Any, producers: dict[str, Any], scope: _Scope) -> list[str]:
        """The two float operands of the comparison behind an If's condition, if there is one.

        The host reads them so a run can report how close the decision was (``margin``).
        """
        if node.op_type != "If":
            return []
        name = node.input[0]
        while name in producers and producers[name].op_type in _PASS_THROUGH:
            name = producers[name].input[0]
        compare = producers.get(name)
        if compare is None or compare.op_type not in _COMPARE:
            return []
        operands = list(compare.input[:2])
        return operands if all(scope.elem_type(n) in _FLOAT_TYPES for n in operands) else []

    @staticmethod
    def _uses(group: tuple[str, Any]) -> set[str]:
        kind, item = group
        if kind == "cf":
            names = set(n for n in item.input if n)
            for attr in item.attribute:
                if attr.HasField("g"):
                    names.update(free_names(attr.g))
            return names
        made: set[str] = set()
        names = set()
        for node in item:
            names.update(n for n in node.input if n and n not in made)
            made.update(node.output)
        return names

    # -- static runs ----------------------------------------------------------------------
    def _static(self, nodes: list[Any], scope: _Scope, later: set[str]) -> list[dict[str, Any]]:
        made = [o for node in nodes for o in node.output if o]
        outputs = [o for o in made if o in later]
        if not outputs:
            return []  # dead code: nothing after this run reads it
        if all(node.op_type in _HOST_OPS for node in nodes):
            return [self._host_step(node, scope) for node in nodes]
        return [self._segment(nodes, scope, outputs)]

    def _host_step(self, node: Any, scope: _Scope) -> dict[str, Any]:
        if node.op_type == "Identity":
            src = node.input[0]
            if scope.is_constant(src):
                return {"op": "const", "name": node.output[0], "const": self._const(scope.inits[src])}
            return {"op": "alias", "src": src, "dst": node.output[0]}
        return {"op": "const", "name": node.output[0], "const": self._const_node(node)}

    def _segment(self, nodes: list[Any], scope: _Scope, outputs: list[str]) -> dict[str, Any]:
        import onnx
        from onnx import helper

        seg_id = f"{self.prefix}seg_{len(self.segments):03d}"
        for node in nodes:
            if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
                raise ModelError(
                    f"operator {node.op_type!r} (node {node.name!r}, segment {seg_id}) is not an "
                    f"ONNX operator; no engine can run it", op=node.op_type, node=node.name,
                    segment=seg_id)
        made: set[str] = set()
        inputs: list[str] = []
        inits: list[Any] = []
        for node in nodes:
            for name in node.input:
                if not name or name in made or name in inputs:
                    continue
                if scope.is_constant(name):
                    if all(t.name != name for t in inits):
                        inits.append(scope.inits[name])
                elif name in scope.values:
                    inputs.append(name)
                else:
                    raise ModelError(
                        f"node {node.name!r} ({node.op_type}) reads {name!r}, which nothing defines",
                        node=node.name, op=node.op_type, value=name,
                    )
            made.update(node.output)
        graph = helper.make_graph(
            list(nodes), seg_id,
            [self._value_info(n, scope, seg_id) for n in inputs],
            [self._output_info(n, scope) for n in outputs],
            initializer=list(inits),
        )
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import),
                                  ir_version=self.model.ir_version)
        model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
        self._fill_output_types(model)
        data = model.SerializeToString(deterministic=True)
        self.segments.append(Segment(seg_id, data, inputs, outputs, [n.name for n in nodes],
                                     [n.op_type for n in nodes]))
        return {"op": "call", "segment": seg_id, "inputs": inputs, "outputs": outputs}

    @staticmethod
    def _value_info(name: str, scope: _Scope, seg_id: str) -> Any:
        from onnx import ValueInfoProto

        info = ValueInfoProto(name=name)
        if name not in scope.types or not scope.types[name].tensor_type.elem_type:
            raise ModelError(
                f"segment {seg_id} needs the type of {name!r}, which ONNX shape inference "
                f"could not work out; add a value_info for it to the model",
                segment=seg_id, value=name,
            )
        info.type.CopyFrom(scope.types[name])
        return info

    @staticmethod
    def _output_info(name: str, scope: _Scope) -> Any:
        from onnx import ValueInfoProto

        info = ValueInfoProto(name=name)
        if name in scope.types:
            info.type.CopyFrom(scope.types[name])
        return info

    @staticmethod
    def _fill_output_types(model: Any) -> None:
        known = {v.name: v.type for v in model.graph.value_info}
        for out in model.graph.output:
            if not out.type.tensor_type.elem_type and out.name in known:
                out.type.CopyFrom(known[out.name])
            if not out.type.tensor_type.elem_type:
                raise ModelError(f"cannot infer the type of segment output {out.name!r}",
                                 value=out.name)

    # -- constants ------------------------------------------------------------------------
    def _const(self, tensor: Any) -> str:
        from onnx import numpy_helper

        key = hashlib.sha256(tensor.SerializeToString(deterministic=True)).hexdigest()
        if key not in self._const_ids:
            const_id = f"{self.prefix}const_{len(self._const_ids):03d}"
            self._const_ids[key] = const_id
            self.consts[const_id] = numpy_helper.to_array(tensor)
        return self._const_ids[key]

    def _const_node(self, node: Any) -> str:
        """Constants arrive as ``value=tensor`` (normalize rewrote the scalar/list forms)."""
        attr = node.attribute[0]
        if attr.name != "value":
            raise ModelError(f"Constant node {node.name!r} uses {attr.name}, which is not supported",
                             node=node.name, op="Constant")
        return self._const(attr.t)

    # -- control flow ---------------------------------------------------------------------
    def _control(self, node: Any, scope: _Scope) -> dict[str, Any]:
        graphs = {a.name: a.g for a in node.attribute if a.HasField("g")}
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "If":
            return {
                "op": "if", "node": node.name, "cond": node.input[0], "outputs": list(node.output),
                "then": self._sub(graphs["then_branch"], scope),
                "else": self._sub(graphs["else_branch"], scope),
            }
        body = graphs["body"]
        if node.op_type == "Loop":
            n_state = len(node.input) - 2
            return {
                "op": "loop", "node": node.name,
                "trip_count": node.input[0] if len(node.input) > 0 else "",
                "cond": node.input[1] if len(node.input) > 1 else "",
                "initial": list(node.input[2:]), "outputs": list(node.output),
                "scan_outputs": [self._spec(o) for o in body.output[1 + n_state:]],
                "body": self._sub(body, scope),
            }
        if self._opset() < 9:
            raise ModelError(f"Scan node {node.name!r} uses the opset-8 form (batched, with "
                             f"sequence_lens), which is not supported; use opset 9 or later",
                             node=node.name, op="Scan")
        from onnx import helper

        def ints(name: str) -> list[int]:
            return list(helper.get_attribute_value(attrs[name])) if name in attrs else []

        n_scan = helper.get_attribute_value(attrs["num_scan_inputs"])
        n_state = len(node.input) - n_scan
        return {
            "op": "scan", "node": node.name, "inputs": list(node.input),
            "outputs": list(node.output), "num_scan_inputs": n_scan,
            "input_axes": ints("scan_input_axes"), "input_directions": ints("scan_input_directions"),
            "output_axes": ints("scan_output_axes"),
            "output_directions": ints("scan_output_directions"),
            "scan_outputs": [self._spec(o) for o in body.output[n_state:]],
            "body": self._sub(body, scope),
        }

    def _sub(self, graph: Any, scope: _Scope) -> dict[str, Any]:
        child = scope.child(graph)
        block = self.block(graph, child, [o.name for o in graph.output])
        block["inputs"] = [i.name for i in graph.input]
        return block

    @staticmethod
    def _spec(info: Any) -> dict[str, Any]:
        """dtype and static shape of a per-iteration output (for zero-trip loops)."""
        from onnx import helper

        tensor = info.type.tensor_type
        if not tensor.elem_type:
            raise ModelError(f"the element type of scan output {info.name!r} is unknown; declare "
                             f"it in the loop or scan body's outputs", value=info.name)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        return {"dtype": dtype, "shape": shape}

    def _opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 0)


def partition(norm: NormalizedModel, prefix: str = "") -> Partition:
    """Split the normalized model into segments and a host program (ids start with ``prefix``)."""
    graph = norm.model.graph
    parts = _Partitioner(norm, prefix)
    scope = _Scope.root().child(graph)
    defaults = {t.name for t in graph.initializer}
    for name in defaults & set(scope.values):  # inputs with an initializer: fixed weights here
        del scope.values[name]
    body = parts.block(graph, scope, [o.name for o in graph.output])
    body["inputs"] = [i.name for i in graph.input if i.name not in defaults]
    program = {"version": PROGRAM_VERSION, "body": body}
    return Partition(program, parts.segments, parts.consts, prefix)
