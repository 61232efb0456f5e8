"""A backend that does nothing, to measure the harness's own overhead (MLPerf's null SUT)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Backend, Session, TensorSpec


NO_ENGINE = "none (harness overhead only)"


class NullSession(Session):
    def __init__(self) -> None:
        self.inputs = [TensorSpec("x", (1,), "float32")]
        self.outputs = [TensorSpec("y", (1,), "float32")]
        self._out = np.zeros(1, np.float32)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self._out]


class NullBackend(Backend):
    name = "null"
    extra = "dev"
    engine_modules = ("numpy",)

    def version(self) -> str:
        """No engine, so no engine version (numpy only holds the output; its version would
        claim an engine that is not there)."""
        return NO_ENGINE

    def load(self, model_path: Path) -> NullSession:
        return NullSession()
