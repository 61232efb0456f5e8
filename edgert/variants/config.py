"""Per-layer width configurations of an All-in-One file, and their sessions built on demand.

Channels of every prunable group are stored in descending importance, so *any* prefix
width per group is a valid sub-network of the shared weights (Once-for-All's elastic
width), not only the uniform levels the file was written with. A ``Config`` names the
kept-channel count of every prunable group. Its canonical text is ``"gid:kept,..."`` in
ascending group id, every prunable group listed (``encode``); ``key`` is a short sha256 of
that text, used to name stored configurations and cached sessions.

A configuration's weights are built like a level's: per initializer, the prefix ranges of
its group axes (``ranges.kept_ranges``). A per-level tensor (e.g. BN statistics re-estimated
for a level) serves a configuration wherever its ranges equal that level's, so a group
kept at a level's width uses that level's statistics. Contiguous parts are read in place
from the memory map; the others are copied once per configuration.

``ConfigCache`` builds an ORT session per configuration on first use and keeps the most
recently used ones while their copied bytes fit its budget; selecting a cached one swaps
a pointer, like selecting a level. Building a new one rewrites the stored full-level graph
(declared weight shapes, depthwise ``group``), which needs the ``onnx`` package (host, or a
device that has it); sessions of stored configurations can be built ahead with ``warm``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from edgert.errors import BundleError, ModelError, UsageError

from .ranges import EXTERNAL_LOCATION, kept_ranges, slice_ranges

if TYPE_CHECKING:
    from .runtime import VariantModel


@dataclasses.dataclass(frozen=True)
class Config:
    """Kept channels per prunable group, as ``((group id, kept), ...)`` in ascending id."""

    kept: tuple[tuple[int, int], ...]

    def encode(self) -> str:
        return ",".join(f"{g}:{k}" for g, k in self.kept)

    @property
    def key(self) -> str:
        return hashlib.sha256(self.encode().encode()).hexdigest()[:16]

    def as_dict(self) -> dict[int, int]:
        return dict(self.kept)

    def __str__(self) -> str:
        return self.encode()


def prunable(meta: Mapping[str, Any]) -> dict[int, int]:
    """Group id -> channel count of every prunable group of a file."""
    return {int(g["id"]): int(g["size"]) for g in meta["groups"] if g["fixed"] is None}


def make(meta: Mapping[str, Any], kept: Mapping[int | str, int]) -> Config:
    """A checked configuration: every prunable group named once, 1 <= kept <= its size."""
    sizes = prunable(meta)
    try:
        given = {int(g): int(k) for g, k in kept.items()}
    except (TypeError, ValueError):
        raise UsageError(f"a configuration maps group ids to channel counts; got {dict(kept)!r}") from None
    unknown = sorted(set(given) - set(sizes))
    missing = sorted(set(sizes) - set(given))
    if unknown or missing:
        raise UsageError("a configuration must name every prunable group exactly once: "
                         + "; ".join(filter(None, [unknown and f"not prunable groups: {unknown}",
                                                   missing and f"missing groups: {missing}"])))
    bad = {g: k for g, k in given.items() if not 1 <= k <= sizes[g]}
    if bad:
        raise UsageError("kept channels out of range: " + ", ".join(
            f"group {g} keeps {k} of {sizes[g]}" for g, k in sorted(bad.items())))
    return Config(tuple(sorted(given.items())))


def decode(meta: Mapping[str, Any], text: str) -> Config:
    """Parse ``encode``'s text (or any order of ``gid:kept`` pairs) and check it against the file."""
    pairs: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        gid, sep, kept = item.partition(":")
        if not sep:
            raise UsageError(f"configuration item {item!r} is not GROUP:KEPT")
        if gid.strip() in pairs:
            raise UsageError(f"configuration names group {gid.strip()} twice")
        try:
            pairs[gid.strip()] = int(kept)
        except ValueError:
            raise UsageError(f"configuration item {item!r}: kept channels must be an integer") from None
    return make(meta, pairs)


def of_level(meta: Mapping[str, Any], index: int) -> Config:
    """The uniform level ``index`` as a configuration."""
    return make(meta, meta["levels"][index]["kept"])


def candidate_widths(meta: Mapping[str, Any]) -> dict[int, list[int]]:
    """Per prunable group, the distinct widths of the file's levels, ascending: the search space
    (the widths the shared weights were trained and recalibrated for)."""
    out: dict[int, set[int]] = {g: set() for g in prunable(meta)}
    for lv in meta["levels"]:
        for g, k in lv["kept"].items():
            if int(g) in out:
                out[int(g)].add(int(k))
    return {g: sorted(ws) for g, ws in out.items()}


def param_ranges(meta: Mapping[str, Any], config: Config) -> dict[str, list[list[list[int]]]]:
    """Per floating-point initializer, the [start, stop) spans the configuration keeps per axis."""
    kept = config.as_dict()
    ranges: dict[str, list[list[list[int]]]] = {}
    base = meta["levels"][0]["params"]
    for name in base:
        ranges[name] = _full_ranges(meta, name)
    for p in meta["template"]["param_axes"]:
        segments = tuple((int(g), int(n)) for g, n in p["segments"])
        ranges[p["init"]][p["axis"]] = kept_ranges(segments, kept)
    return ranges


