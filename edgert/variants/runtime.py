"""Run an All-in-One file: one ONNX Runtime session per level, all fed from one memory map.

Each level is a physically smaller model. Its weights are slices of the file's tensors: a
slice that is contiguous in memory (the full tensor, or a prefix of its first axis) is
read by ONNX Runtime in place from the map. Any other slice (a conv weight pruned on its
input axis) costs either memory or time, so each level gets one *strategy*:

* ``view``: every weight of the level is contiguous; nothing to copy (a shared full level).
* ``copy``: its non-contiguous weights are copied compactly once at open.
* ``slice``: its graph cuts them from the whole weights with Slice nodes at every run
  (measured on the zoo ResNet: 5-8% slower per level; the cut weights live only in the
  shared arena while that level runs). On a small model of many small convs the Slice
  nodes cost more than pruning saves: zoo ShuffleNetV2 x0.5 at 64x64 (87 Slice nodes
  beside 56 convs) runs its 0.25 level in 0.87 ms sliced against 0.38 private and 0.41 for
  the full level (benchmarks/variants_real.py, load 10); ``share_weights=False`` costs it
  2 MiB more.
* ``private``: ORT gets its own copy of the level's weights and optimises at
  ORT_ENABLE_ALL, exactly as a plain ORT session of the source model.

The full level (the first) is ``private`` by default (``full_level="private"``): on x86 the
gap to ORT is the NCHWc layout transform (measured on ResNet-50 and MobileNetV3-Small:
ORT_ENABLE_ALL without ``NchwcTransformer`` is as slow as a shared level), which rewrites
every conv filter into an ORT-owned blocked copy, so no level runs at that speed on weights
it shares.

``memory_budget`` caps the weights the other levels keep resident, as a multiple of the
full level's weight bytes. The default, ``"auto"``, is 1.3x or the full level plus 32 MiB,
whichever is larger: on small models (ShuffleNetV2 x0.5, the If-MobileNetV3) the slice
strategy's Slice nodes cost more than pruning saves (level 0.25 ran 2x slower than the full
level, measured), while their copies cost a few MiB, nothing on a board with 1-8 GB. When their own copies fit (ratios 0, 0.25, 0.5,
0.75 of a CNN take 0.9-1.15x), every level is private and runs at ORT's speed, and memory is
the sum of the levels. Otherwise (many levels) they share the map: levels get copies
smallest first while the total fits, the rest slice. Smallest first because a copy costs
bytes in proportion to the level's size while slicing costs every level about the same
fraction of its run time, so small levels buy the most speed per byte.
``memory_budget=None`` makes every level private (or, with the full level shared, copies
for every level).

``full_level="shared"`` reads the full level in place too (``view``): one copy of the
weights serves all levels within the budget (1.3x the full weights by default instead of
the sum of the levels), every level at ORT_ENABLE_EXTENDED speed (the full level 1.3x
ORT's on ResNet-50, 2.2x on MobileNetV3-Small: benchmarks/results/variants_real.md).
With ``share_weights=False`` every level is private, whatever the budget. All sessions are
built at open, so ``select`` only swaps a pointer.

Device-side: stdlib, numpy and ``backends.ort`` (onnxruntime).
"""
from __future__ import annotations

import builtins
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgert.backends.base import TensorSpec
from edgert.errors import BundleError, ModelError, UsageError
from edgert.tensors import check_feeds

from . import aiofile, values
from .config import Config, ConfigCache, GraphBuilder
from .ranges import EXTERNAL_LOCATION, is_view, slice_ranges

DEFAULT_MEMORY_BUDGET = 1.3  # resident shared weights, as a multiple of the full level's
SMALL_MODEL_ALLOWANCE = 32 * 2**20  # bytes beyond the full level the "auto" budget always allows
FULL_LEVEL = ("private", "shared")  # how the first level gets its weights (module docstring)
DEFAULT_CONFIG_BUDGET = 1.0  # weights of cached per-layer configurations (config.py), same unit


