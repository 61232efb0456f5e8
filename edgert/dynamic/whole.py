"""The whole-model candidate of ``backend="auto"`` (host only).

ONNX Runtime runs If/Loop/Scan itself, so the normalised model can also be one ORT
segment behind a one-step host program. For small networks the partitioned bundle's
per-call cost (a few microseconds per segment) outweighs the work, and this candidate
wins; the compiler times both and keeps the faster. The call step lists the control-flow
nodes the engine runs internally (``control_flow``): the host cannot see which path they
take, so a run's path is reported as ``whole_model=hidden`` (``Trace.key``).
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import EdgertError, ModelError

from . import auto_rule, engines
from .bundle import write_bundle
from .candidates import BundleTimer, keep
from .graphs import iter_graphs
from .normalize import CONTROL_FLOW, NormalizedModel
from .partition import Segment
from .program import PROGRAM_VERSION
from .runtime import load

WHOLE_ID = "whole_model"
# The partitioned bundle is kept only when it beats the whole model by more than this
# fraction: a closer race is timing noise, and the whole model is the ORT baseline that
# auto must not lose to (on a device, auto_rule also asks for a significant difference).
MARGIN = auto_rule.MARGIN
BLOCKS = 3  # alternating timing blocks per candidate
BLOCK_ROUNDS = 5  # timed passes over all probe inputs per block ...
BLOCK_SECONDS = 0.07  # ... and at least this long, so tiny models get many rounds


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
           inputs: list[dict[str, np.ndarray]], threads: int | None,
           timer: BundleTimer | None = None, keep_dir: Path | None = None
           ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The faster of the partitioned bundle (``manifest``, ``members``) and the whole model
    on ORT, timed on ``inputs`` here or by ``timer`` on its device; the result's manifest
    says which, why, and both times. ``keep_dir`` receives both candidates and the inputs."""
    seg = whole_segment(norm)
    try:
        art = engines.prepare("ort", seg, "host", None)
    except ModelError as exc:
        return dict(manifest, auto={"chosen": "partitioned",
                                    "reason": f"the whole model does not load in ORT: {exc.message}"}), members
    if not inputs:
        return dict(manifest, auto={"chosen": "partitioned", "reason": "no sample input ran "
                                    "through the model, so the whole model could not be timed"}), members
    art.note = {"chosen": "ort", "reason": "the whole model is one ORT segment (backend=auto)"}
    entry, whole_members = engines.manifest_entry(seg, art)
    whole = dict(manifest, target_arch="any", engines={"ort": engines.version("ort")},
                 program=whole_program(seg, control_flow_nodes(norm)), segments=[entry],
                 consts={}, host_folded=[])
    with tempfile.TemporaryDirectory(prefix="edgert-auto-") as tmp:
        bundles = {name: write_bundle(Path(tmp) / f"{name}.edgert", man, mem)
                   for name, (man, mem) in (("whole_model", (whole, whole_members)),
                                            ("partitioned", (manifest, members)))}
        for bundle in bundles.values():
            keep(keep_dir, bundle, inputs)
        if timer is None:
            times, failed = time_bundles_ms(bundles, inputs, threads)
            samples: dict[str, list[float]] = {}
        else:
            timed = timer.compare(bundles, inputs, WHOLE_ID)
            samples, failed = timed.samples_ms, timed.failed
            times = {name: statistics.median(s) for name, s in samples.items()}
    extra: dict[str, Any] = {}
    if len(times) == 2 and timer is None:
        chosen = ("partitioned" if times["partitioned"] < (1 - MARGIN) * times["whole_model"]
                  else "whole_model")
        reason = ("fastest round over the sample inputs (compile --samples, else seeded random "
                  "ones) on this machine at compile time (the partitioned bundle must be more "
                  f"than {MARGIN:.0%} faster to be kept)")
    elif len(times) == 2:
        decision = auto_rule.decide(WHOLE_ID, samples)
        chosen = decision.chosen
        reason = ("runs cycling through the sample inputs (compile --samples, else seeded random "
                  f"ones) on the device in timed_on at compile time, interleaved: {decision.reason}")
        extra = {"samples_ms": samples, "decision": decision.to_dict(), "timing": timed.to_dict()}
    else:
        chosen = next(iter(times), "partitioned")
        reason = ("the other candidate failed to run (see timing_failed)" if times
                  else "neither candidate could be run")
    record: dict[str, Any] = {
        "chosen": chosen, "measured_ms": times, "probe_inputs": len(inputs),
        "partitioned_segments": len(manifest["segments"]), "reason": reason, **extra,
    }
    if failed:
        record["timing_failed"] = failed
    if chosen == "whole_model":
        return dict(whole, auto=record), whole_members
    return dict(manifest, auto=record), members


def time_bundles_ms(bundles: dict[str, Path], inputs: list[dict[str, np.ndarray]],
                    threads: int | None) -> tuple[dict[str, float], dict[str, str]]:
    """Milliseconds per run of each bundle over ``inputs``, and why any could not be run.

    A round runs every input once, so every path the inputs take is weighted by how often
    they take it, host program included. The candidates' rounds come in alternating blocks,
    so both see the same machine load, and each one's fastest round counts: on a busy
    machine that is the round other processes disturbed least. Only the timed candidate is
    loaded during its block: another one's idle engine thread pools (one per ORT session)
    would compete for the cores, which a deployed bundle never sees.
    """
    failed: dict[str, str] = {}
    fastest = {name: math.inf for name in bundles}
    for _ in range(BLOCKS):
        for name, path in bundles.items():
            if name in failed:
                continue
            try:
                with load(path, threads=threads) as runtime:
                    for feeds in inputs:  # warm-up (first-run allocations), and proof that it runs
                        runtime.run(feeds)
                    fastest[name] = min(fastest[name], _fastest_round_ns(runtime, inputs))
            except EdgertError as exc:
                failed[name] = exc.message.strip().splitlines()[0][:300]
                del fastest[name]
    return {name: ns / len(inputs) / 1e6 for name, ns in fastest.items()}, failed


def _fastest_round_ns(runtime: Any, inputs: list[dict[str, np.ndarray]]) -> float:
    until = time.perf_counter() + BLOCK_SECONDS
    best, rounds = math.inf, 0
    while rounds < BLOCK_ROUNDS or time.perf_counter() < until:
        start = time.perf_counter_ns()
        for feeds in inputs:
            runtime.run(feeds)
        best = min(best, time.perf_counter_ns() - start)
        rounds += 1
    return best
