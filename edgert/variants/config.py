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
kept at a level's width uses that level's statistics (of the likest such level,
``weight_specs``). Contiguous parts are read in place
from the memory map; the others are copied once per configuration.

``ConfigCache`` builds an ORT session per configuration on first use and keeps the most
recently used ones while their weight bytes fit its budget; selecting a cached one swaps
a pointer, like selecting a level. A session is charged all of its configuration's weight
bytes, copied or read in place: ONNX Runtime pre-packs weights it reads in place (MatMul
and Gemm B) into copies of its own, so counting only our copies let sessions that copy
nothing pile up without bound. A session needs the configuration's graph (the level-0
graph with its weights declared at the configuration's shapes). The runtime never writes
ONNX: it takes a uniform level's stored graph, or the one ``edgert search`` stored for each
Pareto configuration (``CONFIG_GRAPH``), or else asks the builder the host passed in
(``config_graph.build``, which needs onnx); with none, a ``UsageError`` says how to store it.

Device-side: stdlib, numpy and ``backends.ort``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import BundleError, ModelError, UsageError

from .ranges import EXTERNAL_LOCATION, kept_ranges, slice_ranges
from .tables import GRAPHS

CONFIG_GRAPH = GRAPHS + "{}"  # a stored configuration's graph, by its key (docs/aio-format.md)


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
        if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in kept.values()):
            raise TypeError("kept channels must be integers")
        given = {int(g): int(k) for g, k in kept.items()}
    except (TypeError, ValueError, AttributeError):
        raise UsageError(f"a configuration maps group ids to integer channel counts; got {kept!r}") from None
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
        ranges[p["init"]][p["axis"]] = kept_ranges(segments, kept, int(p.get("repeat", 1)))
    return ranges


def _full_ranges(meta: Mapping[str, Any], name: str) -> list[list[list[int]]]:
    """Whole-axis ranges of an initializer (axes that follow no group are never cut, so level
    0's spans give their length; the caller overwrites the group axes)."""
    return [[[0, sum(b - a for a, b in spans)]] for spans in meta["levels"][0]["params"][name]["ranges"]]


def _level_ranges(meta: Mapping[str, Any], index: int) -> dict[str, list[list[list[int]]]]:
    return param_ranges(meta, of_level(meta, index))


def weight_specs(meta: Mapping[str, Any], config: Config) -> dict[str, dict[str, Any]]:
    """``{init: {"tensor", "ranges"}}`` like a level's ``params``: the shared tensor and the
    configuration's spans, or a level's own tensor where that level has the same spans. Where
    several levels have them (two levels may keep a group at one width), the level that keeps
    the most groups at the configuration's widths serves, the more accurate on a tie, with its
    own tensor or the shared one: a uniform level's configuration runs exactly as the level."""
    ranges = param_ranges(meta, config)
    specs = {name: {"tensor": name, "ranges": r} for name, r in ranges.items()}
    kept = config.as_dict()

    def likeness(index: int) -> tuple[int, int]:
        level = of_level(meta, index).as_dict()
        return sum(level[g] == k for g, k in kept.items()), -index

    own_levels = [i for i, lv in enumerate(meta["levels"]) if any(s["tensor"] != n for n, s in lv["params"].items())]
    if not own_levels:
        return specs
    for index in sorted(range(len(meta["levels"])), key=likeness):  # the likest level last: it wins
        at_level = _level_ranges(meta, index)
        for name, spec in meta["levels"][index]["params"].items():
            if at_level[name] == ranges[name]:
                specs[name] = spec  # its own tensor, or the shared one (which a less alike level's own must not shadow)
    return specs


def depthwise_groups(meta: Mapping[str, Any], config: Config) -> dict[str, int]:
    kept = config.as_dict()
    groups = {node: sum(kept.get(int(g), int(n)) for g, n in segs)
              for node, segs in meta["template"].get("depthwise", {}).items()}
    for node, (segs, per_group) in meta["template"].get("grouped", {}).items():  # kept blocks
        groups[node] = sum(kept.get(int(g), int(n)) for g, n in segs) // int(per_group)
    return groups


def weight_shapes(meta: Mapping[str, Any], config: Config) -> dict[str, list[int]]:
    """The shape each floating-point initializer has in the configuration."""
    return {n: [sum(b - a for a, b in spans) for spans in r] for n, r in param_ranges(meta, config).items()}


