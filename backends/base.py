"""The small interface every inference engine implements.

A backend has an optional host-only step (``prepare``: turn an ONNX file into the
engine's artifact, e.g. a compiled TVM library) and a device step (``load`` an
artifact into a ``Session`` that runs named numpy inputs). Device code only ever
calls ``load``; ``prepare`` may import compilers that boards do not have.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib.util
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from edgert.errors import EngineMissingError
from edgert.tensors import Dim, TensorSpec  # noqa: F401 (part of the backend interface)

@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """Engine-independent knobs; engines ignore what they cannot honour and say so in ``options``."""

    threads: int | None = None  # None: the engine's default (usually all cores)
    target: str = "host"  # TVM: "host", "aarch64" or a JSON target dict
    cache_dir: Path | None = None  # where compiled artifacts are kept; None: the user cache
    tuning_db: Path | None = None  # TVM MetaSchedule database to apply when compiling
    # Sizes of symbolic input dims (--shape N=4): TVM and LiteRT build the model for them.
    dims: Mapping[str, int] = dataclasses.field(default_factory=dict)


class Session(abc.ABC):
    """A loaded model. ``run`` returns outputs in graph order."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; ``feeds`` were validated by the caller against ``inputs``."""

    def close(self) -> None:
        """Free engine resources; the default has nothing to free."""

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(abc.ABC):
    """An inference engine. Subclasses import their engine lazily, inside methods."""

    name: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that installs the engine
    engine_modules: ClassVar[tuple[str, ...]]  # top-level modules; any one present is enough
    suffixes: ClassVar[tuple[str, ...]] = (".onnx",)  # model files ``load`` accepts

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()

    @classmethod
    def available(cls) -> bool:
        """True when the engine is installed (checked without importing it)."""
        for module in cls.engine_modules:
            try:
                if importlib.util.find_spec(module) is not None:
                    return True
            except (ImportError, ValueError):  # a broken install counts as absent
                continue
        return False

    def require(self) -> None:
        """Raise ``EngineMissingError`` with the install hint when the engine is absent."""
        if not self.available():
            raise EngineMissingError(self.name, self.extra, " or ".join(self.engine_modules))

    @abc.abstractmethod
    def version(self) -> str:
        """The engine's version string, recorded in every result."""

    @abc.abstractmethod
    def load(self, model_path: Path) -> Session:
        """Load a model file (or a prepared artifact) ready to run."""

    def describe(self) -> dict[str, Any]:
        """Name, version and the options actually in force, for the result file."""
        return {"name": self.name, "version": self.version(), "options": self.effective_options()}

    def effective_options(self) -> dict[str, Any]:
        return {"threads": self.options.threads}
