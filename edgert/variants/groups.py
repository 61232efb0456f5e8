"""Channel groups: the sets of channels that must be pruned together, found from the ONNX graph.

Every activation tensor's channel axis (axis 1, or where a Transpose moved it) is described
as a list of *segments* ``(group id, length)``: one segment for a conv output, several after
a channel Concat. Walking the graph in order, a Conv, Gemm or MatMul with a constant weight
opens a new group for its output; element-wise and pooling ops pass segments through; a
residual Add merges the groups of its operands (union-find); a depthwise Conv shares its
input's group, a grouped Conv with as many outputs as inputs too, in blocks of its channels
per group; Gemm/MatMul consume the channels on their weight's input axis. Transformers: a
MatMul over the last axis (a MLP's hidden width), LayerNormalization over the channels, and
attention heads, whose Reshape splits the channel axis into (heads, width) with a *unit*
(channels per index along the heads axis), meet in Q K^T and P V and merge back.

A group is *fixed* (never pruned) when it touches something the pruner does not understand
— a graph input or output, a Reshape it cannot follow, a Shape — and the reason names the
node, so ``edgert prune`` can say which part of a model was skipped and why. An op it does
not understand leaves its outputs without a layout (never pruned).

Host-only: imports onnx (and onnxruntime's symbolic shape inference when present).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from .ranges import Segments


# Ops whose output channel axis is their first input's, channel for channel.
PASSTHROUGH = frozenset({
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Elu", "Selu",
    "Softplus", "Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "LpPool", "Neg", "Abs", "Erf", "Gelu", "Mish", "IsNaN", "Sqrt", "Exp", "Cast",
})
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Where"})
# Ops that read axis 1 as channels (and the spatial axes after it): channels-first inputs only.
CHANNELS_FIRST = frozenset({"Conv", "BatchNormalization", "Flatten", "Gemm", "Concat", "MaxPool", "AveragePool",
                            "GlobalAveragePool", "GlobalMaxPool", "LpPool"})


@dataclasses.dataclass(frozen=True)
class ParamAxis:
    """One axis of an initializer that follows channel groups.

    ``role`` is "producer" (a conv/gemm output axis), "consumer" (its input axis), "channel"
    (a per-channel vector: bias, BN statistics, depthwise filters) or "bn_scale" (BN gamma).
    """

    init: str
    axis: int
    segments: Segments
    role: str


@dataclasses.dataclass
class Group:
    id: int
    size: int
    members: list[str]
    fixed: str | None = None  # why this group is never pruned; None: prunable
    block: int = 1  # channels pruned together: a grouped conv's channels per group

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ChannelGraph:
    """The analysis result: groups (by root id), parameter axes and depthwise convs."""

    groups: dict[int, Group]
    params: list[ParamAxis]
    depthwise: dict[str, Segments]  # conv node name -> its channel segments (``group`` attr)
    grouped: dict[str, tuple[Segments, int]]  # grouped conv -> (its channels, per group): group = kept / per group
    reshapes: dict[str, tuple[int, Segments, int]]  # shape constant -> (entry, channel segments, per entry)
    bn: list[tuple[str, str, float]]  # (gamma, running var, epsilon) for importance

    def prunable(self) -> list[Group]:
        return [g for g in self.groups.values() if g.fixed is None]

    def skipped(self) -> list[Group]:
        return [g for g in self.groups.values() if g.fixed is not None]


def _infer_shapes(model: Any) -> Any:
    """The model with intermediate shapes: ONNX Runtime's symbolic inference where it works (it
    follows the Shape/Gather/Expand arithmetic of attention masks, which ONNX's own inference
    leaves unknown), else ONNX's."""
    import onnx

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - any failure there leaves ONNX's inference, which always runs
        inferred = None
    return inferred if inferred is not None else onnx.shape_inference.infer_shapes(model)