def stored_graph(meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray], config: Config) -> bytes | None:
    """The configuration's graph stored in the file: a uniform level's, or one ``edgert search``
    stored (``CONFIG_GRAPH``); None when the file has none."""
    for index, lv in enumerate(meta["levels"]):
        if of_level(meta, index) == config:
            return bytes(tensors[lv["graph"]])
    name = CONFIG_GRAPH.format(config.key)
    return bytes(tensors[name]) if name in tensors else None


# builds the graph of a configuration the file does not store: (meta, tensors, config) -> ONNX bytes
GraphBuilder = Callable[[Mapping[str, Any], Mapping[str, np.ndarray], Config], bytes]


@dataclasses.dataclass
class _Entry:
    session: Any
    copied_bytes: int  # weights we copied (non-contiguous slices)
    weight_bytes: int  # all its weights: what the budget charges (module docstring)
    weights: dict[str, np.ndarray]


class ConfigCache:
    """Sessions of configurations, built on first use, least recently used dropped first once
    their weight bytes exceed ``budget_bytes`` (None: keep all; the configuration in use
    always stays). ``file`` is an opened ``aiofile``; ``builder`` (host) builds graphs the
    file does not store."""

    def __init__(self, file: Any, path: Path, budget_bytes: float | None, threads: int | None = None,
                 builder: GraphBuilder | None = None) -> None:
        self.file, self.path = file, Path(path)
        self.budget_bytes = budget_bytes
        self.threads = threads
        self.builder = builder
        self._entries: OrderedDict[Config, _Entry] = OrderedDict()
        self.built = 0  # sessions built so far (a measure of cache misses)

    def __contains__(self, config: Config) -> bool:
        return config in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def copied_bytes(self) -> int:
        return sum(e.copied_bytes for e in self._entries.values())

    @property
    def weight_bytes(self) -> int:
        return sum(e.weight_bytes for e in self._entries.values())

    def session(self, config: Config) -> Any:
        entry = self._entries.get(config)
        if entry is None:
            if make(self.file.meta, config.as_dict()) != config:  # built by hand, not by make/decode
                raise UsageError(f"configuration {config} is not in canonical form (use config.make or decode)")
            entry = self._entries[config] = self._build(config)
            self._evict(keep=config)
        self._entries.move_to_end(config)
        return entry.session

    def warm(self, configs: Iterable[Config]) -> None:
        for config in configs:
            self.session(config)

    def _evict(self, keep: Config) -> None:
        while self.budget_bytes is not None and len(self._entries) > 1 and self.weight_bytes > self.budget_bytes:
            oldest = next(c for c in self._entries if c != keep)
            del self._entries[oldest]

    def graph(self, config: Config) -> bytes:
        """The configuration's graph: stored in the file, else from the builder."""
        meta, tensors = self.file.meta, self.file.tensors
        graph = stored_graph(meta, tensors, config)
        if graph is not None:
            return graph
        if self.builder is None:
            raise UsageError(
                f"{self.path} stores no graph for configuration {config.key} and this runtime builds "
                "none (that needs onnx, on a host): store the configurations you run with `edgert search` "
                "(it writes the Pareto configurations' graphs into the file), or on a host open the file "
                "with graph_builder=edgert.variants.config_graph.build", path=str(self.path))
        return self.builder(meta, tensors, config)

    def _build(self, config: Config) -> _Entry:
        from edgert.backends.ort import CallerWeightsSession

        meta, tensors = self.file.meta, self.file.tensors
        graph = self.graph(config)
        weights, copied = {}, 0
        for name, spec in weight_specs(meta, config).items():
            whole = tensors[spec["tensor"]]
            weights[name] = slice_ranges(whole, spec["ranges"])
            if not np.shares_memory(weights[name], whole):
                copied += weights[name].nbytes
        try:
            session = CallerWeightsSession(graph, weights, location=EXTERNAL_LOCATION, threads=self.threads)
        except ModelError as exc:
            raise BundleError(f"{self.path} configuration {config.key}: {exc}", path=str(self.path)) from exc
        self.built += 1
        return _Entry(session, copied, sum(w.nbytes for w in weights.values()), weights)
