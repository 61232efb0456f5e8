"""edgert: compile, deploy and measure neural networks on Linux edge boards."""
from __future__ import annotations

__version__ = "0.1.0"
