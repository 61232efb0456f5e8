"""The whole-model candidate of ``backend="auto"`` (host only).

ONNX Runtime runs If/Loop/Scan itself, so the normalised model can also be one ORT
segment behind a one-step host program. For small networks the partitioned bundle's
per-call cost (a few microseconds per segment) outweighs the work, and this candidate
wins; the compiler times both and keeps the faster. The call step lists the control-flow
nodes the engine runs internally (``control_flow``): the host cannot see which path they
take, so a run's path is reported as ``whole_model=hidden`` (``Trace.key``).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import EdgertError, ModelError

from . import engines
from .bundle import write_bundle
from .normalize import CONTROL_FLOW, NormalizedModel, iter_graphs
from .partition import Segment
from .program import PROGRAM_VERSION
from .runtime import load

WHOLE_ID = "whole_model"
MIN_ROUNDS = 15  # timed passes over all probe inputs, per candidate
MIN_SECONDS = 0.2  # ... and at least this long, so tiny models get many rounds


def whole_segment(norm: NormalizedModel) -> Segment:
    """The normalised model as one segment (its graph inputs minus initializers)."""
    graph = norm.model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in inits]
    return Segment(WHOLE_ID, norm.model.SerializeToString(deterministic=True), inputs,
                   [o.name for o in graph.output], [n.name for n in graph.node],
                   [n.op_type for n in graph.node])


def control_flow_nodes(norm: NormalizedModel) -> list[str]:
    """Names of every If/Loop/Scan node, nested ones included, in graph order."""
    graphs = [norm.model.graph] + [sub for _, sub in iter_graphs(norm.model.graph)]
    return [n.name for g in graphs for n in g.node if n.op_type in CONTROL_FLOW]


def whole_program(seg: Segment, control_flow: list[str]) -> dict[str, Any]:
    """A host program of one call step that runs ``seg`` with all of the model's control flow."""
    step = {"op": "call", "segment": seg.id, "inputs": seg.inputs, "outputs": seg.outputs,
            "control_flow": control_flow}
    return {"version": PROGRAM_VERSION,
            "body": {"inputs": seg.inputs, "steps": [step], "outputs": seg.outputs}}


def choose(norm: NormalizedModel, manifest: dict[str, Any], members: dict[str, bytes],
           inputs: list[dict[str, np.ndarray]], threads: int | None
           ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The faster of the partitioned bundle (``manifest``, ``members``) and the whole model
    on ORT, timed here on ``inputs``; the result's manifest says which, why, and both times."""
    seg = whole_segment(norm)
    try:
        art = engines.prepare("ort", seg, "host", None)
    except ModelError as exc:
        return dict(manifest, auto={"chosen": "partitioned",
                                    "reason": f"the whole model does not load in ORT: {exc.message}"}), members
    if not inputs:
        return dict(manifest, auto={"chosen": "partitioned", "reason": "no seeded sample input ran "
                                    "through the model, so the whole model could not be timed"}), members
    art.note = {"chosen": "ort", "reason": "the whole model is one ORT segment (backend=auto)"}
    entry, whole_members = engines.manifest_entry(seg, art)
    whole = dict(manifest, target_arch="any", engines={"ort": engines.version("ort")},
                 program=whole_program(seg, control_flow_nodes(norm)), segments=[entry],
                 consts={}, host_folded=[])
    times: dict[str, float] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgert-auto-") as tmp:
        for name, (man, mem) in (("whole_model", (whole, whole_members)),
                                 ("partitioned", (manifest, members))):
            try:
                times[name] = time_bundle_ms(write_bundle(Path(tmp) / f"{name}.edgert", man, mem),
                                             inputs, threads)
            except EdgertError as exc:
                failed[name] = exc.message.strip().splitlines()[0][:300]
    chosen = min(times, key=times.get) if times else "partitioned"
    record: dict[str, Any] = {
        "chosen": chosen, "measured_ms": times, "probe_inputs": len(inputs),
        "partitioned_segments": len(manifest["segments"]),
        "reason": ("faster over the seeded sample inputs on this machine at compile time" if
                   len(times) == 2 else "the other candidate failed to run (see timing_failed)"
                   if times else "neither candidate could be timed"),
    }
    if failed:
        record["timing_failed"] = failed
    if chosen == "whole_model":
        return dict(whole, auto=record), whole_members
    return dict(manifest, auto=record), members


def time_bundle_ms(bundle: Path, inputs: list[dict[str, np.ndarray]],
                   threads: int | None) -> float:
    """Milliseconds per run of a bundle, averaged over ``inputs`` (median over rounds).

    Each round runs every input once, so every path the inputs take is weighted by how
    often the inputs take it, and the host program's own cost is included.
    """
    with load(bundle, threads=threads) as runtime:
        for feeds in inputs:  # warm-up: first-run allocations, thread pools
            runtime.run(feeds)
        rounds: list[int] = []
        until = time.perf_counter() + MIN_SECONDS
        while len(rounds) < MIN_ROUNDS or time.perf_counter() < until:
            start = time.perf_counter_ns()
            for feeds in inputs:
                runtime.run(feeds)
            rounds.append(time.perf_counter_ns() - start)
    return statistics.median(rounds) / len(inputs) / 1e6
