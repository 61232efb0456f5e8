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
(channels per index along the heads axis), meet in Q K^T and P V and merge back. Reshapes
are followed by dimension algebra on symbolic dims (``reshape.follow``), also when their
target is computed from Shape at run time; a fused Q/K/V projection picked apart by Gather
or Split is *cut*: its group is replaced by one group per part (``expand``). A channel
shuffle (Reshape to (N, g, C/g, ...), Transpose, Reshape back: ShuffleNet) merges its parts'
groups and leaves every channel spanning g consecutive entries (``repeat``; g^2 after the
next shuffle); a branch's conv output concatenated beside such channels is re-expressed as
them (``alias``), and the Split or Slice that halves a shuffled tensor cuts its groups.

A group is *fixed* (never pruned) when it touches something the pruner does not understand
— a graph input or output, a Reshape it cannot follow, a tensor an If/Loop body reads —
and the reason names the node, so ``edgert prune`` can say which part of a model was
skipped and why. An op it does not understand leaves its outputs without a layout (never
pruned).

Host-only: imports onnx and sympy (and onnxruntime's symbolic shape inference when present).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np

from . import reshape as R
from .ranges import Segments

# Ops whose output channel axis is their first input's, channel for channel.
PASSTHROUGH = frozenset({
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Elu", "Selu",
    "Softplus", "Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "LpPool", "Neg", "Abs", "Erf", "Gelu", "Mish", "IsNaN", "Sqrt", "Exp", "Cast",
})
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Where"})
# Ops of shape arithmetic (a Reshape's target computed from Shape at run time).
INDEX_OPS = frozenset({"Slice", "Gather", "Squeeze", "Unsqueeze", "Concat", "Cast", "Identity", "Reshape", "Add",
                       "Sub", "Mul", "Div", "Mod"})
# Ops that follow shuffled channels (each channel spanning several consecutive entries).
SHUFFLED_OPS = frozenset({"Conv", "BatchNormalization", "Concat", "Split", "Slice", "Reshape", "Shape"} | ELEMENTWISE)
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
    repeat: int = 1  # entries per channel along the axis (``ranges.group_offsets``): after a shuffle


@dataclasses.dataclass
class Group:
    id: int
    size: int
    members: list[str]
    fixed: str | None = None  # why this group is never pruned; None: prunable
    block: int = 1  # channels pruned together: a grouped conv's channels per group

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Split:
    """A Reshape that split plain channels into (indices, unit): heads and their width, unless
    a Gather later picks single indices (Q/K/V chunks), which then become groups of their own."""

    heads_rewrite: tuple[str, int] | None  # (shape constant, entry) a level rewrites for heads
    unit_rewrite: tuple[str, int] | str | None  # the same for chunks; "impossible" if it cannot
    segs: Segments
    indices: int
    block: int  # the group's block before the split


@dataclasses.dataclass
class ChannelGraph:
    """The analysis result: groups (by root id), parameter axes and depthwise convs."""

    groups: dict[int, Group]
    params: list[ParamAxis]
    # conv node name -> its channel segments (``group`` = their kept channels; over shuffled
    # channels the segments are listed once per entry of a channel)
    depthwise: dict[str, Segments]
    grouped: dict[str, tuple[Segments, int]]  # grouped conv -> (its channels, per group): group = kept / per group
    # shape constant (a Reshape's or a Split's) -> {entry: (channel segments, divisor, multiple)}:
    # a level writes the kept channels of those segments times the multiple over the divisor there
    reshapes: dict[str, dict[int, tuple[Segments, int, int]]]
    bn: list[tuple[str, str, float]]  # (gamma, running var, epsilon) for importance

    def prunable(self) -> list[Group]:
        return [g for g in self.groups.values() if g.fixed is None]

    def skipped(self) -> list[Group]:
        return [g for g in self.groups.values() if g.fixed is not None]


def subgraph_reads(graph: Any) -> dict[str, str]:
    """Names of the enclosing scopes that the subgraphs (If/Loop/Scan bodies) of ``graph``'s
    nodes read, with the reading node: the analysis does not look inside a body, so a
    tensor it reads keeps its channels whole and a weight it reads keeps its shape."""
    import onnx

    reads: dict[str, str] = {}
    for node in graph.node:
        for attr in node.attribute:
            bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for body in bodies:
                inner = {i.name for i in body.input} | {t.name for t in body.initializer} \
                    | {o for n in body.node for o in n.output}
                for name in {i for n in body.node for i in n.input if i} | set(subgraph_reads(body)):
                    if name not in inner:
                        reads.setdefault(name, f"{node.name or node.output[0]} ({node.op_type})")
    return reads


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
        self.dims: dict[str, list[Any]] = {}  # the same dims as sympy expressions (symbolic ones too)
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            dims = vi.type.tensor_type.shape.dim
            self.ranks[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
            self.dims[vi.name] = [R.dim(d.dim_value if d.HasField("dim_value") else d.dim_param) for d in dims]
        for name, value in self.inits.items():
            self.ranks.setdefault(name, list(value.shape))
        self.producer = {out: node for node in graph.node for out in node.output}
        self.parent: dict[int, int] = {}
        self.groups: dict[int, Group] = {}
        self.seg: dict[str, Segments | None] = {}
        self.axis: dict[str, int] = {}  # channel axis of a tensor when not 1 (after a Transpose)
        # channels per index along that axis: an attention head's width on a heads axis
        self.unit: dict[str, int] = {}
        self.inner: dict[str, int] = {}  # the axis holding one index's channels (unit > 1)
        self.outer: dict[str, Any] = {}  # a batch factor folded into the channel axis
        self.reshapes: dict[str, dict[int, tuple[Segments, int, int]]] = {}  # see ChannelGraph
        # entries per channel along a tensor's channel axis (a channel shuffle interleaves the
        # halves: 2 per channel after one, 4 after the next, ...), for the segments it was stored with
        self.rep: dict[str, int] = {}
        # a group re-expressed as other groups' channels, each spanning ``repeat`` entries: a
        # branch's conv output concatenated beside shuffled channels follows them (``_concat``)
        self.alias: dict[int, tuple[Segments, int]] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.skip: set[int] = set()  # nodes a channel shuffle's handler already followed (by id)
        # a group cut in parts (Q/K/V chunks of one projection) -> its parts
        self.split_into: dict[int, Segments] = {}
        # a group split into (indices, unit) by a Reshape -> (shape constant, unit entry, segs, indices, block)
        self.pending: dict[int, tuple[str | None, int | None, Segments, int, int]] = {}
        self.params: dict[tuple[str, int], ParamAxis] = {}
        self.depthwise: dict[str, tuple[Segments, int]] = {}  # (channels, entries per channel)
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

    def expand(self, segs: Segments | None) -> Segments | None:
        """``segs`` with every group that was cut in parts replaced by its parts."""
        if segs is None:
            return None
        return self.expand_rep(segs)[0]

    def expand_rep(self, segs: Segments) -> tuple[Segments, int | None]:
        """``expand``, also through aliases, with the factor the aliases multiply the entries
        per channel by (None when the segments' factors differ)."""
        out: list[tuple[int, int]] = []
        factors: set[int | None] = set()
        for gid, n in segs:
            root = self.find(gid)
            if root in self.split_into:
                sub, factor = self.expand_rep(self.split_into[root])
            elif root in self.alias:
                sub, factor = self.expand_rep(self.alias[root][0])
                factor = factor and factor * self.alias[root][1]
            else:
                sub, factor = ((gid, n),), 1
            out.extend(sub)
            factors.add(factor)
        return tuple(out), (factors.pop() if len(factors) == 1 else None if factors else 1)

    def repeat(self, name: str) -> int | None:
        """Entries per channel of tensor ``name`` (None: its segments disagree)."""
        segs = self.seg.get(name)
        factor = self.expand_rep(segs)[1] if segs else 1
        return factor and self.rep.get(name, 1) * factor

    def cut(self, segs: Segments, at: list[int]) -> Segments | None:
        """Cut the groups of ``segs`` at channel offsets ``at``: the Q/K/V chunks of one fused
        projection become groups of their own (each then pruned by whole heads). None when a
        cut group is fixed or its blocks do not fit the parts."""
        out: list[tuple[int, int]] = []
        start = 0
        for gid, n in segs:
            inside = sorted(a - start for a in at if start < a < start + n)
            start += n
            if not inside:
                out.append((gid, n))
                continue
            root = self.find(gid)
            group, split = self.groups[root], self.pending.pop(root, None)
            block = split.block if split else group.block  # a chunk is no head: its Reshape's block goes
            edges = [0, *inside, n]
            if group.fixed or any((b - a) % block for a, b in itertools.pairwise(edges)) \
                    or (split and split.unit_rewrite == "impossible"):
                return None
            parts = []
            for a, b in itertools.pairwise(edges):
                part = self.new(b - a, f"{group.members[0]} [{a}:{b}]")[0][0]
                self.groups[part].block = block
                parts.append((part, b - a))
            self.split_into[root] = tuple(parts)
            if split and split.heads_rewrite:
                self.reshapes[split.heads_rewrite[0]].pop(split.heads_rewrite[1], None)
            if split and split.unit_rewrite:  # the chunk's width is what a level changes
                init, entry = split.unit_rewrite
                self.reshapes.setdefault(init, {})[entry] = (split.segs, split.indices, 1)
            out.extend(parts)
        return tuple(out)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        assert ra not in self.split_into and rb not in self.split_into, "cut groups are expanded first"
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
        for gid, _ in self.expand(segs) or ():
            group = self.groups[self.find(gid)]
            group.fixed = group.fixed or reason

    def merge(self, a: Segments, b: Segments, reason: str) -> bool:
        """Unite two channel layouts segment by segment; fix both if they do not line up."""
        a, b = self.expand(a), self.expand(b)
        if [n for _, n in a] != [n for _, n in b]:
            self.fix(a, reason)
            self.fix(b, reason)
            return False
        for (ga, _), (gb, _) in zip(a, b):
            self.union(ga, gb)
        return True

    def param(self, init: str, axis: int, segs: Segments, role: str, where: str, repeat: int = 1) -> None:
        key = (init, axis)
        if key in self.params:  # a weight shared by two nodes: both uses must agree
            if self.params[key].repeat != repeat:
                self.fix(self.params[key].segments, f"initializer {init!r} is shared by two nodes ({where})")
                self.fix(segs, f"initializer {init!r} is shared by two nodes ({where})")
                return
            self.merge(self.params[key].segments, segs, f"initializer {init!r} is shared by two nodes ({where})")
            return
        self.params[key] = ParamAxis(init, axis, segs, role, repeat)

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
        for name, reader in subgraph_reads(graph).items():
            self.fix(self.seg.get(name), f"{name!r} is read inside the body of node {reader}")
        roots = {gid: g for gid, g in self.groups.items()
                 if self.find(gid) == gid and gid not in self.split_into and gid not in self.alias}

        def resolve(segs: Segments) -> Segments:
            return tuple((self.find(g), n) for g, n in self.expand(segs))

        def factor(segs: Segments) -> int:
            return self.expand_rep(segs)[1] or 1  # never None: fixed groups' axes are whole anyway

        params = [dataclasses.replace(p, segments=resolve(p.segments), repeat=p.repeat * factor(p.segments))
                  for p in self.params.values()]
        # a depthwise conv over shuffled channels counts each kept channel once per entry
        depthwise = {k: resolve(v) * (rep * factor(v)) for k, (v, rep) in self.depthwise.items()}
        reshapes = {k: {i: (resolve(segs), div, mult * factor(segs)) for i, (segs, div, mult) in entries.items()}
                    for k, entries in self.reshapes.items() if entries}
        grouped = {k: (resolve(segs), per) for k, (segs, per) in self.grouped.items()}
        return ChannelGraph(roots, params, depthwise, grouped, reshapes, self.bn)

    def layout(self, name: str) -> R.Layout:
        return R.Layout(self.axis.get(name, 1), self.unit.get(name, 1), self.inner.get(name),
                        self.outer.get(name, 1))

    def put(self, name: str, segs: Segments | None, layout: R.Layout, repeat: int = 1) -> None:
        """Record an output's channels and where they lie."""
        self.seg[name] = segs
        if repeat == 1:
            self.rep.pop(name, None)
        else:
            self.rep[name] = repeat
        self.axis[name], self.unit[name] = layout.axis, layout.unit
        for field, value, default in ((self.inner, layout.inner, None), (self.outer, layout.outer, 1)):
            if value == default:
                field.pop(name, None)
            else:
                field[name] = value

    def visit(self, node: Any) -> None:
        if id(node) in self.skip:
            return
        op, name = node.op_type, node.name or node.output[0]
        acts = [i for i in node.input if i and i not in self.inits]
        segs_in = [self.expand(self.seg.get(i)) for i in acts]
        where = f"node {name!r} ({op})"
        handler = getattr(self, f"_{op.lower()}", None)
        axes = {self.axis.get(i, 1) for i, segs in zip(acts, segs_in) if segs}
        units = {self.unit.get(i, 1) for i, segs in zip(acts, segs_in) if segs}
        folded = any(self.outer.get(i, 1) != 1 for i, segs in zip(acts, segs_in) if segs)
        repeats = {self.repeat(i) for i, segs in zip(acts, segs_in) if segs}
        if len(axes) > 1 or (op in CHANNELS_FIRST and (axes - {1} or units - {1})):
            self.unknown(node, segs_in, f"{where} reads channels on another axis than its input has them")
        elif folded and op not in ("Transpose", "Reshape", "Shape"):
            self.unknown(node, segs_in, f"{where} reads heads folded with the batch")
        elif None in repeats or (repeats - {1} and op not in SHUFFLED_OPS and op not in PASSTHROUGH):
            self.unknown(node, segs_in, f"{where} reads shuffled channels in a way the pruner does not follow")
        elif op in PASSTHROUGH and len(acts) == 1:
            self.put(node.output[0], segs_in[0], self.layout(acts[0]), self.repeat(acts[0]) or 1)
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
        repeat = self.repeat(acts[0]) or 1 if segs else 1
        cin = sum(n for _, n in segs) * repeat if segs else None
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias and bias not in self.inits:
            return self.unknown(node, segs_in, f"{where} has a bias that is not a constant")
        if group == 1:
            out = self.new(cout, f"{node.name} output")
            if segs:
                self.param(w, 1, segs, "consumer", where, repeat)
            self.param(w, 0, out, "producer", where)
            if bias:
                self.param(bias, 0, out, "channel", where)
            self.seg[node.output[0]] = out
        elif segs and group == cin == cout and shape[1] == 1:
            self.depthwise[node.name] = (segs, repeat)
            self.param(w, 0, segs, "channel", where, repeat)
            if bias:
                self.param(bias, 0, segs, "channel", where, repeat)
            self.put(node.output[0], segs, R.Layout(1), repeat)
        elif segs and repeat == 1 and len(segs) == 1 and cin == cout and cin % group == 0:
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
        repeat = self.repeat(acts[0]) or 1
        self.param(scale, 0, segs, "bn_scale", where, repeat)
        for p in (bias, mean, var):
            self.param(p, 0, segs, "channel", where, repeat)
        self.bn.append((scale, var, float(self._attr(node, "epsilon", 1e-5))))
        self.put(node.output[0], segs, R.Layout(1), repeat)

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
        if len({self.repeat(a) for a, _ in laid}) > 1:
            return self.unknown(node, segs_in, f"{where} combines channels shuffled differently")
        repeat = self.repeat(lead) or 1
        first = laid[0][1]
        for _, other in laid[1:]:
            if not self.merge(first, other, f"{where} adds tensors whose channel layouts differ"):
                return self.unknown(node, segs_in, f"{where} adds tensors whose channel layouts differ")
        for const in (i for i in node.input if i in self.inits):
            value = self.inits[const]
            if value.size == 1:
                continue
            axis = value.ndim - (rank - channel_axis)  # numpy broadcasting aligns shapes on the right
            channels = sum(n for _, n in first) * repeat // self.unit.get(lead, 1)
            if 0 <= axis < value.ndim and value.shape[axis] == channels and value.size == channels:
                self.param(const, axis, first, "channel", where, repeat)
            else:
                return self.unknown(node, segs_in, f"{where} broadcasts a constant of shape "
                                                   f"{list(value.shape)} over the channels")
        self.put(node.output[0], self.expand(first), self.layout(lead), repeat)

    def _concat(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        rank = len(self.ranks.get(node.output[0]) or [])
        axis = int(self._attr(node, "axis", 1))
        if len(acts) != len(node.input) or any(s is None for s in segs_in):
            return self.unknown(node, segs_in, f"{where} concatenates a tensor without a channel layout")
        if axis not in (1, 1 - rank):
            return self.unknown(node, segs_in, f"{where} concatenates on an axis other than channels")
        repeats = [self.repeat(a) or 1 for a in acts]
        if len(set(repeats)) > 1:
            segs_in = self._follow_shuffled(acts, segs_in, repeats, where)
            if segs_in is None:
                return self.unknown(node, [self.expand(self.seg.get(a)) for a in acts],
                                    f"{where} concatenates channels shuffled differently")
        self.put(node.output[0], tuple(s for segs in segs_in for s in segs), R.Layout(1), max(repeats))

    def _follow_shuffled(self, acts: list[str], segs_in: list[Segments], repeats: list[int], where: str
                         ) -> list[Segments] | None:
        """ShuffleNet's block concatenates the shuffled channels it passed through with its
        branch's fresh conv output, and its channel shuffle then pairs channel i of both halves:
        the conv output's channels follow the passed-through ones (``alias``: its group becomes
        their groups, ``repeat`` entries per channel), so both halves keep the same channels.
        Tying a fresh group to others only removes freedom, so it is right wherever it is done.
        None when an input is neither shuffled like the widest nor one fresh group to tie."""
        lead = max(range(len(acts)), key=lambda i: repeats[i])
        target, repeat = segs_in[lead], repeats[lead]
        width = sum(n for _, n in target) * repeat
        out = []
        for segs, r in zip(segs_in, repeats):
            if r == repeat:
                out.append(segs)
                continue
            root = self.find(segs[0][0]) if len(segs) == 1 else None
            group = self.groups.get(root) if root is not None else None
            if group is None or r != 1 or group.size != width or group.block != 1 or root in self.pending \
                    or root in {self.find(g) for g, _ in target}:
                return None
            self.alias[root] = (target, repeat)
            if group.fixed:
                self.fix(target, group.fixed)
            out.append(self.expand(segs))
        return out

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
        segs = self.expand(segs_in[0])
        for gid, _ in segs:  # a head is summed over inside: heads are kept whole
            group = self.groups[self.find(gid)]
            group.block = math.lcm(group.block, units[0])
            if group.size % group.block:
                self.fix(segs, f"{where} multiplies heads of {units[0]} channels that do not divide the group")
        inner = ranks[0] - 1 if self.inner.get(acts[1]) == ranks[0] - 1 else None  # P V keeps V's width
        self.put(node.output[0], segs, R.Layout(axes[0], units[0], inner))

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
        layout = self.layout(acts[0])
        inner = None if layout.inner in axes else layout.inner if keep else R.shifted(layout.inner, axes)
        self.put(node.output[0], segs_in[0], dataclasses.replace(layout, axis=axis, inner=inner))

    _reducemax = _reducemean

    def _softmax(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        rank = len(self.ranks.get(acts[0]) or []) if acts else 0
        axis = int(self._attr(node, "axis", -1)) % max(rank, 1)
        if len(acts) != 1 or segs_in[0] is None or axis == self.axis.get(acts[0], 1):
            return self.unknown(node, segs_in, f"{where} normalises over the channels")
        self.put(node.output[0], segs_in[0], self.layout(acts[0]))

    def _shape_entries(self, name: str) -> list[tuple[str | None, int, int | None]] | None:
        """What each entry of a Reshape's target shape is: (initializer, index, value) for a
        constant one (a level may rewrite it), (None, 0, None) for one read from a tensor's
        Shape at run time (right at every level by itself); None when neither is known."""
        if name in self.inits:
            return [(name, i, int(v)) for i, v in enumerate(self.inits[name].reshape(-1))]
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Concat":
            out: list[tuple[str | None, int, int | None]] = []
            for piece in node.input:
                entries = self._shape_entries(piece)
                if entries is None:
                    return None
                out += entries
            return out
        if not self._from_shape(name):
            return None
        length = (self.ranks.get(name) or [None])[0]
        return [(None, 0, None)] * length if length else None

    def _from_shape(self, name: str) -> bool:
        """True when ``name`` is index arithmetic on a tensor's Shape (and constants), so it
        reads each level's own dims at run time."""
        return self._index_arithmetic(name) == "shape"

    def _index_arithmetic(self, name: str) -> str | None:
        """"shape" for index arithmetic reading some Shape, "const" for constants only, else None."""
        if name in self.inits:
            return "const"
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Shape":
            return "shape"
        if node.op_type not in INDEX_OPS:
            return None
        kinds = {self._index_arithmetic(i) for i in node.input if i}
        return None if None in kinds else "shape" if "shape" in kinds else "const"

    def _reshape(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """Follows the channel axis through splits into (heads, width) or (Q/K/V, width), merges
        back and reshapes that keep it (``reshape.follow``). The shape's entry that counts
        channels is recorded so that each level rewrites it (a -1, or an entry read from Shape
        at run time, needs nothing)."""
        data = node.input[0]
        segs = self.expand(self.seg.get(data))
        entries = self._shape_entries(node.input[1]) if len(node.input) > 1 else None
        din, dout = self.dims.get(data), self.dims.get(node.output[0])
        if segs is None or entries is None or not din or not dout or len(entries) != len(dout):
            return self.unknown(node, segs_in, f"{where} reshapes channels with a shape the pruner cannot read")
        if self._shuffle(node, segs, entries, din, dout, where):
            return None
        if (self.repeat(data) or 1) != 1:
            return self.unknown(node, segs_in, f"{where} reshapes shuffled channels")
        allowzero = int(self._attr(node, "allowzero", 0))
        dout = [R.dim(v) if v is not None and v > 0 else din[i] if v == 0 and not allowzero else d
                for i, ((_, _, v), d) in enumerate(zip(entries, dout))]
        free = [i for i, (_, _, v) in enumerate(entries) if v == -1]
        if len(free) == 1 and all(d is not None for d in din) \
                and all(d is not None for i, d in enumerate(dout) if i != free[0]):
            dout[free[0]] = R.rest(din, [d for i, d in enumerate(dout) if i != free[0]])  # inference may name it anew
        channels = sum(n for _, n in segs)
        move = R.follow(din, dout, self.layout(data), channels)
        if move is None:
            return self.unknown(node, segs_in, f"{where} reshapes the channel axis in a way the pruner "
                                               "does not follow")

        def rewrite(entry: int | None) -> tuple[str, int] | str | None:
            """The constant a level rewrites at ``entry``; None if nothing needs it."""
            if entry is None:
                return "impossible"
            init, index, value = entries[entry]
            if init is None or value == -1:
                return None
            return "impossible" if index in self.reshapes.get(init, {}) else (init, index)

        layout, divisor = move.layout, self.unit.get(data, 1)
        heads = rewrite(move.entry)
        if heads == "impossible" or (heads and layout.outer != 1):
            return self.unknown(node, segs_in, f"{where} has a shape constant the pruner cannot rewrite")
        if move.kind == "split":
            divisor = layout.unit
            gid = self.find(segs[0][0])
            if len(segs) == 1 and gid not in self.pending:  # chunks or heads: the next Gather tells
                self.pending[gid] = _Split(heads, rewrite(move.unit_entry), segs, channels // layout.unit,
                                           self.groups[gid].block)
            group = self.groups[gid]
            group.block = math.lcm(group.block, layout.unit)
            if len(segs) != 1 or group.size % group.block:
                return self.unknown(node, segs_in, f"{where} splits channels into heads that do not divide them")
        elif move.kind == "merge":
            divisor = 1
        if heads:
            self.reshapes.setdefault(heads[0], {})[heads[1]] = (segs, divisor, 1)
        self.put(node.output[0], segs, layout)

    def _shuffle(self, node: Any, segs: Segments, entries: list[tuple[str | None, int, int | None]],
                 din: list[Any], dout: list[Any], where: str) -> bool:
        """A channel shuffle: Reshape (N, C, ...) -> (N, g, C/g, ...), Transpose of axes 1 and 2,
        Reshape back to (N, C, ...). Channel i of each of the g parts lands at g*i + part, so
        a level keeps the same channels of every part (they are merged: ShuffleNet's two
        branches) and the shuffled tensor carries each channel g times as many entries per
        channel, interleaved. Followed here at once, the Transpose and the second Reshape are
        then skipped; each level rewrites C/g and C in the two shape constants. False when
        the three nodes are not a shuffle of channel-first parts that line up."""
        data = node.input[0]
        after = self.consumers.get(node.output[0], [])
        if len(after) != 1 or after[0].op_type != "Transpose" or self.layout(data) != R.Layout(1) \
                or len(dout) != len(din) + 1 or len(din) < 2 or dout[1] is None or not dout[1].is_Integer:
            return False
        transpose, g = after[0], int(dout[1])
        perm = list(self._attr(transpose, "perm", []))
        back = self.consumers.get(transpose.output[0], [])
        if perm != [0, 2, 1, *range(3, len(dout))] or len(back) != 1 or back[0].op_type != "Reshape" \
                or [str(d) for d in self.dims.get(back[0].output[0]) or []] != [str(d) for d in din] \
                or [str(d) for d in dout[:1] + dout[3:]] != [str(d) for d in din[:1] + din[2:]] or g < 2:
            return False
        repeat = self.repeat(data) or 1
        width = sum(n for _, n in segs) * repeat
        if width % g:
            return False
        parts, part, filled = [], [], 0
        for gid, n in segs:
            part.append((gid, n))
            filled += n * repeat
            if filled == width // g:
                parts.append(tuple(part))
                part, filled = [], 0
            elif filled > width // g:
                return False  # a group straddles two parts
        back_entries = self._shape_entries(back[0].input[1]) if len(back[0].input) > 1 else None
        if back_entries is None or len(back_entries) != len(din):
            return False
        for other in parts[1:]:
            if not self.merge(parts[0], other, f"{where} shuffles channel groups of different sizes"):
                return False
        for (init, index, value), mult in ((entries[2], repeat), (back_entries[1], g * repeat)):
            if init is not None and value != -1:
                if index in self.reshapes.get(init, {}):
                    self.fix(parts[0], f"{where} has a shape constant the pruner cannot rewrite")
                    return False
                self.reshapes.setdefault(init, {})[index] = (parts[0], 1, mult)
        self.skip.update((id(transpose), id(back[0])))
        self.seg[node.output[0]] = self.seg[transpose.output[0]] = None
        self.put(back[0].output[0], self.expand(parts[0]), R.Layout(1), g * repeat)
        return True

    def _pow(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """A constant scalar power (GPT-2's tanh GELU cubes its input) acts channel by channel."""
        exponent = node.input[1]
        if acts != [node.input[0]] or exponent not in self.inits or self.inits[exponent].size != 1:
            return self.unknown(node, segs_in, f"{where} raises channels to a power that is not one constant")
        self.put(node.output[0], segs_in[0], self.layout(acts[0]))

    def _shape(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """The dims at run time: a level's own, so reading them fixes nothing."""
        self.seg[node.output[0]] = None

    def _axes(self, node: Any) -> list[int] | None:
        axes_input = node.input[1] if len(node.input) > 1 and node.input[1] else ""
        if axes_input:
            return self.inits[axes_input].reshape(-1).tolist() if axes_input in self.inits else None
        return list(self._attr(node, "axes", [])) or None

    def _unsqueeze(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        axes, rank = self._axes(node), len(self.ranks.get(node.output[0]) or [])
        if len(acts) != 1 or segs_in[0] is None or axes is None or not rank:
            return self.unknown(node, segs_in, f"{where} adds axes the pruner cannot see")
        added = [a % rank for a in axes]
        layout = self.layout(acts[0])
        self.put(node.output[0], segs_in[0], dataclasses.replace(
            layout, axis=R.shifted(layout.axis, added=added), inner=R.shifted(layout.inner, added=added)))

    def _squeeze(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        axes, rank = self._axes(node), len(self.ranks.get(acts[0]) or []) if acts else 0
        layout = self.layout(acts[0]) if acts else None
        if len(acts) != 1 or segs_in[0] is None or axes is None or not rank:
            return self.unknown(node, segs_in, f"{where} removes axes the pruner cannot see")
        removed = [a % rank for a in axes]
        if layout.axis in removed:
            return self.unknown(node, segs_in, f"{where} removes the channel axis")
        inner = None if layout.inner in removed else R.shifted(layout.inner, removed)
        self.put(node.output[0], segs_in[0], dataclasses.replace(
            layout, axis=R.shifted(layout.axis, removed), inner=inner))

    def _gather(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """One constant index along the channel axis of Q/K/V chunks (torchvision's ViT picks
        Q, K and V out of its fused in_proj so): the chunk's channels become groups of their
        own. One index along another axis (a class token) keeps the channels."""
        data, index = node.input[0], node.input[1]
        rank = len(self.ranks.get(data) or [])
        segs = segs_in[0] if data in acts else None
        if segs is None or index not in self.inits or self.inits[index].ndim != 0 or not rank \
                or len(acts) != 1:
            return self.unknown(node, segs_in, f"{where} gathers channels the pruner cannot follow")
        axis, at = int(self._attr(node, "axis", 0)) % rank, int(self.inits[index])
        layout = self.layout(data)
        if axis != layout.axis:
            inner = R.shifted(layout.inner, [axis]) if layout.inner != axis else None
            return self.put(node.output[0], segs, dataclasses.replace(
                layout, axis=R.shifted(layout.axis, [axis]), inner=inner))
        unit, channels = layout.unit, sum(n for _, n in segs)
        if unit == 1 or layout.inner is None or layout.outer != 1:
            return self.unknown(node, segs_in, f"{where} picks single channels")
        at %= channels // unit
        cut = self.cut(segs, list(range(0, channels + 1, unit)))
        if cut is None:
            return self.unknown(node, segs_in, f"{where} picks a part of channels the pruner cannot cut")
        picked, start = [], 0
        for gid, n in cut:
            if at * unit <= start < (at + 1) * unit:
                picked.append((gid, n))
            start += n
        self.put(node.output[0], tuple(picked), R.Layout(R.shifted(layout.inner, [axis])))

    def _split(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """Splitting a fused projection along its channels (GPT-2's Q, K, V): each output gets
        its part, cut into groups of its own."""
        rank = len(self.ranks.get(acts[0]) or []) if acts else 0
        sizes_input = node.input[1] if len(node.input) > 1 else ""
        segs = segs_in[0] if acts else None
        if len(acts) != 1 or segs is None or not rank or sizes_input not in self.inits:
            return self.unknown(node, segs_in, f"{where} splits channels the pruner cannot follow")
        layout = self.layout(acts[0])
        axis, sizes = int(self._attr(node, "axis", 0)) % rank, self.inits[sizes_input].reshape(-1).tolist()
        if axis != layout.axis:
            for out in node.output:
                self.put(out, segs, layout)
            return None
        repeat = self.repeat(acts[0]) or 1  # shuffled channels: cut between whole channels
        if any(e % repeat for e in np.cumsum(sizes)):
            return self.unknown(node, segs_in, f"{where} cuts shuffled channels ({repeat} entries each) apart")
        edges = [e // repeat for e in np.cumsum([0, *sizes]).tolist()]
        cut = self.cut(segs, edges) if layout.unit == 1 and layout.outer == 1 else None
        if cut is None:
            return self.unknown(node, segs_in, f"{where} splits channels the pruner cannot cut")
        start, parts = 0, [[] for _ in sizes]
        for gid, n in cut:
            parts[int(np.searchsorted(edges, start, side="right")) - 1].append((gid, n))
            start += n
        if sizes_input in self.reshapes:
            return self.unknown(node, segs_in, f"{where} shares its sizes with another node")
        self.reshapes[sizes_input] = {i: (tuple(part), 1, repeat) for i, part in enumerate(parts)}
        for out, part in zip(node.output, parts):
            self.put(out, tuple(part), layout, repeat)

    def _slice(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """A constant slice: along other axes it keeps the channels; along the channels (the
        TorchScript exporter's ``chunk``, ShuffleNet's halves) it is a ``_split`` with one part
        kept, and each level rewrites its start and end."""
        data = node.input[0]
        consts = [node.input[i] if len(node.input) > i else "" for i in range(1, 5)]
        rank = len(self.ranks.get(data) or [])
        segs = segs_in[0] if acts == [data] else None
        if segs is None or not rank or any(c and c not in self.inits for c in consts):
            return self.unknown(node, segs_in, f"{where} slices channels the pruner cannot follow")
        starts, ends = (self.inits[c].reshape(-1).tolist() for c in consts[:2])
        axes = [a % rank for a in self.inits[consts[2]].reshape(-1).tolist()] if consts[2] else list(range(len(starts)))
        steps = self.inits[consts[3]].reshape(-1).tolist() if consts[3] else [1] * len(starts)
        layout = self.layout(data)
        repeat = self.repeat(data) or 1
        if layout.inner is not None and layout.inner in axes:
            return self.unknown(node, segs_in, f"{where} slices within attention heads")
        if layout.axis not in axes:
            return self.put(node.output[0], segs, layout, repeat)
        at = axes.index(layout.axis)
        width = sum(n for _, n in segs) * repeat
        start, end = (min(max(v + width if v < 0 else v, 0), width) for v in (starts[at], ends[at]))
        if steps[at] != 1 or layout.unit != 1 or layout.outer != 1 or start >= end:
            return self.unknown(node, segs_in, f"{where} slices channels the pruner cannot follow")
        if start % repeat or end % repeat:
            return self.unknown(node, segs_in, f"{where} cuts shuffled channels ({repeat} entries each) apart")
        cut = self.cut(segs, [start // repeat, end // repeat])
        if cut is None or any(c in self.reshapes for c in consts[:2]):
            return self.unknown(node, segs_in, f"{where} slices channels the pruner cannot cut")
        before, inside, offset = [], [], 0
        for gid, n in cut:
            (before if offset < start // repeat else inside if offset < end // repeat else []).append((gid, n))
            offset += n
        if start:
            self.reshapes[consts[0]] = {at: (tuple(before), 1, repeat)}
        if ends[at] < width:
            self.reshapes[consts[1]] = {at: (tuple(before + inside), 1, repeat)}
        self.put(node.output[0], tuple(inside), layout, repeat)

    def _transpose(self, node: Any, acts: list[str], segs_in: list[Segments | None], where: str) -> None:
        """Moves the channel axis (ConvNeXt's NCHW <-> NHWC around LayerNorm and Linear)."""
        perm = list(self._attr(node, "perm", []))
        axis = self.axis.get(acts[0], 1) if acts else 1
        if len(acts) != 1 or segs_in[0] is None or axis not in perm:
            return self.unknown(node, segs_in, f"{where} transposes a tensor without a channel layout")
        layout = self.layout(acts[0])
        inner = perm.index(layout.inner) if layout.inner is not None else None
        self.put(node.output[0], segs_in[0], dataclasses.replace(layout, axis=perm.index(axis), inner=inner))

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
