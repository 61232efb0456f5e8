"""Host steps that turn a model into the artifact an engine's device session loads.

ExecuTorch's preprocess/runtime split: ``edgert.backends`` only loads artifacts
(``.so`` + sidecar for TVM, ``.tflite`` for LiteRT, ``.onnx`` for ONNX Runtime);
the compilers and converters here need onnx, the TVM compiler or flatbuffers and run
on the host only. The host runner calls ``compile_for``, then the backend's ``load``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgert.backends import BackendOptions, get_backend
from edgert.errors import ModelError, UsageError
from edgert.runner import BUNDLE_SUFFIX


@dataclasses.dataclass(frozen=True)
class Compiled:
    """The file to hand to the engine's ``load`` and what compiling it did (for the result)."""

    path: Path
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)


def needs_compile(backend: str, model_path: Path) -> bool:
    """True when ``backend`` cannot load ``model_path`` as it is (an ONNX file for TVM or LiteRT)."""
    return backend in ("tvm", "tflite") and Path(model_path).suffix == ".onnx"


def compile_for(backend: str, model_path: Path, options: BackendOptions | None = None, *,
                run_here: bool = True,
                samples: Sequence[Mapping[str, np.ndarray]] | None = None) -> Compiled:
    """``model_path`` compiled (TVM) or converted (LiteRT) for ``options``, from the cache when
    it is there; any other file is returned as it is. ``run_here``: the artifact will be
    loaded on this machine, so a cross-compiling TVM target is refused before compiling.
    A model with If/Loop/Scan for TVM or LiteRT becomes a bundle (``compilers.bundled``):
    run it with the ``bundle`` engine; ``samples`` (model inputs, e.g. bench's ``--input``)
    are its compile-time sample run, so loop bodies get static variants for their shapes."""
    model_path = Path(model_path)
    options = options or BackendOptions()
    if model_path.suffix == BUNDLE_SUFFIX and backend != "bundle":
        raise UsageError(f"{model_path.name} is a bundle: its engines were chosen at compile time "
                         "(use --backend bundle, or recompile with edgert compile --backend)")
    if not needs_compile(backend, model_path):
        return Compiled(model_path)
    if not model_path.is_file():
        raise ModelError(f"no such model file: {model_path}", path=str(model_path))
    get_backend(backend, options)  # the engine must be installed: EngineMissingError with the pip hint
    from . import bundled

    if backend == "tflite":
        flow = bundled.control_flow_ops(model_path)
        if flow:  # onnx2tf converts no If/Loop/Scan: LiteRT segments and a host program
            bundle = bundled.compile_bundle(model_path, options, samples, engine="tflite")
            return Compiled(bundle, {"note": f"{model_path.name} has {'/'.join(flow)}: ran as a "
                                             f"LiteRT bundle (edgert compile --backend tflite), {bundle}"})
        try:
            from .litert import convert_cached
        except ImportError as exc:
            raise ModelError(f"converting {model_path.name} to .tflite needs onnx and flatbuffers "
                             f"({exc}); pass a .tflite file", path=str(model_path)) from exc
        return Compiled(convert_cached(model_path, options.cache_dir, options.dims))
    from . import tvm

    if run_here:
        tvm.check_runs_here(options, model_path)
    flow = bundled.control_flow_ops(model_path)
    if flow:  # TVM's importer has no Loop/Scan: the bundle compiler splits the model for it
        bundle = bundled.compile_bundle(model_path, options, samples)
        return Compiled(bundle, {"note": f"{model_path.name} has {'/'.join(flow)}: ran as a TVM "
                                         f"bundle (edgert compile --backend tvm), {bundle}"})
    library, notes = tvm.compile_cached(model_path, options)
    return Compiled(library, notes)


def check_target(target: str) -> None:
    """Refuse a TVM target TVM or its LLVM would not build for (needs TVM installed)."""
    get_backend("tvm", BackendOptions())  # EngineMissingError with the pip hint
    from .tvm_target import resolve_target

    resolve_target(target)


def compile_for_device(backend: str, model_path: Path, options: BackendOptions | None = None) -> Path:
    """The file to push to a device for ``backend``: a LiteRT model is converted here; a TVM
    library needs its sidecar next to it, which only a bundle carries, so an ONNX file for
    TVM is refused with the command that builds one."""
    if backend == "tvm" and needs_compile(backend, model_path):
        raise UsageError("a device runs TVM libraries compiled on this host: compile a bundle "
                         f"(edgert compile {model_path} --backend tvm --target TARGET) and run "
                         "that bundle on the device with --backend bundle")
    return compile_for(backend, model_path, options, run_here=False).path


__all__ = ["Compiled", "check_target", "compile_for", "compile_for_device", "needs_compile"]
