"""Inference engines behind one interface, imported lazily by name.

Nothing outside this package imports onnxruntime, tvm or LiteRT directly.
"""
from __future__ import annotations

import importlib

from edgert.errors import UsageError

from .base import Backend, BackendOptions, Session, TensorSpec

# name -> "module:Class"; modules import their engine only when used.
REGISTRY: dict[str, str] = {
    "ort": "edgert.backends.ort:OrtBackend",
    "tvm": "edgert.backends.tvm:TvmBackend",
    "tflite": "edgert.backends.tflite:TfliteBackend",
    "null": "edgert.backends.null:NullBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The backend class registered under ``name`` (no engine import yet)."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown backend {name!r}; choose one of: {', '.join(sorted(REGISTRY))}",
            backend=name,
        ) from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_backend(name: str, options: BackendOptions | None = None) -> Backend:
    """Instantiate a backend; raises ``EngineMissingError`` with the pip hint if absent."""
    cls = backend_class(name)
    backend = cls(options)
    backend.require()
    return backend


def available_backends() -> list[str]:
    """Names of the backends whose engine imports here (the agent advertises these)."""
    return [name for name in REGISTRY if backend_class(name).available()]


__all__ = ["Backend", "BackendOptions", "Session", "TensorSpec", "REGISTRY",
           "backend_class", "get_backend", "available_backends"]