def _full_ranges(meta: Mapping[str, Any], name: str) -> list[list[list[int]]]:
    """Whole-axis ranges of an initializer (axes that follow no group are never cut, so level
    0's spans give their length; the caller overwrites the group axes)."""
    return [[[0, sum(b - a for a, b in spans)]] for spans in meta["levels"][0]["params"][name]["ranges"]]


def _level_ranges(meta: Mapping[str, Any], index: int) -> dict[str, list[list[list[int]]]]:
    return param_ranges(meta, of_level(meta, index))


def weight_specs(meta: Mapping[str, Any], config: Config) -> dict[str, dict[str, Any]]:
    """``{init: {"tensor", "ranges"}}`` like a level's ``params``: the shared tensor and the
    configuration's spans, or a level's own tensor where that level has the same spans."""
    ranges = param_ranges(meta, config)
    specs = {name: {"tensor": name, "ranges": r} for name, r in ranges.items()}
    for index, lv in enumerate(meta["levels"]):
        own = {n: s for n, s in lv["params"].items() if s["tensor"] != n}
        if not own:
            continue
        at_level = _level_ranges(meta, index)
        for name, spec in own.items():
            if at_level[name] == ranges[name]:
                specs[name] = spec
    return specs


def depthwise_groups(meta: Mapping[str, Any], config: Config) -> dict[str, int]:
    kept = config.as_dict()
    groups = {node: sum(kept.get(int(g), int(n)) for g, n in segs)
              for node, segs in meta["template"].get("depthwise", {}).items()}
    for node, (segs, per_group) in meta["template"].get("grouped", {}).items():  # kept blocks
        groups[node] = sum(kept.get(int(g), int(n)) for g, n in segs) // int(per_group)
    return groups


def config_graph(graph: bytes, shapes: Mapping[str, list[int]], depthwise: Mapping[str, int]) -> bytes:
    """A level graph re-declared for other weight shapes (the weights stay external)."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(graph)
    for t in model.graph.initializer:
        if t.name not in shapes or t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        del t.dims[:]
        t.dims.extend(shapes[t.name])
        nbytes = int(np.prod(shapes[t.name], dtype=np.int64)) * \
            np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        for entry in t.external_data:
            if entry.key == "length":
                entry.value = str(nbytes)
    for node in model.graph.node:
        if node.name in depthwise:
            for a in node.attribute:
                if a.name == "group":
                    a.i = depthwise[node.name]
    return model.SerializeToString()


@dataclasses.dataclass
class _Entry:
    session: Any
    copied_bytes: int
    weights: dict[str, np.ndarray]


class ConfigCache:
    """Sessions of configurations, built on first use, least recently used dropped first once
    their copied weight bytes exceed ``budget_bytes`` (None: keep all; the configuration in use
    always stays)."""

    def __init__(self, model: "VariantModel", budget_bytes: float | None, threads: int | None = None) -> None:
        self.model = model
        self.budget_bytes = budget_bytes
        self.threads = threads
        self._entries: OrderedDict[Config, _Entry] = OrderedDict()
        self.built = 0  # sessions built so far (a measure of cache misses)

    def __contains__(self, config: Config) -> bool:
        return config in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def copied_bytes(self) -> int:
        return sum(e.copied_bytes for e in self._entries.values())

    def session(self, config: Config) -> Any:
        entry = self._entries.get(config)
        if entry is None:
            entry = self._entries[config] = self._build(config)
            self._evict(keep=config)
        self._entries.move_to_end(config)
        return entry.session

    def warm(self, configs: Iterable[Config]) -> None:
        for config in configs:
            self.session(config)

    def _evict(self, keep: Config) -> None:
        while self.budget_bytes is not None and len(self._entries) > 1 and self.copied_bytes > self.budget_bytes:
            oldest = next(c for c in self._entries if c != keep)
            del self._entries[oldest]

    def _build(self, config: Config) -> _Entry:
        from edgert.backends.ort import CallerWeightsSession

        meta, tensors = self.model._file.meta, self.model._file.tensors
        specs = weight_specs(meta, config)
        weights, copied = {}, 0
        for name, spec in specs.items():
            whole = tensors[spec["tensor"]]
            weights[name] = slice_ranges(whole, spec["ranges"])
            if not np.shares_memory(weights[name], whole):
                copied += weights[name].nbytes
        graph = config_graph(bytes(tensors[meta["levels"][0]["graph"]]),
                             {n: list(w.shape) for n, w in weights.items()}, depthwise_groups(meta, config))
        try:
            session = CallerWeightsSession(graph, weights, location=EXTERNAL_LOCATION, threads=self.threads)
        except ModelError as exc:
            raise BundleError(f"{self.model.path} configuration {config.key}: {exc}",
                              path=str(self.model.path)) from exc
        self.built += 1
        return _Entry(session, copied, weights)
