"""ONNX Runtime (CPU execution provider)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import BackendError, ModelError

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

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(self._output_names, feeds)
        except Exception as exc:  # ORT raises its own untyped exceptions
            raise BackendError(f"onnxruntime failed to run the model: {exc}") from exc


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