@dataclasses.dataclass(frozen=True)
class Level:
    index: int
    ratio: float  # fraction of channels removed
    kept: dict[str, int]  # channels kept per group id
    weight_bytes: int
    copied_bytes: int  # weight bytes copied at open for this level (its non-contiguous slices)
    strategy: str  # "private", "view", "copy" or "slice" (module docstring)


def _part_bytes(ranges: list[list[list[int]]], itemsize: int) -> int:
    return int(np.prod([sum(b - a for a, b in spans) for spans in ranges], dtype=np.int64)) * itemsize


def resident_bytes(levels: list[dict[str, Any]], tensors: Mapping[str, np.ndarray], strategies: list[str]) -> int:
    """Weight bytes kept with every level open: the largest part of each file tensor that
    some session reads in place, plus the copies."""
    in_place: dict[str, int] = {}
    copies = 0
    for lv, strategy in zip(levels, strategies):
        for spec in lv["params"].values():
            whole = tensors[spec["tensor"]]
            part = _part_bytes(spec["ranges"], whole.itemsize)
            if is_view(spec["ranges"], whole.shape):
                in_place[spec["tensor"]] = max(in_place.get(spec["tensor"], 0), part)
            elif strategy == "copy":
                copies += part
            else:
                in_place[spec["tensor"]] = whole.nbytes
    return sum(in_place.values()) + copies


def anon_resident_bytes() -> int | None:
    """The process's anonymous resident memory (``RssAnon``, Linux), or None where /proc has none."""
    try:
        with builtins.open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def plan(levels: list[dict[str, Any]], tensors: Mapping[str, np.ndarray], budget_bytes: float | None) -> list[str]:
    """Each level's strategy: copies for the levels with the fewest non-contiguous bytes
    first, as long as ``resident_bytes`` stays within ``budget_bytes`` (None: no limit)."""
    def copy_bytes(lv: dict[str, Any]) -> int:
        return sum(_part_bytes(s["ranges"], tensors[s["tensor"]].itemsize) for s in lv["params"].values()
                   if not is_view(s["ranges"], tensors[s["tensor"]].shape))

    sizes = [copy_bytes(lv) for lv in levels]
    strategies = ["view" if n == 0 else "slice" for n in sizes]
    for i in sorted((i for i, n in enumerate(sizes) if n), key=lambda i: (sizes[i], i)):
        trial = strategies[:i] + ["copy"] + strategies[i + 1:]
        if budget_bytes is None or resident_bytes(levels, tensors, trial) <= budget_bytes:
            strategies = trial
    return strategies


