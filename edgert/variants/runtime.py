"""Run an All-in-One file: one ONNX Runtime session per level, all fed from one memory map.

Each level is a physically smaller model. Its weights are slices of the file's tensors:
a slice that is contiguous in memory (the full tensor, or a prefix of its first axis) is
handed to ONNX Runtime as a zero-copy view of the map. Any other slice (a conv weight
pruned on its input axis) is either copied once at open (default), or, with
``slice_at_run``, cut from the whole weight by Slice nodes in the level's graph at every
run: nothing extra stays resident, at the price of a memcpy per run.

With ``share_weights`` (the default) the sessions run at ORT_ENABLE_EXTENDED with the
fusions that rewrite conv weights turned off, so ORT reads those buffers as they are;
without it ORT's full optimisations (NCHWc layouts, BN folding) make private copies per
session, faster on x86 but costing memory. All sessions are built at open, so ``select``
only swaps a pointer.

Device-side: stdlib, numpy and onnxruntime.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import TensorSpec
from edgert.errors import BackendError, BundleError, EngineMissingError, UsageError
from edgert.tensors import check_feeds

from . import aiofile

# Fusions that rewrite conv weights into new buffers (and so would copy the shared ones).
WEIGHT_REWRITING_FUSIONS = ["ConvBNFusion", "ConvMulFusion", "ConvAddFusion"]


@dataclasses.dataclass(frozen=True)
class Level:
    index: int
    ratio: float  # fraction of channels removed
    kept: dict[str, int]  # channels kept per group id
    weight_bytes: int


def is_view(ranges: list[list[list[int]]], shape: tuple[int, ...]) -> bool:
    """True when the kept part is one contiguous block of the C-ordered tensor."""
    cut = [i for i, spans in enumerate(ranges) if spans != [[0, shape[i]]]]
    return not cut or (len(cut) == 1 and len(ranges[cut[0]]) == 1 and all(d == 1 for d in shape[:cut[0]]))


def _slice(tensor: np.ndarray, ranges: list[list[list[int]]]) -> np.ndarray:
    """The level's part of ``tensor``: a view when contiguous, else a compact copy."""
    view = tensor
    for axis, spans in enumerate(ranges):
        if len(spans) == 1:
            a, b = spans[0]
            if (a, b) != (0, tensor.shape[axis]):
                view = view[(slice(None),) * axis + (slice(a, b),)]
        else:
            view = np.concatenate([view[(slice(None),) * axis + (slice(a, b),)] for a, b in spans], axis=axis)
    return view if view.flags.c_contiguous else np.ascontiguousarray(view)


class VariantModel:
    """An opened All-in-One file. ``levels`` are ordered from most to least accurate."""

    def __init__(self, path: str | Path, *, threads: int | None = None, share_weights: bool = True,
                 slice_at_run: bool = False, verify: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineMissingError("onnxruntime", "ort", str(exc)) from exc
        self.path = Path(path)
        self._file = aiofile.read(self.path, verify=verify)
        meta = self._file.meta
        self.levels = [Level(i, float(lv["ratio"]), dict(lv["kept"]), int(lv["weight_bytes"]))
                       for i, lv in enumerate(meta["levels"])]
        self.calibration: dict[str, Any] | None = None
        if "calibration" in self._file.metadata:
            self.calibration = json.loads(self._file.metadata["calibration"])
        self._values: list[Any] = []  # OrtValues must outlive the sessions that use them
        self._shared: dict[str, int] = {}  # per file tensor, the largest view ORT reads from the map
        self.copied_bytes = 0  # weight bytes copied at open (non-contiguous slices)
        self._sessions = [self._load_level(ort, lv, threads, share_weights, slice_at_run)
                          for lv in meta["levels"]]
        self.shared_bytes = sum(self._shared.values())  # weight bytes ORT reads straight from the map
        first = self._sessions[0]
        from backends.ort import tensor_spec

        self.inputs: list[TensorSpec] = [tensor_spec(a) for a in first.get_inputs()]
        self.outputs: list[TensorSpec] = [tensor_spec(a) for a in first.get_outputs()]
        self._output_names = [o.name for o in self.outputs]
        self.level = self.levels[0]
        self._session = first

    def _load_level(self, ort: Any, lv: dict[str, Any], threads: int | None, share_weights: bool,
                    slice_at_run: bool) -> Any:
        """One ORT session for a level, its weights fed from the map (views or copies)."""
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if share_weights
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        names, values = [], []
        for name, spec in lv["params"].items():
            whole = self._file.tensors.get(spec["tensor"])
            if whole is None:
                raise BundleError(f"{self.path} level {lv['ratio']} needs tensor {spec['tensor']!r}, "
                                  "which is missing", path=str(self.path))
            cut_in_graph = slice_at_run and not is_view(spec["ranges"], whole.shape)
            arr = whole if cut_in_graph else _slice(whole, spec["ranges"])
            if np.shares_memory(arr, whole):
                self._shared[spec["tensor"]] = max(self._shared.get(spec["tensor"], 0), arr.nbytes)
            else:
                self.copied_bytes += arr.nbytes
            names.append(name)
            values.append(ort.OrtValue.ortvalue_from_numpy(arr))
        opts.add_external_initializers(names, values)
        self._values.append((values, opts))
        graph = bytes(self._file.tensors[lv["sliced_graph" if slice_at_run else "graph"]])
        disabled = (WEIGHT_REWRITING_FUSIONS if share_weights else []) + (
            ["ConstantFolding"] if slice_at_run else [])  # folding would copy the slices back in
        try:
            return ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=disabled or None)
        except Exception as exc:  # ORT raises its own untyped exceptions
            raise BundleError(f"{self.path} level {lv['ratio']}: onnxruntime cannot load it: {exc}",
                              path=str(self.path)) from exc

    @property
    def full_weight_bytes(self) -> int:
        """Weight bytes of the largest level (the original model when the first ratio is 0)."""
        return self.levels[0].weight_bytes

    def select(self, ratio: float) -> Level:
        """Switch to the level with this pruning ratio (cheap: all levels are resident)."""
        for lv in self.levels:
            if abs(lv.ratio - ratio) < 1e-9:
                return self.select_index(lv.index)
        raise UsageError(f"{self.path} has no level with ratio {ratio}; its ratios are "
                         f"{', '.join(f'{lv.ratio:g}' for lv in self.levels)}")

    def select_index(self, index: int) -> Level:
        self.level = self.levels[index]
        self._session = self._sessions[index]
        return self.level

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the selected level; feeds are checked against the model's inputs."""
        check_feeds(self.inputs, feeds)
        try:
            return self._session.run(self._output_names, feeds)
        except Exception as exc:
            raise BackendError(f"onnxruntime failed to run level {self.level.ratio}: {exc}") from exc

    def memory(self) -> dict[str, int]:
        """Weight memory with every level resident: shared (in the map) plus copies."""
        return {"full_weight_bytes": self.full_weight_bytes, "shared_bytes": self.shared_bytes,
                "copied_bytes": self.copied_bytes, "resident_bytes": self.shared_bytes + self.copied_bytes}

    def close(self) -> None:
        self._sessions = []
        self._session = None
        self._values = []
        self._file.close()

    def __enter__(self) -> "VariantModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(path: str | Path, **options: Any) -> VariantModel:  # noqa: A001 - the issue's public name
    """``edgert.variants.open(path)``: load every level of an All-in-One file."""
    return VariantModel(path, **options)