class _Analyzer:
    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = _infer_shapes(model)
        graph = self.model.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.ranks: dict[str, list[int | None]] = {}
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            dims = vi.type.tensor_type.shape.dim
            self.ranks[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        self.parent: dict[int, int] = {}
        self.groups: dict[int, Group] = {}
        self.seg: dict[str, Segments | None] = {}
        self.axis: dict[str, int] = {}  # channel axis of a tensor when not 1 (after a Transpose)
        # channels per index along that axis: an attention head's width on a heads axis
        self.unit: dict[str, int] = {}
        self.reshapes: dict[str, tuple[int, Segments, int]] = {}  # shape constant -> (index, segs, unit)
        self.params: dict[tuple[str, int], ParamAxis] = {}
        self.depthwise: dict[str, Segments] = {}
        self.grouped: dict[str, tuple[Segments, int]] = {}
        self.bn: list[tuple[str, str, float]] = []

    # -- union-find ------------------------------------------------------------------
    def new(self, size: int, member: str, fixed: str | None = None) -> Segments:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.groups[gid] = Group(gid, size, [member], fixed)
        return ((gid, size),)

    def find(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self.groups[ra], self.groups[rb]
        if ga.size != gb.size:  # cannot happen for a valid model; keep both whole
            self.fix(((ra, ga.size), (rb, gb.size)), f"groups {ra} and {rb} meet with different sizes")
            return
        self.parent[rb] = ra
        ga.members += gb.members
        ga.fixed = ga.fixed or gb.fixed
        ga.block = math.lcm(ga.block, gb.block)
        if ga.size % ga.block:
            ga.fixed = ga.fixed or f"group {ra} is cut by grouped convolutions into blocks of {ga.block}"

    def fix(self, segs: Segments | None, reason: str) -> None:
        for gid, _ in segs or ():
            group = self.groups[self.find(gid)]
            group.fixed = group.fixed or reason

    def merge(self, a: Segments, b: Segments, reason: str) -> bool:
        """Unite two channel layouts segment by segment; fix both if they do not line up."""
        if [n for _, n in a] != [n for _, n in b]:
            self.fix(a, reason)
            self.fix(b, reason)
            return False
        for (ga, _), (gb, _) in zip(a, b):
            self.union(ga, gb)
        return True

    def param(self, init: str, axis: int, segs: Segments, role: str, where: str) -> None:
        key = (init, axis)
        if key in self.params:  # a weight shared by two nodes: both uses must agree
            self.merge(self.params[key].segments, segs, f"initializer {init!r} is shared by two nodes ({where})")
            return
        self.params[key] = ParamAxis(init, axis, segs, role)

    # -- the walk --------------------------------------------------------------------
    def channels(self, name: str) -> int | None:
        dims = self.ranks.get(name)
        return dims[1] if dims and len(dims) >= 2 else None

    def unknown(self, node: Any, segs_in: list[Segments | None], why: str) -> None:
        """Keep the inputs' channels whole; the outputs carry no channel layout (never pruned,
        and a MatMul reading one may still open a prunable group, e.g. a transformer's MLP)."""
        for segs in segs_in:
            self.fix(segs, why)
        for out in node.output:
            self.seg[out] = None

    def run(self) -> ChannelGraph:
        graph = self.model.graph
        for vi in graph.input:
            if vi.name in self.inits:
                continue
            c = self.channels(vi.name)
            self.seg[vi.name] = self.new(c, f"input {vi.name}", f"graph input {vi.name!r}") if c else None
        for node in graph.node:
            self.visit(node)
        for vi in graph.output:
            self.fix(self.seg.get(vi.name), f"reaches graph output {vi.name!r}")
        roots = {gid: g for gid, g in self.groups.items() if self.find(gid) == gid}

        def resolve(segs: Segments) -> Segments:
            return tuple((self.find(g), n) for g, n in segs)

        params = [dataclasses.replace(p, segments=resolve(p.segments)) for p in self.params.values()]
        depthwise = {k: resolve(v) for k, v in self.depthwise.items()}
        reshapes = {k: (i, resolve(segs), unit) for k, (i, segs, unit) in self.reshapes.items()}
        grouped = {k: (resolve(segs), per) for k, (segs, per) in self.grouped.items()}
        return ChannelGraph(roots, params, depthwise, grouped, reshapes, self.bn)

    def visit(self, node: Any) -> None:
        op, name = node.op_type, node.name or node.output[0]
        acts = [i for i in node.input if i and i not in self.inits]
        segs_in = [self.seg.get(i) for i in acts]
        where = f"node {name!r} ({op})"
        handler = getattr(self, f"_{op.lower()}", None)
        axes = {self.axis.get(i, 1) for i, segs in zip(acts, segs_in) if segs}
        units = {self.unit.get(i, 1) for i, segs in zip(acts, segs_in) if segs}
        if len(axes) > 1 or (op in CHANNELS_FIRST and (axes - {1} or units - {1})):
            self.unknown(node, segs_in, f"{where} reads channels on another axis than its input has them")
        elif op in PASSTHROUGH and len(acts) == 1:
            self.seg[node.output[0]] = segs_in[0]
            self.axis[node.output[0]] = self.axis.get(acts[0], 1)
            self.unit[node.output[0]] = self.unit.get(acts[0], 1)
            for extra in node.output[1:]:
                self.seg[extra] = None
        elif op in ELEMENTWISE:
            self._elementwise(node, acts, segs_in, where)
        elif handler is not None:
            handler(node, acts, segs_in, where)
        else:
            self.unknown(node, segs_in, f"{where} is not understood by the pruner")

    def _attr(self, node: Any, key: str, default: Any) -> Any:
        import onnx

        for a in node.attribute:
            if a.name == key:
                return onnx.helper.get_attribute_value(a)
        return default

    def _conv(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        w = node.input[1]
        if len(acts) != 1 or w not in self.inits:
            return self.unknown(node, segs_in, f"{where} has a weight that is not a constant")
        shape = self.inits[w].shape
        cout, group = shape[0], int(self._attr(node, "group", 1))
        segs = segs_in[0]
        cin = sum(n for _, n in segs) if segs else None
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias and bias not in self.inits:
            return self.unknown(node, segs_in, f"{where} has a bias that is not a constant")
        if group == 1:
            out = self.new(cout, f"{node.name} output")
            if segs:
                self.param(w, 1, segs, "consumer", where)
            self.param(w, 0, out, "producer", where)
            if bias:
                self.param(bias, 0, out, "channel", where)
            self.seg[node.output[0]] = out
        elif segs and group == cin == cout and shape[1] == 1:
            self.depthwise[node.name] = segs
            self.param(w, 0, segs, "channel", where)
            if bias:
                self.param(bias, 0, segs, "channel", where)
            self.seg[node.output[0]] = segs
        elif segs and len(segs) == 1 and cin == cout and cin % group == 0:
            self._grouped(node, segs, cin // group, w, bias, where)
        else:
            self.unknown(node, segs_in, f"{where} is a grouped convolution (group={group}) whose "
                                        "input and output channels differ")

    def _grouped(self, node: Any, segs: Segments, per_group: int, w: str, bias: str | None, where: str) -> None:
        """A grouped conv with as many outputs as inputs (ResNeXt, RegNet): output block j
        reads input block j only, so input and output share one group that is permuted and
        pruned by whole blocks of ``per_group`` channels; axis 1 of the weight (the channels
        within a block) is left alone."""
        gid = self.find(segs[0][0])
        group = self.groups[gid]
        group.block = math.lcm(group.block, per_group)
        if group.size % group.block:
            self.fix(segs, f"{where} cuts group {gid} into blocks that do not divide it")
        self.grouped[node.name] = (segs, per_group)
        self.param(w, 0, segs, "channel", where)
        if bias:
            self.param(bias, 0, segs, "channel", where)
        self.seg[node.output[0]] = segs

    def _batchnormalization(self, node: Any, acts: list[str], segs_in: list[Segments | None],
                            where: str) -> None:
        segs = segs_in[0]
        if segs is None or len(node.output) > 1 and any(node.output[1:]):
            return self.unknown(node, segs_in, f"{where} is in training mode or has no channel layout")
        scale, bias, mean, var = node.input[1:5]
        self.param(scale, 0, segs, "bn_scale", where)
        for p in (bias, mean, var):
            self.param(p, 0, segs, "channel", where)
        self.bn.append((scale, var, float(self._attr(node, "epsilon", 1e-5))))
        self.seg[node.output[0]] = segs

    def _broadcasts(self, name: str, rank: int, axis: int) -> bool:
        """True when tensor ``name`` has size 1 (or no dimension) along the channel ``axis`` of
        a rank-``rank`` operand it is broadcast against (an attention mask over heads)."""
        dims = self.ranks.get(name)
        if dims is None:
            return False
        at = axis - (rank - len(dims))
        return at < 0 or dims[at] == 1

    def _elementwise(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        laid = [(a, segs) for a, segs in zip(acts, segs_in) if segs is not None]
        if not laid:
            return self.unknown(node, segs_in, f"{where} combines tensors without a channel layout")
        lead = laid[0][0]
        rank = len(self.ranks.get(lead) or [0, 0, 0, 0])
        channel_axis = self.axis.get(lead, 1)
        if any(segs is None and not self._broadcasts(a, rank, channel_axis) for a, segs in zip(acts, segs_in)) \
                or len({self.unit.get(a, 1) for a, _ in laid}) > 1:
            return self.unknown(node, segs_in, f"{where} combines tensors without a channel layout")
        first = laid[0][1]
        for _, other in laid[1:]:
            if not self.merge(first, other, f"{where} adds tensors whose channel layouts differ"):
                return self.unknown(node, segs_in, f"{where} adds tensors whose channel layouts differ")
        for const in (i for i in node.input if i in self.inits):
            value = self.inits[const]
            if value.size == 1:
                continue
            axis = value.ndim - (rank - channel_axis)  # numpy broadcasting aligns shapes on the right
            channels = sum(n for _, n in first) // self.unit.get(lead, 1)
            if 0 <= axis < value.ndim and value.shape[axis] == channels and value.size == channels:
                self.param(const, axis, first, "channel", where)
            else:
                return self.unknown(node, segs_in, f"{where} broadcasts a constant of shape "
                                                   f"{list(value.shape)} over the channels")
        self.seg[node.output[0]] = first
        self.axis[node.output[0]] = channel_axis
        self.unit[node.output[0]] = self.unit.get(lead, 1)

    def _concat(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        rank = len(self.ranks.get(node.output[0]) or [])
        axis = int(self._attr(node, "axis", 1))
        if len(acts) != len(node.input) or any(s is None for s in segs_in) or axis not in (1, 1 - rank):
            return self.unknown(node, segs_in, f"{where} concatenates on an axis other than channels")
        self.seg[node.output[0]] = tuple(s for segs in segs_in for s in segs)

    def _flatten(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        dims = self.ranks.get(node.input[0]) or []
        if int(self._attr(node, "axis", 1)) != 1 or len(dims) < 2 or any(d != 1 for d in dims[2:]):
            return self.unknown(node, segs_in, f"{where} flattens spatial positions into channels")
        self.seg[node.output[0]] = segs_in[0]

    def _gemm(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        w = node.input[1]
        if len(acts) != 1 or w not in self.inits or self._attr(node, "transA", 0):
            return self.unknown(node, segs_in, f"{where} has a non-constant or transposed operand")
        trans_b = int(self._attr(node, "transB", 0))
        in_axis, out_axis = (1, 0) if trans_b else (0, 1)
        out = self.new(self.inits[w].shape[out_axis], f"{node.name} output")
        if segs_in[0]:
            self.param(w, in_axis, segs_in[0], "consumer", where)
        self.param(w, out_axis, out, "producer", where)
        if len(node.input) > 2 and node.input[2] in self.inits and self.inits[node.input[2]].ndim == 1 \
                and self.inits[node.input[2]].size > 1:
            self.param(node.input[2], 0, out, "channel", where)
        self.seg[node.output[0]] = out

    def _matmul(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        if len(acts) == 2 and node.input[1] not in self.inits:
            return self._batched_matmul(node, acts, segs_in, where)
        w = node.input[1]
        rank = len(self.ranks.get(node.input[0]) or [])
        last = rank - 1
        if len(acts) != 1 or w not in self.inits or self.inits[w].ndim != 2 or rank < 2 \
                or (segs_in[0] and (self.axis.get(acts[0], 1) != last or self.unit.get(acts[0], 1) != 1)):
            return self.unknown(node, segs_in, f"{where} is not a product over the channels with a constant weight")
        out = self.new(self.inits[w].shape[1], f"{node.name} output")
        if segs_in[0]:
            self.param(w, 0, segs_in[0], "consumer", where)
        self.param(w, 1, out, "producer", where)
        self.seg[node.output[0]] = out
        self.axis[node.output[0]] = last

    def _batched_matmul(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """Attention's Q K^T and P V: the heads axis is a batch axis of both operands, so
        head h of one meets head h of the other; both follow one group."""
        ranks = [len(self.ranks.get(a) or []) for a in acts]
        axes = [self.axis.get(a, 1) for a in acts]
        units = [self.unit.get(a, 1) for a in acts]
        if any(x is None for x in segs_in) or ranks[0] != ranks[1] or axes[0] != axes[1] \
                or axes[0] >= ranks[0] - 2 or units[0] != units[1]:
            return self.unknown(node, segs_in, f"{where} multiplies tensors along their channels")
        if not self.merge(segs_in[0], segs_in[1], f"{where} multiplies tensors whose heads differ"):
            return self.unknown(node, segs_in, f"{where} multiplies tensors whose heads differ")
        self.seg[node.output[0]] = segs_in[0]
        self.axis[node.output[0]] = axes[0]
        self.unit[node.output[0]] = units[0]

    def _reducemean(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """A mean over other axes than the channels (the dynamo exporter's global pooling in
        SE blocks: ReduceMean over H, W) keeps the channels where they are."""
        rank = len(self.ranks.get(acts[0]) or []) if acts else 0
        axis = self.axis.get(acts[0], 1) if acts else 1
        axes_input = node.input[1] if len(node.input) > 1 and node.input[1] else ""
        axes = self.inits[axes_input].tolist() if axes_input in self.inits else self._attr(node, "axes", None)
        if len(acts) != 1 or segs_in[0] is None or not rank or axes is None:
            return self.unknown(node, segs_in, f"{where} reduces axes the pruner cannot see")
        axes = sorted(int(a) % rank for a in axes)
        keep = int(self._attr(node, "keepdims", 1))
        if axis in axes or (not keep and any(a < axis for a in axes)):
            return self.unknown(node, segs_in, f"{where} reduces over the channels")
        self.seg[node.output[0]] = segs_in[0]
        self.axis[node.output[0]] = axis
        self.unit[node.output[0]] = self.unit.get(acts[0], 1)

    _reducemax = _reducemean

    def _softmax(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        rank = len(self.ranks.get(acts[0]) or []) if acts else 0
        axis = int(self._attr(node, "axis", -1)) % max(rank, 1)
        if len(acts) != 1 or segs_in[0] is None or axis == self.axis.get(acts[0], 1):
            return self.unknown(node, segs_in, f"{where} normalises over the channels")
        self.seg[node.output[0]] = segs_in[0]
        self.axis[node.output[0]] = self.axis.get(acts[0], 1)
        self.unit[node.output[0]] = self.unit.get(acts[0], 1)

    def _reshape(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """Splitting the channel axis into (heads, head width) and merging it back, as
        attention does; the shape constant's entry for that axis is recorded so each level
        rewrites it (a -1 needs nothing)."""
        shape_init = node.input[1] if len(node.input) > 1 else ""
        din, dout = self.ranks.get(acts[0]) if acts else None, self.ranks.get(node.output[0])
        segs = segs_in[0] if acts else None
        if len(acts) != 1 or segs is None or shape_init not in self.inits or not din or not dout:
            return self.unknown(node, segs_in, f"{where} is not understood by the pruner")
        axis, unit, const = self.axis.get(acts[0], 1), self.unit.get(acts[0], 1), self.inits[shape_init]
        if const.ndim != 1 or const.size != len(dout):
            return self.unknown(node, segs_in, f"{where} has a shape constant the pruner cannot rewrite")
        # shape inference leaves some dims unknown (None); the constant's positive entries are exact
        dout = [int(c) if c > 0 else d for c, d in zip(const, dout)]
        channels = sum(n for _, n in segs)

        def same(a: list[int | None], b: list[int | None]) -> bool:
            return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))

        if same(list(din), dout) and dout[axis] in (None, channels // unit):  # to its own shape
            out_axis, out_unit = axis, unit
        elif axis == 1 and unit == 1 and len(din) > 2 and len(dout) >= 2 and same([din[0]], [dout[0]]) \
                and all(d == 1 for d in din[2:]) and all(d == 1 for d in dout[2:]) \
                and dout[1] in (None, channels):
            out_axis, out_unit = 1, 1  # (N, C, 1, 1) -> (N, C): the dynamo exporter's flatten
        elif axis == len(din) - 1 and unit == 1 and len(dout) == len(din) + 1 and same(dout[:-2], list(din[:-1])) \
                and dout[-1] and channels % dout[-1] == 0 and dout[-2] in (None, channels // dout[-1]) \
                and len(segs) == 1:
            out_axis, out_unit = len(dout) - 2, dout[-1]  # split: (..., D) -> (..., heads, width)
            group = self.groups[self.find(segs[0][0])]
            group.block = math.lcm(group.block, out_unit)
            if group.size % group.block:
                return self.unknown(node, segs_in, f"{where} splits channels into heads that do not divide them")
        elif axis == len(din) - 2 and unit == din[-1] and len(dout) == len(din) - 1 \
                and same(dout[:-1], list(din[:-2])) and dout[-1] in (None, channels):
            out_axis, out_unit = len(dout) - 1, 1  # merge: (..., heads, width) -> (..., D)
        else:
            return self.unknown(node, segs_in, f"{where} reshapes the channel axis in a way the pruner "
                                               "does not follow")
        if const[out_axis] not in (-1, channels // out_unit) \
                or (const[out_axis] != -1 and shape_init in self.reshapes):
            return self.unknown(node, segs_in, f"{where} has a shape constant the pruner cannot rewrite")
        if const[out_axis] != -1:
            self.reshapes[shape_init] = (out_axis, segs, out_unit)
        self.seg[node.output[0]] = segs
        self.axis[node.output[0]] = out_axis
        self.unit[node.output[0]] = out_unit

    def _transpose(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """Moves the channel axis (ConvNeXt's NCHW <-> NHWC around LayerNorm and Linear)."""
        perm = list(self._attr(node, "perm", []))
        axis = self.axis.get(acts[0], 1) if acts else 1
        if len(acts) != 1 or segs_in[0] is None or axis not in perm:
            return self.unknown(node, segs_in, f"{where} transposes a tensor without a channel layout")
        self.seg[node.output[0]] = segs_in[0]
        self.axis[node.output[0]] = perm.index(axis)
        self.unit[node.output[0]] = self.unit.get(acts[0], 1)

    def _layernormalization(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """Normalises over the channels alone (axis = the last, which holds them): scale and
        bias follow the channels; a pruned level normalises over the channels it keeps."""
        rank = len(self.ranks.get(acts[0]) or []) if acts else 0
        axis = int(self._attr(node, "axis", -1)) % max(rank, 1)
        if len(acts) != 1 or segs_in[0] is None or axis != rank - 1 or self.axis.get(acts[0], 1) != axis \
                or len(node.output) > 1 and any(node.output[1:]):
            return self.unknown(node, segs_in, f"{where} normalises over more than the channel axis")
        for p in node.input[1:3]:
            if p:
                self.param(p, 0, segs_in[0], "channel", where)
        self.seg[node.output[0]] = segs_in[0]
        self.axis[node.output[0]] = axis


def analyze(model: Any) -> ChannelGraph:
    """Find the channel groups of an ``onnx.ModelProto`` (nodes must be in topological order)."""
    return _Analyzer(model).run()
