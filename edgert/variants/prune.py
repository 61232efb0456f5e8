"""Build an All-in-One file: rank channels, permute them, and describe nested pruning levels.

Channels of every prunable group are sorted by importance (BN scale |gamma| where a
BatchNormalization follows, else the L1/L2 norm of the producing weights), and every weight
axis that carries the group is permuted the same way. The permuted model computes the same
function, and every pruning ratio keeps a *prefix* of each group: one weight set serves all
levels, and a level's weights are slices of it.

Host-only: imports onnx.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgert import progress
from edgert.errors import ModelError, UsageError
from edgert.onnx_file import load_model

from . import aiofile
from .groups import ChannelGraph, analyze, subgraph_reads
from .ranges import group_offsets, is_view, kept_ranges, shape_values

IMPORTANCE = ("auto", "bn", "l1", "l2")
GRAPH_TENSOR = "graph/level{}"
SLICED_TENSOR = "graph/level{}/sliced"
AUX_TENSOR = "level{}/{}"


@dataclasses.dataclass
class PruneReport:
    path: Path
    model_bytes: int  # the source model's weight bytes
    file_bytes: int
    levels: list[dict[str, Any]]  # ratio, kept channels per group, weight bytes
    skipped: list[dict[str, Any]]  # groups left whole, with the reason
    unpruned: str | None = None  # why no level is smaller than the full model, when none is

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "path": str(self.path)}


def check_ratios(ratios: Sequence[float]) -> list[float]:
    """Ratios are fractions of channels removed: each in [0, 1), strictly increasing."""
    ratios = [float(r) for r in ratios]
    if not ratios:
        raise UsageError("give at least one pruning ratio, e.g. --ratios 0,0.25,0.5,0.75")
    bad = [r for r in ratios if not 0.0 <= r < 1.0]
    if bad:
        raise UsageError(f"pruning ratios must be in [0, 1) (the fraction of channels removed); got {bad}")
    if any(b <= a for a, b in zip(ratios, ratios[1:])):
        raise UsageError(f"pruning ratios must be strictly increasing; got {ratios}")
    return ratios


def importance(graph: ChannelGraph, inits: Mapping[str, np.ndarray], method: str = "auto"
               ) -> dict[int, np.ndarray]:
    """One score per channel of every prunable group (higher: keep longer)."""
    if method not in IMPORTANCE:
        raise UsageError(f"unknown importance {method!r}; choose one of {', '.join(IMPORTANCE)}")
    prunable = {g.id for g in graph.prunable()}
    norm = {"auto": 1, "bn": 1, "l1": 1, "l2": 2}[method]
    weights: dict[int, np.ndarray] = {}
    bn: dict[int, np.ndarray] = {}
    for p in graph.params:
        value = np.asarray(inits[p.init], dtype=np.float64)
        if p.role == "bn_scale":
            target, score = bn, np.abs(value)
        elif p.role == "producer" or (p.role == "channel" and value.ndim > 1):
            moved = np.moveaxis(np.abs(value), p.axis, 0).reshape(value.shape[p.axis], -1)
            score = (moved ** norm).sum(axis=1) ** (1.0 / norm)
            target = weights
        else:
            continue
        score = score / (score.mean() + 1e-12)  # layers of different scale count alike
        for gid, start, n in group_offsets(p.segments, p.repeat):  # a shuffled channel: its entries
            if gid in prunable:
                part = score[start:start + n].reshape(-1, p.repeat).sum(axis=1)
                target[gid] = target.get(gid, np.zeros(len(part))) + part
    out = {}
    for gid in prunable:
        use_bn = method in ("auto", "bn") and gid in bn
        out[gid] = bn[gid] if use_bn else weights.get(gid, np.zeros(graph.groups[gid].size))
    return out


def permute(graph: ChannelGraph, inits: Mapping[str, np.ndarray], perms: Mapping[int, np.ndarray]
            ) -> dict[str, np.ndarray]:
    """Apply each group's channel order to every weight axis that carries the group."""
    out = dict(inits)
    for p in graph.params:
        index = np.arange(out[p.init].shape[p.axis])
        for gid, start, n in group_offsets(p.segments, p.repeat):
            if gid in perms:  # a shuffled channel's entries move together
                index[start:start + n] = start + (perms[gid][:, None] * p.repeat + np.arange(p.repeat)).reshape(-1)
        out[p.init] = np.take(out[p.init], index, axis=p.axis)
    return out


