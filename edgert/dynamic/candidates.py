"""``backend="auto"``'s candidates as bundle files, for timing them on a device (host only).

A segment built for one engine becomes a bundle of one call step, so the device's agent
times the candidates of one decision together (``bench.interleaved``), and ``compile
--keep-candidates DIR`` leaves every timed candidate there with the inputs it was timed on:
``edgert bench FILE... --device ...`` then re-times exactly what auto compared, the same way.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import edgert
from edgert.atomic import replace_file
from edgert.errors import UsageError

from . import engines
from .bundle import write_bundle
from .partition import Segment
from .program import PROGRAM_VERSION

INPUTS_SUFFIX = ".inputs.npz"  # CASE/INPUT arrays, the convention of --cases and --samples
INCOMPLETE = "INCOMPLETE"  # in a --keep-candidates directory while a compile is filling it


@dataclasses.dataclass
class TimedCandidates:
    """Every timed run's milliseconds of each candidate of one decision, and how they were
    taken: blocks of ``block_runs`` runs in ``order`` (candidate names, one per block, over
    all requests), after ``warmup_runs`` untimed runs per candidate and request."""

    block_runs: int
    warmup_runs: int
    samples_ms: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    order: list[str] = dataclasses.field(default_factory=list)
    requests: int = 0
    note: str = ""

    def add(self, order: list[str], samples_ms: dict[str, list[float]], failed: dict[str, str]) -> None:
        """One more interleaved request's blocks (a candidate that failed once stays out)."""
        self.requests += 1
        self.order += order
        self.failed.update(failed)
        for name, samples in samples_ms.items():
            if name not in self.failed:
                self.samples_ms.setdefault(name, []).extend(samples)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``timing`` record (the samples themselves go beside it)."""
        record = {"interleaved": True, "block_runs": self.block_runs, "warmup_runs": self.warmup_runs,
                  "requests": self.requests, "order": self.order}
        return record | ({"note": self.note} if self.note else {})


class BundleTimer(Protocol):
    """Times bundles somewhere other than this process (``edgert.devices.timer.DeviceTimer``)."""

    facts: dict[str, Any]  # device facts of where the times are taken, "emulated" included

    def compare(self, bundles: dict[str, Path], inputs: list[dict[str, np.ndarray]],
                baseline: str) -> TimedCandidates:
        """Each bundle's run times, all timed interleaved, the runs cycling through ``inputs``."""


def segment_bundle(path: Path, seg: Segment, art: engines.Artifact, target: str,
                   target_arch: str) -> Path:
    """``seg`` on ``art``'s engine as a bundle whose program is one call of it."""
    import onnx

    entry, members = engines.manifest_entry(seg, art)
    graph = onnx.load_from_string(seg.model_bytes).graph
    step = {"op": "call", "segment": seg.id, "inputs": seg.inputs, "outputs": seg.outputs}
    manifest = {
        "created_by": f"edgert {edgert.__version__}",
        "source": {"name": f"{seg.id} (an auto candidate)", "sha256": seg.sha256},
        "target": target, "target_arch": target_arch if art.engine == "tvm" else "any",
        "engines": {art.engine: engines.version(art.engine)},
        "inputs": _input_specs(entry, graph), "outputs": [engines.spec(o).to_dict() for o in graph.output],
        "program": {"version": PROGRAM_VERSION,
                    "body": {"inputs": seg.inputs, "steps": [step], "outputs": seg.outputs}},
        "segments": [entry], "consts": {}, "host_folded": [],
    }
    return write_bundle(path, manifest, members)


def _input_specs(entry: dict[str, Any], graph: Any) -> list[dict[str, Any]]:
    """Every segment input's spec: the one it was built for, else the graph's."""
    built = {d["name"]: d for d in entry["input_specs"]}
    return [built.get(i.name) or engines.spec(i).to_dict() for i in graph.input
            if i.name in entry["inputs"]]


def keep(directory: Path | None, bundle: Path, inputs: list[dict[str, np.ndarray]]) -> None:
    """Copy a timed candidate and the inputs it was timed on into ``directory`` (if any), each
    file whole or not at all."""
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(bundle, "rb") as src:
        replace_file(directory / bundle.name, lambda out: shutil.copyfileobj(src, out))
    arrays = {f"case{i}/{name}": np.asarray(value) for i, feeds in enumerate(inputs) for name, value in feeds.items()}
    replace_file(directory / (bundle.stem + INPUTS_SUFFIX), lambda out: np.savez(out, **arrays))


def prepare_keep_dir(directory: Path | None) -> None:
    """Make ``--keep-candidates`` DIR before any work (UsageError when it cannot be a directory:
    a file, a FIFO, a path under a file)."""
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--keep-candidates {directory}: cannot make a directory there "
                         f"({exc.strerror})", path=str(directory)) from None


def mark_incomplete(directory: Path | None, incomplete: bool) -> None:
    """While candidates go into ``directory``, a marker file ``INCOMPLETE`` says some may be
    missing: a compile that fails or is interrupted leaves it; it goes once all are there."""
    if directory is None:
        return
    marker = directory / INCOMPLETE
    if incomplete:  # the directory exists: compile made it first (prepare_keep_dir)
        marker.write_text("edgert compile stopped before it had timed every candidate: this directory "
                          "holds only those timed until then\n")
    else:
        marker.unlink(missing_ok=True)
