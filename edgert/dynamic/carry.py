"""Static shapes for loop-carried values, proved by induction (host only).

ONNX shape inference gives a Loop's or Scan's loop-carried body inputs only what holds
for every iteration it cannot reason about, often unknown dimensions: the body may grow
the value (a Concat per iteration), so the initial value's shape is not carried over.
Segments cut from such a body then reach TVM with symbolic dimensions it cannot lower.

The rule here: assume each carried value keeps the static shape of its initial value,
infer the body under that assumption (with the outer constants it captures, folding
shape arithmetic; nested loops, and loops inside If branches, first by the same rule),
and keep the assumption for exactly the carried values whose body output comes out with
that same shape (dropping the others and re-inferring until the set is stable). Sound by
induction: iteration 0 sees the initial shapes, and a body fed those shapes returns them.
What is proved is written into the model's types (body inputs and value_info, the loops'
outputs, and the static types constant folding found on the way); nothing is assumed
where the proof fails.
"""
from __future__ import annotations

from typing import Any

from .graphs import free_names, iter_graphs
from .specialize import specialize

_LOOPS = ("Loop", "Scan")


def carry_static_shapes(model: Any) -> Any:
    """``model`` with every static shape the rule proves written into its types (in place)."""
    if not any(n.op_type in _LOOPS or _has_loop(n) for n in model.graph.node):
        return model
    _copy_types(model.graph, _settle(model).graph)
    return model


def _has_loop(node: Any) -> bool:
    graphs = [g for a in node.attribute if a.HasField("g")
              for g in [a.g] + [sub for _, sub in iter_graphs(a.g)]]
    return any(n.op_type in _LOOPS for g in graphs for n in g.node)


def static_shape(type_proto: Any) -> tuple[int, ...] | None:
    """The shape of a tensor type when every dimension is a number, else None."""
    if type_proto is None or type_proto.WhichOneof("value") != "tensor_type":
        return None
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return None if None in dims else tuple(dims)


def _types(graph: Any) -> dict[str, Any]:
    """name -> TypeProto for a graph's inputs, value_info, outputs and initializers."""
    from onnx import helper

    types = {t.name: helper.make_tensor_type_proto(t.data_type, list(t.dims))
             for t in graph.initializer}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        if info.type.WhichOneof("value") and info.name not in types:
            types[info.name] = info.type
    return types


def _settle(model: Any) -> Any:
    """A specialised copy of ``model`` whose loop bodies (nested too) carry what the rule proves.

    ONNX inference gives a Loop's carried outputs no shape, so the proved ones are kept
    as value_info every round starts from. Repeated while it proves more: a loop's
    initial value may come out of an earlier loop.
    """
    from onnx import ValueInfoProto

    proved: dict[str, Any] = {}  # loop output name -> its proved type
    while True:
        settled = specialize(model.SerializeToString(), known=[
            ValueInfoProto(name=name, type=t) for name, t in proved.items()]).model
        new = {}
        for node in settled.graph.node:
            if node.op_type in _LOOPS:
                new.update(_settle_loop(settled, node))
            elif node.op_type == "If" and _has_loop(node):
                _settle_branches(settled, node)
        if new.keys() <= proved.keys():
            return settled
        proved.update(new)
        model = settled


def _carried(node: Any, body: Any) -> tuple[list[str], list[Any], list[Any]]:
    """Initial values (outer names), carried body inputs and carried body outputs of a loop."""
    from onnx import helper

    if node.op_type == "Loop":
        initial = list(node.input[2:])
        return initial, list(body.input[2:2 + len(initial)]), list(body.output[1:1 + len(initial)])
    n_scan = next(helper.get_attribute_value(a) for a in node.attribute
                  if a.name == "num_scan_inputs")
    initial = list(node.input[:len(node.input) - n_scan])
    return initial, list(body.input[:len(initial)]), list(body.output[:len(initial)])


def _settle_loop(parent: Any, node: Any) -> dict[str, Any]:
    """Apply the rule to one Loop/Scan of ``parent`` (a settled model); annotate its body in place.

    Returns the loop's carried outputs whose shape was proved, with their types.
    """
    body = next(a.g for a in node.attribute if a.name == "body")
    outer = _types(parent.graph)
    initial, _, outputs = _carried(node, body)
    assumed = {i: shape for i, name in enumerate(initial)
               if (shape := static_shape(outer.get(name))) is not None}
    while True:
        settled = _settle(_body_model(parent, node, body, assumed, outer))
        inferred = _types(settled.graph)
        kept = {i: shape for i, shape in assumed.items()
                if static_shape(inferred.get(outputs[i].name)) == shape}
        if kept == assumed:
            break
        assumed = kept
    _copy_types(body, settled.graph)
    return {node.output[i]: outer[initial[i]] for i in assumed
            if i < len(node.output) and node.output[i]}


