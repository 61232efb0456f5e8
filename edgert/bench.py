"""``edgert bench`` on the host: measure a model with one or more backends and build result files."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edgert import device_facts, result, run_metadata
from edgert import progress as live
from edgert.backends import BackendOptions
from edgert.compilers import check_target, compile_for, compile_for_device, needs_compile
from edgert.devices.address import DeviceAddress
from edgert.errors import EdgertError, UsageError
from edgert.runner import BUNDLE_SUFFIX, prepared_session, run_benchmark
from edgert.settings import BenchSettings
from edgert.tensors import load_feeds


@dataclasses.dataclass(frozen=True)
class BenchJob:
    """One model on one or more backends with one set of settings."""

    model: Path
    backends: tuple[str, ...]
    settings: BenchSettings
    dims: Mapping[str, int] = dataclasses.field(default_factory=dict)
    input_files: Mapping[str, Path] = dataclasses.field(default_factory=dict)
    target: str = "host"
    cache_dir: Path | None = None
    tuning_db: Path | None = None
    cases: tuple[tuple[str, Mapping[str, np.ndarray]], ...] = ()  # runs cycle through these inputs

    def __post_init__(self) -> None:
        if self.target != "host" and "tvm" not in self.backends:
            raise UsageError(f"--target is TVM's; --backend {', '.join(self.backends)} runs the model as given "
                             "(leave out --target, or add --backend tvm)")

    def options(self) -> BackendOptions:
        return BackendOptions(threads=self.settings.threads, target=self.target,
                              cache_dir=self.cache_dir, tuning_db=self.tuning_db, dims=dict(self.dims))


ProgressFactory = Callable[[str], Callable[[int, float], None]]


@dataclasses.dataclass(frozen=True)
class EngineFailure:
    """One engine of a multi-engine bench that could not prepare or run the model."""

    backend: str
    stage: str  # "prepare" (compile, convert, import, load) or "measure"
    error: EdgertError

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "stage": self.stage, "code": self.error.code,
                "message": self.error.message}


def bench(job: BenchJob, device: DeviceAddress | None = None,
          progress: ProgressFactory | None = None,
          failures: list[EngineFailure] | None = None) -> list[dict[str, Any]]:
    """Run every backend of ``job`` on ``device`` (this machine by default); results in backend order.

    On a remote device the agent runs the timing loop and sends raw samples; the statistics
    are computed here with the same code as local runs. When several backends run, each
    result's ``agreement`` block holds its max abs/rel difference from the first backend's
    outputs on the same inputs.

    With ``failures`` (a list to fill), an engine that fails is recorded there and the
    others still run; every engine's compile/convert (and, locally, a first load) comes
    before any timing, so one that cannot take the model fails first. Without it the
    first error is raised.
    """
    feeds = load_feeds(job.input_files)
    if "tvm" in job.backends and needs_compile("tvm", job.model):
        check_target(job.target)  # a bad target is refused before anything is shown as compiling
    if device is None or device.scheme == "local":
        facts = device_facts.collect("local")

        compile_ms: dict[str, float] = {}
        samples = [feeds] if feeds else None  # a bundle's sample run sees the shapes measured

        def compiled_for(name: str) -> Any:
            """The host compile step (cached), shown as it runs; the first call's time is kept."""
            started = time.perf_counter()
            with live.step(f"{name}: compiling {job.model.name} (cached after the first time)"):
                compiled = compile_for(name, job.model, job.options(), samples=samples)
            compile_ms.setdefault(name, (time.perf_counter() - started) * 1e3)
            return compiled

        def prepare(name: str) -> None:  # compile/convert (cached), then load once
            compiled = compiled_for(name)
            with prepared_session(compiled.path, _engine(name, compiled.path), job.settings,
                                  options=job.options(), dims=_run_dims(job, compiled.path),
                                  feeds=feeds):
                pass

        def measure(name: str) -> dict[str, Any]:
            compiled = compiled_for(name)  # host step (timed once), then the session
            measured = run_metadata.around(lambda: run_benchmark(
                compiled.path, _engine(name, compiled.path), job.settings, options=job.options(),
                dims=_run_dims(job, compiled.path), feeds=feeds,
                progress=progress(name) if progress else None, cases=job.cases))
            measured["backend"]["name"] = name  # a TVM bundle of a control-flow model is still tvm
            measured["backend"]["options"].update(compiled.notes)
            measured["compile_ms"] = compile_ms[name]
            return measured
        return _collect(job, facts, measure, failures=failures,
                        prepare=prepare if failures is not None else None)

    if job.tuning_db is not None:  # the device would compile without it, silently untuned
        raise UsageError("--tuning-db is applied where TVM compiles, on this host; for a device, "
                         "compile a bundle here (edgert compile MODEL --backend tvm --target ... "
                         "--tuning-db DB) and bench that bundle on the device")
    artifacts: dict[str, Path] = {}
    compile_ms: dict[str, float] = {}
    for name in job.backends:
        started = time.perf_counter()
        try:
            with live.step(f"{name}: compiling {job.model.name} for the device (cached after the first time)"):
                artifacts[name] = compile_for_device(name, job.model, job.options())
        except EdgertError as exc:
            if failures is None:
                raise
            failures.append(EngineFailure(name, "prepare", exc))
        compile_ms[name] = (time.perf_counter() - started) * 1e3
    from edgert.device_agents.protocol import pack_array
    from edgert.devices.connect import open_client

    params = {"settings": job.settings.to_dict(), "dims": dict(job.dims), "target": job.target,
              "feeds": {k: pack_array(v) for k, v in feeds.items()},
              "cases": [[name, {k: pack_array(np.asarray(v)) for k, v in case.items()}] for name, case in job.cases]}
    with open_client(device) as client:
        def measure_remote(name: str) -> dict[str, Any]:
            measured = client.bench(artifacts[name], _engine(name, artifacts[name]), params,
                                    progress(name) if progress else None)
            measured["backend"]["name"] = name  # a LiteRT bundle of a control-flow model is still tflite
            return {**measured, "compile_ms": compile_ms[name]}
        return _collect(job, None, measure_remote, emulated=device.emulated, failures=failures,
                        names=list(artifacts))


