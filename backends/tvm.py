"""Apache TVM (Relax), device step: a compiled ``.so`` and its signature sidecar, run by the VM.

Needs the TVM runtime and numpy only (no onnx, no ``tvm.relax``): the host step that
turns ONNX into the library is ``edgert.compilers.tvm``. ``load`` accepts only ``.so``
files with their ``.json`` sidecar next to them.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import BackendError, BundleError, ModelError

from .base import Backend, BackendOptions, Session, TensorSpec

SIDECAR_SCHEMA = "edgert.tvm.signature/1"


def signature_path(library: Path) -> Path:
    return Path(library).with_suffix(".json")


def read_signature(library: Path) -> tuple[list[TensorSpec], list[TensorSpec], str]:
    """Inputs, outputs and target text from the sidecar next to a compiled library."""
    path = signature_path(library)
    try:
        data = json.loads(path.read_text())
        if data.get("schema") != SIDECAR_SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, expected {SIDECAR_SCHEMA!r}")
        return ([TensorSpec.from_dict(d) for d in data["inputs"]],
                [TensorSpec.from_dict(d) for d in data["outputs"]], str(data["target"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"cannot read the signature {path} of {library}: {exc}; "
                          "recompile the model", path=str(path)) from exc


def read_tuning(library: Path) -> dict[str, Any]:
    """``functions`` (fused kernels), ``tuned_functions`` (those with a database schedule) and
    ``tuning_emulated`` (its records were timed under emulation) from the sidecar; empty for
    libraries compiled before the sidecar recorded them."""
    data = json.loads(signature_path(library).read_text())
    return {key: data[key] for key in ("functions", "tuned_functions", "tuning_emulated") if key in data}


def read_pipeline(library: Path) -> str | None:
    """The lowering pipeline the library was built with (read after ``read_signature`` passed)."""
    return json.loads(signature_path(library).read_text()).get("pipeline")


_ELF_MACHINES = {62: "x86_64", 183: "aarch64"}  # e_machine values edgert builds for


def _foreign_arch(library: Path) -> str | None:
    """The architecture of an ELF library when it is not this machine's, else None."""
    import platform

    try:
        header = Path(library).read_bytes()[:20]
    except OSError:
        return None
    if header[:4] != b"\x7fELF" or len(header) < 20:
        return None
    arch = _ELF_MACHINES.get(int.from_bytes(header[18:20], "little"), "another architecture")
    return None if arch == platform.machine() else arch


def _flatten(value: Any) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        return [value.numpy()]
    return [array for item in value for array in _flatten(item)]


class TvmSession(Session):
    """One loaded library. Safe to share between threads: runs take turns.

    The relax VirtualMachine keeps its register frames in the VM object, so two threads in
    ``main`` at once overwrote each other's (``Check failed: reg < frame->register_file.size()``,
    or a wrong result). A lock costs well under a microsecond per run; a VM per thread would
    not run faster, TVM's kernels already use every core through its one thread pool.
    """

    def __init__(self, vm: Any, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        self._vm = vm
        self._main = vm["main"]  # looked up once, not per run
        self._turn = threading.Lock()
        self.inputs = inputs
        self.outputs = outputs

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import tvm

        self._refuse_empty(feeds)
        try:
            args = [tvm.runtime.tensor(np.asarray(feeds[s.name], order="C")) for s in self.inputs]
            with self._turn:
                return _flatten(self._main(*args))
        except Exception as exc:  # TVM raises TVMError/RuntimeError from the VM
            raise BackendError(f"TVM failed to run the model: {exc}") from exc

    def run_tensors(self, feeds: dict[str, Any]) -> list[Any]:
        """Like ``run``, but TVM tensors pass in and come back as they are (numpy is copied in).

        Chained segments keep their values in TVM memory instead of copying through numpy.
        """
        import tvm

        def flatten(value: Any) -> list[Any]:
            return [value] if hasattr(value, "numpy") else [t for item in value for t in flatten(item)]

        self._refuse_empty(feeds)
        try:
            args = [value if isinstance(value, tvm.runtime.Tensor)
                    else tvm.runtime.tensor(np.asarray(value, order="C"))
                    for value in (feeds[s.name] for s in self.inputs)]
            with self._turn:
                return flatten(self._main(*args))
        except Exception as exc:  # TVM raises TVMError/RuntimeError from the VM
            raise BackendError(f"TVM failed to run the model: {exc}") from exc

    def _refuse_empty(self, feeds: dict[str, Any]) -> None:
        """An input with a 0-size dimension: TVM's kernels read it as if it held data (a batch of
        0 took the other branch of an If and returned uninitialised memory), so it is refused."""
        for spec in self.inputs:
            shape = tuple(getattr(feeds.get(spec.name), "shape", ()) or ())
            if 0 in shape:
                raise BackendError(f"TVM cannot run input {spec.name!r} of shape {list(shape)}: its compiled "
                                   "code does not handle empty tensors (run it with ORT)", input=spec.name)

    def close(self) -> None:
        self._vm = self._main = None


class TvmBackend(Backend):
    name = "tvm"
    extra = "tvm"
    engine_modules = ("tvm",)
    suffixes = (".so",)

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._loaded: dict[str, Any] = {}

    def version(self) -> str:
        import tvm

        return tvm.__version__

    def load(self, model_path: Path) -> TvmSession:
        model_path = Path(model_path)
        self._loaded = {}
        if model_path.suffix != ".so":
            hint = ("compile it on the host first (edgert.compilers.tvm, or edgert compile)"
                    if model_path.suffix == ".onnx" else "pass a library compiled by edgert")
            raise ModelError(f"the tvm backend loads compiled .so libraries, not {model_path.name}; "
                             f"{hint}", path=str(model_path))
        return self._load_library(model_path)

    def _set_thread_env(self) -> None:
        """TVM reads these once, when its thread pool starts (on first use after import).

        Left alone, 0.27 starts 1 thread on a 2-core machine and pins the calling
        thread to core 0, which also confines any engine run later in this process.
        """
        if self.options.threads:
            os.environ["TVM_NUM_THREADS"] = str(self.options.threads)
        else:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            os.environ.setdefault("TVM_NUM_THREADS", str(cores or 1))
        os.environ.setdefault("TVM_BIND_THREADS", "0")

    def _load_library(self, library: Path) -> TvmSession:
        self._set_thread_env()
        import tvm
        from tvm.runtime.vm import VirtualMachine  # in runtime-only TVM too (no relax, no compiler)

        inputs, outputs, target = read_signature(library)
        try:
            vm = VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
        except Exception as exc:
            arch = _foreign_arch(library)
            why = f"it was built for {arch}; run it on such a device" if arch else str(exc)
            raise BundleError(f"TVM cannot load the library {library}: {why}",
                              path=str(library)) from exc
        self._loaded.update(artifact=str(library), target=target, pipeline=read_pipeline(library))
        self._loaded["threads"] = int(tvm.get_global_func("runtime.NumThreads")())
        return TvmSession(vm, inputs, outputs)

    def effective_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"threads_requested": self.options.threads,
                                   "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS"),
                                   "TVM_BIND_THREADS": os.environ.get("TVM_BIND_THREADS"),
                                   **self._loaded}
        options.setdefault("threads", self.options.threads)
        return options
