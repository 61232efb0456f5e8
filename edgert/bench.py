"""``edgert bench`` on the host: measure a model with one or more backends and build result files."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edgert import device_facts, result
from edgert.backends import BackendOptions
from edgert.compilers import compile_for, compile_for_device
from edgert.devices.address import DeviceAddress
from edgert.errors import UsageError
from edgert.runner import run_benchmark
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

    def options(self) -> BackendOptions:
        return BackendOptions(threads=self.settings.threads, target=self.target,
                              cache_dir=self.cache_dir, tuning_db=self.tuning_db)


ProgressFactory = Callable[[str], Callable[[int, float], None]]


def bench(job: BenchJob, device: DeviceAddress | None = None,
          progress: ProgressFactory | None = None) -> list[dict[str, Any]]:
    """Run every backend of ``job`` on ``device`` (this machine by default); results in backend order.

    On a remote device the agent runs the timing loop and sends raw samples; the statistics
    are computed here with the same code as local runs. When several backends run, each
    result's ``agreement`` block holds its max abs/rel difference from the first backend's
    outputs on the same inputs.
    """
    feeds = load_feeds(job.input_files)
    if device is None or device.scheme == "local":
        facts = device_facts.collect("local")

        def measure(name: str) -> dict[str, Any]:
            compiled = compile_for(name, job.model, job.options())  # host step, then the session
            measured = run_benchmark(compiled.path, name, job.settings, options=job.options(),
                                     dims=job.dims, feeds=feeds,
                                     progress=progress(name) if progress else None)
            measured["backend"]["options"].update(compiled.notes)
            return measured
        return _collect(job, facts, measure)

    if job.tuning_db is not None:  # the device would compile without it, silently untuned
        raise UsageError("--tuning-db is applied where TVM compiles, on this host; for a device, "
                         "compile a bundle here (edgert compile MODEL --backend tvm --target ... "
                         "--tuning-db DB) and bench that bundle on the device")
    artifacts = {name: compile_for_device(name, job.model, job.options()) for name in job.backends}
    from edgert.device_agents.protocol import pack_array
    from edgert.devices.connect import open_client

    params = {"settings": job.settings.to_dict(), "dims": dict(job.dims), "target": job.target,
              "feeds": {k: pack_array(v) for k, v in feeds.items()}}
    with open_client(device) as client:
        def measure_remote(name: str) -> dict[str, Any]:
            return client.bench(artifacts[name], name, params, progress(name) if progress else None)
        return _collect(job, None, measure_remote, emulated=device.emulated)


def _collect(job: BenchJob, facts: dict[str, Any] | None,
             measure: Callable[[str], dict[str, Any]], emulated: bool = False) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    reference: list[np.ndarray] | None = None
    for name in job.backends:
        measured = measure(name)
        outputs = measured.pop("first_outputs")
        device = measured.pop("device", None) or facts
        device["emulated"] = bool(device.get("emulated") or emulated)
        extra: dict[str, Any] = {}
        if reference is None:
            reference = outputs
        else:
            extra["agreement"] = agreement(reference, outputs, job.backends[0])
        results.append(result.build(model_path=job.model, device=device, settings=job.settings,
                                    measured=measured, extra=extra))
    return results


def agreement(reference: list[np.ndarray], outputs: list[np.ndarray], against: str) -> dict[str, Any]:
    """Max abs and rel difference between two backends' outputs for the same inputs."""
    abs_err = rel_err = 0.0
    for ref, out in zip(reference, outputs):
        ref = np.asarray(ref, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            return {"against": against, "shape_mismatch": [list(ref.shape), list(out.shape)]}
        diff = np.abs(ref - out)
        abs_err = max(abs_err, float(diff.max(initial=0.0)))
        rel_err = max(rel_err, float((diff / np.maximum(np.abs(ref), 1e-12)).max(initial=0.0)))
    return {"against": against, "max_abs": abs_err, "max_rel": rel_err}