def block_order(scores: np.ndarray, block: int) -> np.ndarray:
    """Channels in descending importance, whole blocks at a time (a grouped conv's block j of
    outputs reads block j of inputs only, so blocks move together and keep their inside)."""
    by_block = scores.reshape(-1, block).sum(axis=1)
    order = np.argsort(-by_block, kind="stable")
    return (order[:, None] * block + np.arange(block)).reshape(-1)


def level_kept(graph: ChannelGraph, ratio: float, multiple: int = 1) -> dict[int, int]:
    """Channels kept per prunable group at ``ratio``: rounded to ``multiple`` and to whole
    blocks of grouped convs, at least one unit. Ratio 0 keeps every channel (with
    ``multiple`` 8, a group of 26 kept 24: the full level was not the model)."""
    if ratio == 0:
        return {g.id: g.size for g in graph.prunable()}
    kept = {}
    for g in graph.prunable():
        unit = math.lcm(multiple, g.block)
        k = int(round(g.size * (1.0 - ratio) / unit)) * unit
        kept[g.id] = min(g.size, max(k, min(unit, g.size), 1))
    return kept


def level_params(graph: ChannelGraph, inits: Mapping[str, np.ndarray], kept: Mapping[int, int]
                 ) -> dict[str, list[list[list[int]]]]:
    """Per floating-point initializer, the [start, stop) ranges kept along every axis (integer
    ones are shape constants and stay inline in the level graphs, as do float scalars that
    follow no group: ORT's fusions read those, e.g. GELU's 1/sqrt(2), from the graph itself)."""
    tied = {p.init for p in graph.params}
    ranges = {name: [[[0, d]] if d else [] for d in value.shape] for name, value in inits.items()
              if value.dtype.kind == "f" and (value.size > 1 or name in tied)}
    for p in graph.params:
        ranges[p.init][p.axis] = kept_ranges(p.segments, dict(kept), p.repeat)
    return ranges


def shape_of(ranges: list[list[list[int]]]) -> list[int]:
    return [sum(b - a for a, b in axis) for axis in ranges]


def _slice_nodes(name: str, ranges: list[list[list[int]]], shape: tuple[int, ...]
                 ) -> tuple[str, list[Any], list[Any]]:
    """Slice (and Concat) nodes that cut a level's part out of a full weight at run time."""
    from onnx import helper, numpy_helper

    nodes, consts, out = [], [], name
    for axis, spans in enumerate(ranges):
        if spans == [[0, shape[axis]]]:
            continue
        parts = []
        for k, (a, b) in enumerate(spans):
            stem = f"{name}/slice{axis}_{k}"
            for suffix, value in (("starts", a), ("ends", b), ("axes", axis)):
                consts.append(numpy_helper.from_array(np.array([value], np.int64), f"{stem}/{suffix}"))
            nodes.append(helper.make_node("Slice", [out] + [f"{stem}/{s}" for s in ("starts", "ends", "axes")],
                                          [stem], name=stem))
            parts.append(stem)
        if len(parts) > 1:
            nodes.append(helper.make_node("Concat", parts, [f"{name}/axis{axis}"], name=f"{name}/axis{axis}",
                                          axis=axis))
            parts = [f"{name}/axis{axis}"]
        out = parts[0]
    return out, nodes, consts


