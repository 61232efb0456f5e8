"""edgert: compile, deploy and measure neural networks on Linux edge boards."""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``edgert.compile`` / ``edgert.load`` without importing the compiler at ``import edgert``."""
    if name in ("compile", "load"):
        from edgert import dynamic

        return getattr(dynamic, name)
    raise AttributeError(f"module 'edgert' has no attribute {name!r}")
