"""Channel groups: the sets of channels that must be pruned together, found from the ONNX graph.

Every activation tensor's channel axis (axis 1) is described as a list of *segments*
``(group id, length)``: one segment for a conv output, several after a channel Concat.
Walking the graph in order, a Conv opens a new group for its output; element-wise and
pooling ops pass segments through; a residual Add merges the groups of its operands
(union-find); a depthwise Conv shares its input's group; Gemm/MatMul after
GlobalAveragePool+Flatten consume the channels on their weight's input axis.

A group is *fixed* (never pruned) when it touches something the pruner does not understand
— a graph input or output, a grouped conv, a Reshape — and the reason names the node, so
``edgert prune`` can say which part of a model was skipped and why.

Host-only: imports onnx.
"""
from __future__ import annotations

import dataclasses
from typing import Any

Segments = tuple[tuple[int, int], ...]  # (group id, channel count) along one axis

# Ops whose output channel axis is their first input's, channel for channel.
PASSTHROUGH = frozenset({
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Elu", "Selu",
    "Softplus", "Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "LpPool", "Neg", "Abs", "Erf", "Gelu", "Mish",
})
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum"})


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ChannelGraph:
    """The analysis result: groups (by root id), parameter axes and depthwise convs."""

    groups: dict[int, Group]
    params: list[ParamAxis]
    depthwise: dict[str, Segments]  # conv node name -> its channel segments (``group`` attr)
    bn: list[tuple[str, str, float]]  # (gamma, running var, epsilon) for importance

    def prunable(self) -> list[Group]:
        return [g for g in self.groups.values() if g.fixed is None]

    def skipped(self) -> list[Group]:
        return [g for g in self.groups.values() if g.fixed is not None]


class _Analyzer:
    def __init__(self, model: Any) -> None:
        import onnx
        from onnx import numpy_helper

        self.model = onnx.shape_inference.infer_shapes(model)
        graph = self.model.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.ranks: dict[str, list[int | None]] = {}
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            dims = vi.type.tensor_type.shape.dim
            self.ranks[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        self.parent: dict[int, int] = {}
        self.groups: dict[int, Group] = {}
        self.seg: dict[str, Segments | None] = {}
        self.params: dict[tuple[str, int], ParamAxis] = {}
        self.depthwise: dict[str, Segments] = {}
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
        for segs in segs_in:
            self.fix(segs, why)
        for out in node.output:
            c = self.channels(out)
            self.seg[out] = self.new(c, f"{node.name}:{out}", why) if c else None

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
        return ChannelGraph(roots, params, depthwise, self.bn)

    def visit(self, node: Any) -> None:
        op, name = node.op_type, node.name or node.output[0]
        acts = [i for i in node.input if i and i not in self.inits]
        segs_in = [self.seg.get(i) for i in acts]
        where = f"node {name!r} ({op})"
        handler = getattr(self, f"_{op.lower()}", None)
        if op in PASSTHROUGH and len(acts) == 1:
            self.seg[node.output[0]] = segs_in[0]
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
        else:
            self.unknown(node, segs_in, f"{where} is a grouped convolution (group={group})")

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

    def _elementwise(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        if not acts or any(s is None for s in segs_in):
            return self.unknown(node, segs_in, f"{where} combines tensors without a channel layout")
        first = segs_in[0]
        for other in segs_in[1:]:
            if not self.merge(first, other, f"{where} adds tensors whose channel layouts differ"):
                return self.unknown(node, segs_in, f"{where} adds tensors whose channel layouts differ")
        rank = len(self.ranks.get(acts[0]) or [0, 0, 0, 0])
        for const in (i for i in node.input if i in self.inits):
            value = self.inits[const]
            if value.size == 1:
                continue
            axis = value.ndim - (rank - 1)  # numpy broadcasting aligns shapes on the right
            channels = sum(n for _, n in first)
            if 0 <= axis < value.ndim and value.shape[axis] == channels and value.size == channels:
                self.param(const, axis, first, "channel", where)
            else:
                return self.unknown(node, segs_in, f"{where} broadcasts a constant of shape "
                                                   f"{list(value.shape)} over the channels")
        self.seg[node.output[0]] = first

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
        w = node.input[1]
        if len(acts) != 1 or w not in self.inits or self.inits[w].ndim != 2 \
                or len(self.ranks.get(node.input[0]) or []) != 2:
            return self.unknown(node, segs_in, f"{where} is not a 2-D product with a constant weight")
        out = self.new(self.inits[w].shape[1], f"{node.name} output")
        if segs_in[0]:
            self.param(w, 0, segs_in[0], "consumer", where)
        self.param(w, 1, out, "producer", where)
        self.seg[node.output[0]] = out


def analyze(model: Any) -> ChannelGraph:
    """Find the channel groups of an ``onnx.ModelProto`` (nodes must be in topological order)."""
    return _Analyzer(model).run()


def group_offsets(segments: Segments) -> list[tuple[int, int, int]]:
    """(group id, start, length) of each segment along its axis."""
    out, start = [], 0
    for gid, n in segments:
        out.append((gid, start, n))
        start += n
    return out


def kept_ranges(segments: Segments, kept: dict[int, int]) -> list[list[int]]:
    """The [start, stop) ranges one level keeps along an axis: a prefix of every segment."""
    ranges: list[list[int]] = []
    for gid, start, n in group_offsets(segments):
        k = kept.get(gid, n)
        if k == 0:
            continue
        if ranges and ranges[-1][1] == start:  # the previous segment was kept whole: extend it
            ranges[-1][1] = start + k
        else:
            ranges.append([start, start + k])
    return ranges