def level_graph(model: Any, ranges: Mapping[str, list[list[list[int]]]], conv_groups: Mapping[str, int],
                inits: Mapping[str, np.ndarray], slice_at_run: bool = False,
                shapes: Mapping[str, Mapping[int, int]] | None = None) -> bytes:
    """The level's ONNX graph without weights: initializers point at external data that the
    runtime supplies from the file (see ``runtime.py``).

    With ``slice_at_run`` a weight whose level part is not one contiguous block is declared
    whole and cut by Slice nodes in the graph, so no copy of it stays resident."""
    import onnx
    from onnx import TensorProto

    level = onnx.ModelProto()
    level.CopyFrom(model)
    del level.graph.value_info[:]  # intermediate shapes change with the level
    rewrite_shape_constants(level, shapes or {})
    renamed: dict[str, str] = {}
    new_nodes: list[Any] = []
    for t in level.graph.initializer:
        if t.name not in ranges:  # shape constants stay inline: ORT's shape inference reads them
            continue
        shape = shape_of(ranges[t.name])
        if slice_at_run and not is_view(ranges[t.name], inits[t.name].shape):
            out, nodes, consts = _slice_nodes(t.name, ranges[t.name], inits[t.name].shape)
            renamed[t.name] = out
            new_nodes += nodes
            level.graph.initializer.extend(consts)
            shape = list(inits[t.name].shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * inits[t.name].dtype.itemsize
        for field in ("raw_data", "float_data", "int64_data", "int32_data", "double_data"):
            t.ClearField(field)
        del t.dims[:]
        t.dims.extend(shape)
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for key, value in (("location", "aio"), ("offset", "0"), ("length", str(nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
    for node in level.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        if node.name in conv_groups:
            for a in node.attribute:
                if a.name == "group":
                    a.i = conv_groups[node.name]
    nodes = new_nodes + list(level.graph.node)
    del level.graph.node[:]
    level.graph.node.extend(nodes)
    return level.SerializeToString()


def rewrite_shape_constants(model: Any, values: Mapping[str, Mapping[int, int]]) -> None:
    """Write a width's entries into the shape constants of ``model`` (an ``onnx.ModelProto``,
    changed in place): the heads of Reshape targets, Split sizes (``ranges.shape_values``)."""
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name in values:
            const = numpy_helper.to_array(t).copy()
            for index, value in values[t.name].items():
                const.reshape(-1)[index] = value
            t.CopyFrom(numpy_helper.from_array(const, t.name))


def rewrite_shapes(graph: bytes, values: Mapping[str, Mapping[int, int]]) -> bytes:
    """``rewrite_shape_constants`` on a serialized graph: a per-layer configuration's graph
    (``config_graph``) needs the same entries as a level's."""
    import onnx

    if not values:
        return graph
    model = onnx.ModelProto()
    model.ParseFromString(graph)
    rewrite_shape_constants(model, values)
    return model.SerializeToString()


def template(model: Any, graph: ChannelGraph) -> dict[str, Any]:
    """What another engine needs to rebuild a level: nodes, I/O, and which axes follow groups."""
    return {
        "opset": [{"domain": o.domain, "version": o.version} for o in model.opset_import],
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "nodes": [{"name": n.name, "op": n.op_type, "inputs": list(n.input), "outputs": list(n.output)}
                  for n in model.graph.node],
        "param_axes": [{"init": p.init, "axis": p.axis, "segments": [list(s) for s in p.segments],
                        "role": p.role, **({"repeat": p.repeat} if p.repeat != 1 else {})} for p in graph.params],
        "depthwise": {k: [list(s) for s in v] for k, v in graph.depthwise.items()},
        "grouped": {k: [[list(x) for x in segs], per] for k, (segs, per) in graph.grouped.items()},
        "reshapes": {k: [[i, [list(x) for x in segs], div] + ([mult] if mult != 1 else [])
                         for i, (segs, div, mult) in entries.items()] for k, entries in graph.reshapes.items()},
    }


def _load(model_path: Path) -> Any:
    model = load_model(model_path)
    if not model.graph.node:  # an empty file parses as an empty model
        raise ModelError(f"{model_path} is not an ONNX model with a graph (no nodes)", path=str(model_path))
    return model


def untie_constants(model: Any) -> Any:
    """A copy where every ``Constant`` node and every ``Identity`` of an initializer is an
    initializer of its own, and an initializer read by several nodes is copied for each.
    The torch exporters write a weight equal to an earlier one (two zero SE biases of
    MobileNetV3, BERT's zero biases and unit LayerNorm scales) as ``Identity(earlier)`` or
    share it by name; untied, each node's weights follow that node's channels only (a shared
    one would tie unrelated groups together and keep them whole). A weight a control-flow body
    reads keeps its name for the body; initializers nothing reads are dropped."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    values = {t.name: t for t in out.graph.initializer}
    kept = []
    for node in out.graph.node:
        if node.op_type == "Identity" and node.input[0] in values:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(values[node.input[0]])
        elif node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
        else:
            kept.append(node)
            continue
        tensor.name = node.output[0]
        values[tensor.name] = tensor
        out.graph.initializer.append(tensor)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    captured = subgraph_reads(out.graph)  # a control-flow body keeps the original, whole
    uses: dict[str, int] = {name: 1 for name in captured}
    for node in out.graph.node:
        for i, name in enumerate(node.input):
            if name not in values:
                continue
            uses[name] = uses.get(name, 0) + 1
            if uses[name] > 1:  # a later reader gets its own copy
                copy = onnx.TensorProto()
                copy.CopyFrom(values[name])
                copy.name = f"{name}/use{uses[name]}"
                out.graph.initializer.append(copy)
                node.input[i] = copy.name
    read = {i for node in out.graph.node for i in node.input} | set(captured) | {o.name for o in out.graph.output}
    unread = [t for t in out.graph.initializer if t.name not in read]
    for t in unread:  # an exporter's orphan: ORT drops it, and a level could not supply it
        out.graph.initializer.remove(t)
    return out


def _level(model: Any, graph: ChannelGraph, inits: Mapping[str, np.ndarray], reshapes: Mapping[str, Any],
           tensors: dict[str, np.ndarray], i: int, ratio: float, multiple: int) -> dict[str, Any]:
    """Level ``i``'s graphs (stored in ``tensors``) and its metadata."""
    kept = level_kept(graph, ratio, multiple)
    ranges = level_params(graph, inits, kept)
    dw = {name: sum(kept.get(g, n) for g, n in segs) for name, segs in graph.depthwise.items()}
    for name, (segs, per_group) in graph.grouped.items():
        dw[name] = sum(kept.get(g, n) for g, n in segs) // per_group
    shapes = shape_values(reshapes, kept)
    tensors[GRAPH_TENSOR.format(i)] = np.frombuffer(level_graph(model, ranges, dw, inits, shapes=shapes),
                                                    np.uint8)
    tensors[SLICED_TENSOR.format(i)] = np.frombuffer(
        level_graph(model, ranges, dw, inits, True, shapes=shapes), np.uint8)
    params = {name: {"tensor": name, "ranges": r} for name, r in ranges.items()}
    weight_bytes = sum(int(np.prod(shape_of(r), dtype=np.int64)) * inits[n].dtype.itemsize
                       for n, r in ranges.items())
    return {"ratio": ratio, "kept": {str(g): k for g, k in kept.items()}, "graph": GRAPH_TENSOR.format(i),
            "sliced_graph": SLICED_TENSOR.format(i), "params": params, "weight_bytes": weight_bytes}


def fold_static_shapes(model: Any) -> Any:
    """The model with its static shape arithmetic folded into constants, when it computes
    shapes at run time (``Shape``/``Size``); else the model itself.

    The TorchScript exporter writes attention's head split as ``Reshape(x, Concat(Slice(
    Shape(x)), [3, 64], ...))`` even for static inputs; neither ONNX's shape inference nor
    ORT's symbolic one (it asserts on that graph) types the result, so the heads could not be
    followed. Folded (``dynamic.specialize``: Shape of a static tensor, then every node of
    constants), the target is a constant whose heads entry each level rewrites. Dims the
    model leaves symbolic stay computed at run time."""
    if not any(n.op_type in ("Shape", "Size") for n in model.graph.node):
        return model
    from edgert.dynamic.specialize import specialize

    folded = specialize(model.SerializeToString())
    return folded.model if folded.folded else model


def build(model: Any, ratios: Sequence[float], *, importance_method: str = "auto", multiple: int = 1
          ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors and metadata of an All-in-One file for an ``onnx.ModelProto``."""
    from onnx import numpy_helper

    ratios = check_ratios(ratios)
    if multiple < 1:
        raise UsageError("the channel multiple must be >= 1")
    source_sha256 = hashlib.sha256(model.SerializeToString()).hexdigest()
    with progress.step("finding the channel groups"):
        model = untie_constants(fold_static_shapes(model))
        graph = analyze(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scores = importance(graph, inits, importance_method)
    perms = {gid: block_order(s, graph.groups[gid].block) for gid, s in scores.items()}
    tensors = permute(graph, inits, perms)
    reshapes = template(model, graph)["reshapes"]
    levels = []
    for i, ratio in enumerate(ratios):
        with progress.step(f"building level {i + 1} of {len(ratios)} (ratio {ratio:g})"):
            levels.append(_level(model, graph, inits, reshapes, tensors, i, ratio, multiple))
    meta = {
        "levels": levels,
        "groups": [g.to_dict() for g in graph.groups.values()],
        "importance": importance_method,
        "template": template(model, graph),
        "source": {"sha256": source_sha256,
                   "weight_bytes": sum(v.nbytes for v in inits.values())},
    }
    return tensors, meta


def prune(model_path: Path, ratios: Sequence[float], out_path: Path, *,
          importance_method: str = "auto", multiple: int = 1) -> PruneReport:
    """``edgert prune MODEL.onnx --ratios ... -o FILE``: write the All-in-One file."""
    with progress.step(f"reading {Path(model_path).name}"):
        model = _load(Path(model_path))
    in_bodies = _read_in_bodies(model)
    tensors, meta = build(model, ratios, importance_method=importance_method, multiple=multiple)
    if not meta["source"]["weight_bytes"]:
        raise ModelError(f"{model_path} has no floating-point weights: nothing to prune", path=str(model_path))
    with progress.step(f"writing {Path(out_path).name}"):
        aiofile.write(Path(out_path), tensors, meta)
    return PruneReport(
        Path(out_path), meta["source"]["weight_bytes"], Path(out_path).stat().st_size,
        [{"ratio": lv["ratio"], "kept": lv["kept"], "weight_bytes": lv["weight_bytes"]} for lv in meta["levels"]],
        [{"group": g["id"], "size": g["size"], "reason": g["fixed"]} for g in meta["groups"] if g["fixed"]],
        _unpruned_reason(meta, in_bodies),
    )


def _read_in_bodies(model: Any) -> dict[str, str]:
    """The model's weights that an If/Loop/Scan body reads, with the reading node."""
    inits = {t.name for t in model.graph.initializer}
    return {name: node for name, node in subgraph_reads(model.graph).items() if name in inits}


def _unpruned_reason(meta: Mapping[str, Any], in_bodies: Mapping[str, str]) -> str | None:
    """Why every level came out as large as the full model (None when some level is smaller),
    so asking for ratios that change nothing is said, not silently written."""
    levels = meta["levels"]
    if len(levels) < 2 or len({int(lv["weight_bytes"]) for lv in levels}) > 1:
        return None
    if in_bodies:
        nodes = sorted(set(in_bodies.values()))
        return (f"{len(in_bodies)} of the model's weights are read inside control-flow bodies "
                f"({', '.join(nodes[:3])}{', ...' if len(nodes) > 3 else ''}), which pruning keeps whole, "
                "and no prunable channel group is left outside them")
    return "no channel group in the model can be pruned (see the groups kept whole)"


def replace_weights(src: Path, dst: Path, shared: Mapping[str, np.ndarray],
                    per_level: Mapping[int, Mapping[str, np.ndarray]] | None = None,
                    masks: Mapping[str, np.ndarray] | None = None, note: str = "") -> None:
    """Write ``dst`` like ``src`` with new shared weights (in the file's permuted order, full
    size), optional per-level tensors (level-shaped, e.g. recalibrated BN statistics) that
    override a level's slice, and optional soft masks (stored as ``mask/NAME``)."""
    f = aiofile.read(Path(src))
    try:
        tensors = {k: np.array(v) for k, v in f.tensors.items()}
        meta = f.meta
    finally:
        f.close()
    for name, value in shared.items():
        if name not in tensors or tensors[name].shape != np.shape(value):
            raise UsageError(f"shared weight {name!r} does not match the file (shape {np.shape(value)})")
        tensors[name] = np.asarray(value, dtype=tensors[name].dtype)
    for index, params in (per_level or {}).items():
        level = meta["levels"][index]
        for name, value in params.items():
            want = shape_of(level["params"][name]["ranges"])
            if list(np.shape(value)) != want:
                raise UsageError(f"level {index} tensor {name!r} must have shape {want}, got {list(np.shape(value))}")
            key = AUX_TENSOR.format(index, name)
            tensors[key] = np.asarray(value, dtype=tensors[name].dtype)
            level["params"][name] = {"tensor": key, "ranges": [[[0, d]] if d else [] for d in want]}
    for name, value in (masks or {}).items():
        tensors[f"mask/{name}"] = np.asarray(value, dtype=np.float32)
    if note:
        meta["note"] = note
    aiofile.write(Path(dst), tensors, meta)
