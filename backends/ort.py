"""ONNX Runtime (CPU execution provider)."""
from __future__ import annotations

import os

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import BackendError, EngineMissingError, ModelError

from .base import Backend, Session, TensorSpec

# ONNX Runtime type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


def tensor_spec(arg: Any) -> TensorSpec:
    """An ONNX Runtime input/output description as a ``TensorSpec``."""
    shape = tuple(d if isinstance(d, (int, str)) and d is not None else "?" for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


class OrtSession(Session):
    def __init__(self, session: Any) -> None:
        self._session = session
        self.inputs = [tensor_spec(a) for a in session.get_inputs()]
        self.outputs = [tensor_spec(a) for a in session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]
        # ORT's Python ``run`` re-checks the feeds (about 1.5 us a call, a tenth of a small
        # model); callers validate them (check_feeds), so call the binding beneath when it is
        # there: same arguments, and it still rejects wrong dtypes and shapes itself.
        self._run = getattr(session, "_sess", session).run

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs are numpy views of ORT's own buffers (no copy); numpy feeds are not copied."""
        try:
            return self._run(self._output_names, feeds, None)
        except Exception as exc:  # ORT raises its own untyped exceptions
            raise BackendError(f"onnxruntime failed to run the model: {exc}") from exc


# Fusions that rewrite conv weights into new buffers (and so would copy caller-owned ones).
WEIGHT_REWRITING_FUSIONS = ("ConvBNFusion", "ConvMulFusion", "ConvAddFusion", "TransposeOptimizer")

_shared_arena_registered = False


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EngineMissingError("onnxruntime", "ort", str(exc)) from exc
    return ort


def _use_shared_arena(ort: Any, opts: Any) -> None:
    """Make the session allocate from one process-wide CPU arena: by default every session
    keeps its own arena, which holds its peak activation memory for as long as it lives."""
    global _shared_arena_registered
    if not _shared_arena_registered:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, None)
        _shared_arena_registered = True
    opts.add_session_config_entry("session.use_env_allocators", "1")


class CallerWeightsSession(OrtSession):
    """An ORT session whose float initializers are the caller's arrays (e.g. views of one
    memory-mapped file shared by several sessions).

    ``graph`` declares each of them with ``data_location = EXTERNAL`` at ``location``. With
    ``in_place`` they go in through ``SessionOptions.add_initializer``, which ORT reads
    without copying (``add_external_initializers`` copies: checked on ORT 1.32); ORT only
    checks that the declared file exists, so an empty one stands in (were ORT ever to read
    it, loading would fail rather than use wrong weights). In place means
    ORT_ENABLE_EXTENDED without the fusions that rewrite weights and without constant folding
    (which would materialise in-graph weight slices); at ORT_ENABLE_ALL the layout
    transforms read the declared file instead of the given arrays, so without ``in_place``
    ORT gets copies and optimises fully. All such sessions share one CPU arena.
    In place, the caller keeps the arrays unchanged for the session's lifetime (the session
    holds references); otherwise they may go once the session exists.
    """

    def __init__(self, graph: bytes, weights: Mapping[str, np.ndarray], *, location: str,
                 threads: int | None = None, in_place: bool = True) -> None:
        ort = _import_ort()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        _use_shared_arena(ort, opts)
        if not os.environ.get("EDGERT_DEBUG"):  # a load failure is raised as ModelError (the runtime
            opts.log_severity_level = 4  # may then retry a level privately); ORT's own line is noise
        values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a).reshape(np.shape(a)))  # keeps 0-d
                  for a in weights.values()]
        disabled: Sequence[str] = ()
        if in_place:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            for name, value in zip(weights, values):
                opts.add_initializer(name, value)
            disabled = (*WEIGHT_REWRITING_FUSIONS, "ConstantFolding")
        else:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.add_external_initializers(list(weights), values)
        with tempfile.TemporaryDirectory(prefix="edgert-ort-") as stand_in:
            (Path(stand_in) / location).touch()
            opts.add_session_config_entry("session.model_external_initializers_file_folder_path", stand_in)
            try:
                session = ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"],
                                               disabled_optimizers=list(disabled) or None)
            except Exception as exc:  # ORT raises its own untyped exceptions
                raise ModelError(f"onnxruntime cannot load it: {exc}") from exc
        super().__init__(session)
        self._values = values if in_place else []  # ORT read them in place, or copied them


class OrtBackend(Backend):
    name = "ort"
    extra = "ort"
    engine_modules = ("onnxruntime",)

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def session_options(self) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not os.environ.get("EDGERT_DEBUG"):  # graph-cleanup warnings on exported models, and
            opts.log_severity_level = 4  # run errors logged besides the exception we report: --debug
        if self.options.threads:
            opts.intra_op_num_threads = self.options.threads
            opts.inter_op_num_threads = 1
        return opts

    def load(self, model_path: Path) -> OrtSession:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=self.session_options(),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load {model_path}: {exc}", path=str(model_path)) from exc
        return OrtSession(session)

    def effective_options(self) -> dict[str, Any]:
        return {"threads": self.options.threads, "providers": ["CPUExecutionProvider"],
                "graph_optimization_level": "ORT_ENABLE_ALL"}
