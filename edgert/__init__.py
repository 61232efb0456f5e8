"""edgert: compile, deploy and measure neural networks on Linux edge boards."""
from __future__ import annotations

import os

__version__ = "0.1.0"

# ONNX Runtime 1.32's Linux build starts Microsoft's telemetry when it is imported: it writes a
# device id and an event database under ~/.cache/Microsoft (outside an agent's store, on a
# board) unless this is set first. Every edgert module imports this package before onnxruntime;
# a user's own setting wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def __getattr__(name: str) -> object:
    """``edgert.compile`` / ``edgert.load`` without importing the compiler at ``import edgert``."""
    if name in ("compile", "load"):
        from edgert import dynamic

        return getattr(dynamic, name)
    raise AttributeError(f"module 'edgert' has no attribute {name!r}")
