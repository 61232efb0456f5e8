"""Dynamic ONNX networks: static segments compiled per engine + a host control-flow program.

Device: ``load(bundle) -> Runtime`` and ``inspect`` (numpy and the engines' runtimes only),
imported with this package. Host: ``compile(model) -> bundle path`` and ``validate``, which
need onnx and the compilers; they are imported on first use (PEP 562), so loading a bundle
never imports the partitioner, the specialiser or a compiler.
"""
from __future__ import annotations

import importlib
from typing import Any

from .program import Trace
from .runtime import Runtime, inspect, load

_HOST = {"compile": ".compiler", "validate": ".validate"}  # name -> module defining it


def __getattr__(name: str) -> Any:
    if name in _HOST:
        value = getattr(importlib.import_module(_HOST[name], __name__), name)
        # importing .validate set this package's ``validate`` to the submodule: the function
        # replaces it, or the next lookup would return the module
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["compile", "load", "inspect", "validate", "Runtime", "Trace"]