def _body_model(parent: Any, node: Any, body: Any, assumed: dict[int, tuple[int, ...]],
                outer: dict[str, Any]) -> Any:
    """The body as a standalone model under the assumption ``assumed`` (carried index -> shape).

    Carried values not assumed get only their element type (the body may change their
    shape); scan inputs get the slice of the outer value's type; captures as ``_standalone``.
    """
    from onnx import ValueInfoProto, helper

    initial, carried, _ = _carried(node, body)
    first = 2 if node.op_type == "Loop" else 0  # Loop bodies start with (iteration, condition)
    inputs = []
    for index, info in enumerate(body.input):
        typed = ValueInfoProto()
        typed.CopyFrom(info)
        i = index - first
        if 0 <= i < len(carried):
            start = outer.get(initial[i])
            elem = info.type.tensor_type.elem_type or (start.tensor_type.elem_type if start else 0)
            typed.type.CopyFrom(helper.make_tensor_type_proto(
                elem, list(assumed[i]) if i in assumed else None))
        elif node.op_type == "Scan" and i >= len(carried):
            _slice_type(typed, node, i - len(carried), outer)
        inputs.append(typed)
    return _standalone(parent, body, inputs, outer)


def _standalone(parent: Any, graph: Any, inputs: list[Any], outer: dict[str, Any]) -> Any:
    """Subgraph ``graph`` of ``parent`` as a model: ``inputs``, then what it captures
    (constants as initializers, so shape arithmetic on them folds; other values as inputs
    with their outer type). Outputs keep only their element type: shapes must be inferred."""
    from onnx import ValueInfoProto, helper

    constants = {t.name: t for t in parent.graph.initializer}
    own = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    captured = [name for name in free_names(graph) if name not in own]
    initializers = list(graph.initializer) + [constants[n] for n in captured if n in constants]
    for name in captured:
        if name not in constants:
            info = ValueInfoProto(name=name)
            if name in outer:
                info.type.CopyFrom(outer[name])
            inputs.append(info)
    outputs = [helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type, None)
               for o in graph.output]
    model = helper.make_graph(list(graph.node), graph.name or "subgraph", inputs, outputs,
                              initializer=initializers)
    return helper.make_model(model, opset_imports=list(parent.opset_import),
                             ir_version=parent.ir_version)


def _settle_branches(parent: Any, node: Any) -> None:
    """Settle the loops inside an If's branches (each branch a model of its captures)."""
    outer = _types(parent.graph)
    for attr in node.attribute:
        if attr.HasField("g"):
            _copy_types(attr.g, _settle(_standalone(parent, attr.g, [], outer)).graph)


def _slice_type(info: Any, node: Any, scan_index: int, outer: dict[str, Any]) -> None:
    """Type a Scan body's scan input as one slice of the outer value, when that is static."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    n_scan = attrs["num_scan_inputs"]
    name = node.input[len(node.input) - n_scan + scan_index]
    shape = static_shape(outer.get(name))
    if shape is None:
        return
    axis = list(attrs.get("scan_input_axes", [0] * n_scan))[scan_index] % len(shape)
    info.type.CopyFrom(helper.make_tensor_type_proto(
        outer[name].tensor_type.elem_type, list(shape[:axis] + shape[axis + 1:])))


def _copy_types(dst: Any, src: Any) -> None:
    """Give ``dst``'s values the static types its settled copy ``src`` found, where ``dst``
    has none yet; recurse into subgraphs of nodes both share (matched by unique name)."""
    from onnx import ValueInfoProto

    found = _types(src)

    def upgrade(info: Any) -> None:
        new = found.get(info.name)
        if static_shape(new) is None or static_shape(info.type) is not None:
            return
        elem = info.type.tensor_type.elem_type
        if elem and elem != new.tensor_type.elem_type:
            return
        info.type.CopyFrom(new)

    for info in list(dst.input) + list(dst.output) + list(dst.value_info):
        upgrade(info)
    described = {i.name for i in list(dst.input) + list(dst.output) + list(dst.value_info)}
    for name in (o for n in dst.node for o in n.output if o and o not in described):
        if static_shape(found.get(name)) is not None:
            info = ValueInfoProto(name=name)
            info.type.CopyFrom(found[name])
            dst.value_info.append(info)
    src_nodes = {n.name: n for n in src.node}
    for node in dst.node:
        twin = src_nodes.get(node.name)
        if twin is None:
            continue
        twin_graphs = {a.name: a.g for a in twin.attribute if a.HasField("g")}
        for attr in node.attribute:
            if attr.HasField("g") and attr.name in twin_graphs:
                _copy_types(attr.g, twin_graphs[attr.name])
