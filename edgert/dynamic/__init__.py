"""Dynamic ONNX networks: static segments compiled per engine + a host control-flow program.

Host: ``compile(model) -> bundle path`` and ``validate``. Device: ``load(bundle) -> Runtime``
(numpy and the engines only; onnx is imported only inside host functions).
"""
from __future__ import annotations

from .compiler import compile
from .program import Trace
from .runtime import Runtime, inspect, load
from .validate import validate

__all__ = ["compile", "load", "inspect", "validate", "Runtime", "Trace"]