class VariantModel:
    """An opened All-in-One file. ``levels`` are ordered from most to least accurate."""

    def __init__(self, path: str | Path, *, threads: int | None = None, share_weights: bool = True,
                 memory_budget: float | str | None = "auto", full_level: str = "private",
                 verify: bool = True, config_budget: float | None = DEFAULT_CONFIG_BUDGET,
                 graph_builder: GraphBuilder | None = None) -> None:
        if isinstance(memory_budget, str) and memory_budget != "auto":
            raise UsageError(f"memory_budget must be a number, None or 'auto', not {memory_budget!r}")
        if memory_budget not in (None, "auto"):  # the full level alone needs 1
            memory_budget = values.number(memory_budget, "memory_budget", low=1, low_ok=True)
        if config_budget is not None:  # 0 keeps only the configuration in use
            config_budget = values.number(config_budget, "config_budget", low_ok=True)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise UsageError(f"threads must be a whole number (0 or None: ONNX Runtime's default), got {threads!r}")
        if full_level not in FULL_LEVEL:
            raise UsageError(f"full_level must be one of {', '.join(FULL_LEVEL)}, not {full_level!r}")
        self.path = Path(path)
        self._file = aiofile.read(self.path, verify=verify)
        meta = self._file.meta
        for lv in meta["levels"]:
            missing = sorted({s["tensor"] for s in lv["params"].values()} - set(self._file.tensors))
            if missing:
                raise BundleError(f"{self.path} level {lv['ratio']} needs tensors {', '.join(missing)}, "
                                  "which are missing", path=str(self.path))
        full = int(meta["levels"][0]["weight_bytes"])
        budget = (None if memory_budget is None
                  else max(DEFAULT_MEMORY_BUDGET * full, full + SMALL_MODEL_ALLOWANCE) if memory_budget == "auto"
                  else memory_budget * full)
        # ORT keeps its own copy of a private level's weights (and may re-lay them out)
        private = len(meta["levels"]) if not share_weights else int(full_level == "private")
        shared = meta["levels"][private:]
        strategies = ["private"] * private + plan(shared, self._file.tensors, budget)
        if private and (budget is None or sum(int(lv["weight_bytes"]) for lv in shared) <= budget):
            strategies = ["private"] * len(strategies)  # the smaller levels' own copies fit the budget
        self.levels: list[Level] = []
        self._sessions = []
        self._threads = threads
        anon_before = anon_resident_bytes()
        for i, (lv, strategy) in enumerate(zip(meta["levels"], strategies)):
            try:
                session, copied = self._load_level(lv, strategy, threads)
            except BundleError:
                # ORT optimisers outside the disabled set read some weight patterns (seen on
                # ConvNeXt's layer scales) from the declared file, which a shared level leaves empty
                if strategy == "private":
                    raise
                strategy = strategies[i] = "private"
                session, copied = self._load_level(lv, strategy, threads)
            self.levels.append(Level(i, float(lv["ratio"]), dict(lv["kept"]), int(lv["weight_bytes"]),
                                     copied, strategy))
            self._sessions.append(session)
        self._file.release_pages()
        after = anon_resident_bytes()
        self.opened_anon_bytes = None if anon_before is None or after is None else after - anon_before
        self.resident_weight_bytes = sum(int(lv["weight_bytes"]) for lv, st in zip(meta["levels"], strategies)
                                         if st == "private") \
            + resident_bytes([lv for lv, st in zip(meta["levels"], strategies) if st != "private"],
                             self._file.tensors, [st for st in strategies if st != "private"])
        self.calibration: dict[str, Any] | None = None
        if "calibration" in self._file.metadata:
            self.calibration = json.loads(self._file.metadata["calibration"])
        first = self._sessions[0]
        self.inputs: list[TensorSpec] = first.inputs
        self.outputs: list[TensorSpec] = first.outputs
        self.level = self.levels[0]
        self._session = first
        self.config: Config | None = None  # the per-layer configuration selected last, None: a level
        self._config_budget = None if config_budget is None else config_budget * full
        self._configs: ConfigCache | None = None
        self._graph_builder = graph_builder

    def _load_level(self, lv: dict[str, Any], strategy: str, threads: int | None) -> tuple[Any, int]:
        """One ORT session for a level and the bytes it copied; weights are map views or copies
        (a private level's views are copied by ORT and not counted here)."""
        from edgert.backends.ort import CallerWeightsSession

        weights, copied = {}, 0
        for name, spec in lv["params"].items():
            whole = self._file.tensors[spec["tensor"]]
            cut = strategy == "slice" and not is_view(spec["ranges"], whole.shape)
            weights[name] = whole if cut else slice_ranges(whole, spec["ranges"])
            if not np.shares_memory(weights[name], whole):
                copied += weights[name].nbytes
        graph = bytes(self._file.tensors[lv["sliced_graph" if strategy == "slice" else "graph"]])
        try:
            return CallerWeightsSession(graph, weights, location=EXTERNAL_LOCATION, threads=threads,
                                        in_place=strategy != "private"), 0 if strategy == "private" else copied
        except ModelError as exc:
            raise BundleError(f"{self.path} level {lv['ratio']}: {exc}", path=str(self.path)) from exc

    @property
    def full_weight_bytes(self) -> int:
        """Weight bytes of the largest level (the original model when the first ratio is 0)."""
        return self.levels[0].weight_bytes

    def select(self, ratio: float) -> Level:
        """Switch to the level with this pruning ratio (cheap: all levels are resident)."""
        ratio = values.number(ratio, "the pruning ratio", low_ok=True)
        for lv in self.levels:
            if abs(lv.ratio - ratio) < 1e-9:
                return self.select_index(lv.index)
        raise UsageError(f"{self.path} has no level with ratio {ratio}; its ratios are "
                         f"{', '.join(f'{lv.ratio:g}' for lv in self.levels)}")

    def select_index(self, index: int) -> Level:
        i = values.index(index, len(self.levels), "the level index")
        sessions = self._sessions  # one read: close() on another thread empties it
        if not sessions:
            raise UsageError(f"{self.path} was closed")
        self.level, self._session, self.config = self.levels[i], sessions[i], None
        return self.level

    @property
    def configs(self) -> ConfigCache:
        """Sessions of per-layer width configurations (``config.ConfigCache``), built on demand;
        their weights stay within ``config_budget`` times the full level's weight bytes.
        Their graphs come from the file, else from ``graph_builder`` (host, ``config_graph.build``)."""
        self._check_open()  # a closed file's tensors are gone: a bare KeyError
        if self._configs is None:
            self._configs = ConfigCache(self._file, self.path, self._config_budget, self._threads,
                                        self._graph_builder)
        return self._configs

    def select_config(self, config: Config) -> Config:
        """Switch to a ``config.Config`` (its session built on first use, then cached); a
        configuration whose graph the file does not store needs ``graph_builder`` (UsageError)."""
        self._check_open()
        if not isinstance(config, Config):
            raise UsageError(f"select_config takes a config.Config, not {type(config).__name__} "
                             "(config.decode(meta, '1:16,2:8,...') makes one from text)")
        self._session = self.configs.session(config)
        self.config = config
        return config

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the selected level or configuration; feeds are checked against the model's inputs."""
        session = self._session  # one read: close() on another thread sets it to None
        if session is None:
            raise UsageError(f"{self.path} was closed")
        check_feeds(self.inputs, feeds)
        return session.run(feeds)  # a call already running keeps its session (and the map) alive

    def _check_open(self) -> None:
        if not self._sessions:
            raise UsageError(f"{self.path} was closed")

    def memory(self) -> dict[str, Any]:
        """Weight memory with every level open (``resident_bytes``: the private levels'
        weights, the map's pages that shared levels read in place, and the copies) and each
        level's strategy. ONNX Runtime's own structures come on top: its graphs, arena,
        blocked conv filters and pre-packed copies of MatMul/Gemm weights (even of weights it
        reads in place), so ``opened_anon_bytes`` is measured: how much the process's anonymous
        resident memory grew while the levels were built (Linux; None elsewhere). On the zoo
        ResNet it was 1.6x ``resident_bytes`` with shared levels, 1.8x private; a MatMul model's
        shared levels 2.7x."""
        self._check_open()  # a closed model holds nothing: its old numbers would mislead
        return {"full_weight_bytes": self.full_weight_bytes, "resident_bytes": self.resident_weight_bytes,
                "copied_bytes": sum(lv.copied_bytes for lv in self.levels),
                "opened_anon_bytes": self.opened_anon_bytes,
                "strategies": [lv.strategy for lv in self.levels]}

    def close(self) -> None:
        self._configs = None
        self._sessions = []
        self._session = None
        self._file.close()

    def __enter__(self) -> "VariantModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(path: str | Path, **options: Any) -> VariantModel:  # noqa: A001 - the issue's public name
    """``edgert.variants.open(path)``: load every level of an All-in-One file."""
    return VariantModel(path, **options)