def _run_dims(job: BenchJob, artifact: Path) -> Mapping[str, int]:
    """The --shape sizes for the session: none for a library or .tflite built for them
    (``compilers.shapes`` checked the names against the model)."""
    return {} if artifact.suffix in (".so", ".tflite") and artifact != job.model else job.dims


def _engine(name: str, artifact: Path) -> str:
    return "bundle" if artifact.suffix == BUNDLE_SUFFIX else name


def _collect(job: BenchJob, facts: dict[str, Any] | None,
             measure: Callable[[str], dict[str, Any]], emulated: bool = False,
             failures: list[EngineFailure] | None = None,
             prepare: Callable[[str], None] | None = None,
             names: list[str] | None = None) -> list[dict[str, Any]]:
    names = list(job.backends if names is None else names)
    if prepare is not None and failures is not None:
        for name in list(names):
            try:
                prepare(name)
            except EdgertError as exc:
                failures.append(EngineFailure(name, "prepare", exc))
                names.remove(name)
    results: list[dict[str, Any]] = []
    reference: tuple[str, list[np.ndarray]] | None = None
    for name in names:
        try:
            measured = measure(name)
        except EdgertError as exc:
            if failures is None:
                raise
            failures.append(EngineFailure(name, "measure", exc))
            continue
        outputs = measured.pop("first_outputs")
        device = measured.pop("device", None) or facts
        device["emulated"] = bool(device.get("emulated") or emulated)
        extra: dict[str, Any] = {}
        if reference is None:
            reference = (name, outputs)
        else:
            extra["agreement"] = agreement(reference[1], outputs, reference[0])
        results.append(result.build(model_path=job.model, device=device, settings=job.settings,
                                    measured=measured, extra=extra))
    if failures:
        for res in results:
            res["engine_failures"] = [f.to_dict() for f in failures]
    return results


def agreement(reference: list[np.ndarray], outputs: list[np.ndarray], against: str) -> dict[str, Any]:
    """Max abs and rel difference between two backends' outputs for the same inputs."""
    abs_err = rel_err = 0.0
    for ref, out in zip(reference, outputs):
        ref = np.asarray(ref, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        if ref.ndim == 4 and out.shape == tuple(ref.shape[i] for i in (0, 2, 3, 1)):
            out = out.transpose(0, 3, 1, 2)  # an NHWC engine output (LiteRT) of an NCHW model
        if ref.shape != out.shape:
            return {"against": against, "shape_mismatch": [list(ref.shape), list(out.shape)]}
        diff = np.abs(ref - out)
        abs_err = max(abs_err, float(diff.max(initial=0.0)))
        rel_err = max(rel_err, float((diff / np.maximum(np.abs(ref), 1e-12)).max(initial=0.0)))
    return {"against": against, "max_abs": abs_err, "max_rel": rel_err}
