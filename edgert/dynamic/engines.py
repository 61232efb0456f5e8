"""Per-engine host steps for segments: build the artifact, time it, describe it (host only)."""
from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgert.backends import BackendOptions, TensorSpec, backend_class, get_backend
from edgert.compilers.tvm import compile_cached
from edgert.errors import BackendError, EdgertError, InputError, ModelError, UsageError

from .bundle import sha256
from .partition import Partition, Segment
from .program import Interpreter
from .specialize import specialize
from .specialize_calls import call_shapes

TIMING_RUNS = 15
PROBE_RUNS = 8  # seeded sample runs of the whole program (compile-time, ORT)


@dataclasses.dataclass
class Artifact:
    """What one engine made of one segment: bundle members and which one to load."""

    engine: str
    artifact: str  # member name handed to the engine's ``load``
    members: dict[str, bytes]
    note: dict[str, Any] = dataclasses.field(default_factory=dict)
    specialized: dict[str, Any] = dataclasses.field(default_factory=dict)  # TVM: what specialize did
    # The input specs the artifact was built for, when narrower than the segment's own
    # (a rank taken from the sample run): the runtime then refuses other ranks clearly.
    input_specs: list[dict[str, Any]] | None = None
    tuning: dict[str, Any] | None = None  # TVM with a tuning database: which kernels it tuned


def available(engine: str) -> bool:
    try:
        return backend_class(engine).available()
    except ImportError:  # the backend module itself is not there yet
        return False


def candidates(backend: str, target: str) -> list[str]:
    """Engines to try for each segment."""
    if backend != "auto":
        if not available(backend):
            get_backend(backend)  # raises EngineMissingError with the pip hint
        return [backend]
    found = [e for e in ("tvm", "ort") if available(e)]
    if not found:
        raise UsageError("no engine for dynamic compilation is installed: "
                         "pip install 'edgert[ort]' or 'edgert[tvm]'")
    return found


def version(engine: str) -> str:
    return get_backend(engine).version()


def spec(info: Any) -> TensorSpec:
    """TensorSpec of an ONNX ValueInfo: symbolic dims by name, unknown dims as -1."""
    from onnx import helper

    tensor = info.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or -1)
                 for d in tensor.shape.dim)
    return TensorSpec(info.name, dims, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name)


def input_specs(seg: Segment) -> list[dict[str, Any]]:
    """Specs of the segment's inputs whose rank is known (the runtime checks those)."""
    import onnx

    model = onnx.load_from_string(seg.model_bytes)
    return [spec(i).to_dict() for i in model.graph.input if i.type.tensor_type.HasField("shape")]


def manifest_entry(seg: Segment, art: Artifact) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The segment's manifest record and the bundle members it needs (its ONNX always)."""
    onnx_member = f"segments/{seg.id}.onnx"
    entry = {
        "id": seg.id, "engine": art.engine, "sha256": seg.sha256, "onnx": onnx_member,
        "artifact": art.artifact, "extra_members": sorted(set(art.members) - {art.artifact}),
        "inputs": seg.inputs, "outputs": seg.outputs,
        "input_specs": art.input_specs or input_specs(seg),
        "nodes": seg.nodes, "ops": seg.ops, "choice": art.note,
    }
    if art.specialized:
        entry["specialized"] = art.specialized
    if art.tuning is not None:
        entry["tuning"] = art.tuning
    return entry, {onnx_member: seg.model_bytes, **art.members}


def prepare(engine: str, seg: Segment, target: str, cache_dir: Path | None,
            observed: dict[str, set[tuple[int, ...]]] | None = None,
            tuning_db: Path | None = None) -> Artifact:
    """Build ``seg`` for ``engine``; raises BackendError/ModelError when it cannot.

    ``observed``: input name -> shapes a sample run fed it (TVM uses the ranks).
    ``tuning_db``: MetaSchedule records TVM applies (``edgert tune``).
    """
    if engine == "ort":
        return _prepare_ort(seg)
    if engine == "tvm":
        return _prepare_tvm(seg, target, cache_dir, observed, tuning_db)
    if engine == "tflite":
        return _prepare_tflite(seg, cache_dir, observed)
    raise UsageError(f"engine {engine!r} cannot run dynamic segments", engine=engine)


def quiet_ort(ort: Any) -> None:
    """ORT's graph-cleanup warnings on segments are not the user's errors, and its run errors
    come back as the exception edgert reports in one line: off unless --debug."""
    if not os.environ.get("EDGERT_DEBUG"):
        ort.set_default_logger_severity(4)


def _prepare_ort(seg: Segment) -> Artifact:
    """The artifact is the segment ONNX itself; loading it once proves ORT accepts it."""
    import onnxruntime as ort

    quiet_ort(ort)
    try:
        ort.InferenceSession(seg.model_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises untyped errors
        raise ModelError(f"onnxruntime rejects segment {seg.id}: {exc}", segment=seg.id) from exc
    member = f"segments/{seg.id}.onnx"
    return Artifact("ort", member, {member: seg.model_bytes})


def _prepare_tvm(seg: Segment, target: str, cache_dir: Path | None,
                 observed: dict[str, set[tuple[int, ...]]] | None,
                 tuning_db: Path | None) -> Artifact:
    """A TVM shared library plus its signature sidecar, via the host compiler's cache.

    TVM imports the specialised segment (ranks filled in, shape computations folded;
    see ``specialize``); its sha256 goes into ``specialized`` so ``tvm_sources`` can
    rebuild exactly these bytes from the bundle for tuning. The TVM cache key covers
    them, the target, the TVM version, the lowering pipeline and the tuning database's
    content, so unchanged segments are not recompiled and new records are applied.
    """
    special = specialize(seg.model_bytes, observed)
    source_bytes = special.model.SerializeToString(deterministic=True)
    get_backend("tvm")  # raises EngineMissingError with the pip hint
    options = BackendOptions(target=target, cache_dir=cache_dir, tuning_db=tuning_db)
    with tempfile.TemporaryDirectory(prefix="edgert-seg-") as tmp:
        source = Path(tmp) / f"{seg.id}.onnx"
        source.write_bytes(source_bytes)
        try:
            library, used = compile_cached(source, options)
        except EdgertError as exc:
            raise type(exc)(f"segment {seg.id}: {exc.message}", segment=seg.id,
                            **exc.fields) from exc
    sidecar = library.with_suffix(".json")
    member = f"segments/{seg.id}.so"
    note: dict[str, Any] = {"source_sha256": sha256(source_bytes)}
    if special.folded:
        note["folded_nodes"] = special.folded
    if special.ranks_from_sample:
        note["ranks_from_sample"] = special.ranks_from_sample
    tuning = None
    if tuning_db is not None:
        tuning = {"db_sha256": used["tuning_db_sha256"], "functions": used.get("functions"),
                  "tuned_functions": used.get("tuned_functions"),
                  "emulated": bool(used.get("tuning_emulated"))}
    return Artifact("tvm", member, {member: library.read_bytes(),
                                    f"segments/{seg.id}.json": sidecar.read_bytes()},
                    specialized=note, tuning=tuning,
                    input_specs=[spec(i).to_dict() for i in special.model.graph.input
                                 if i.type.tensor_type.HasField("shape")])


def _prepare_tflite(seg: Segment, cache_dir: Path | None,
                    observed: dict[str, set[tuple[int, ...]]] | None) -> Artifact:
    """A .tflite (static shapes from the sample run) plus the sidecar that restores ONNX's
    output layout, order and dtype (``compilers.litert.convert_segment``)."""
    import json

    from edgert.backends.tflite import LAYOUT_SUFFIX
    from edgert.compilers.litert import convert_segment

    get_backend("tflite")  # raises EngineMissingError with the pip hint
    try:
        tflite, layout = convert_segment(seg.model_bytes, seg.id, cache_dir, observed)
    except EdgertError as exc:
        raise type(exc)(f"segment {seg.id}: {exc.message}", segment=seg.id,
                        **{k: v for k, v in exc.fields.items() if k != "segment"}) from exc
    member = f"segments/{seg.id}.tflite"
    sidecar = f"segments/{seg.id}{LAYOUT_SUFFIX}"
    return Artifact("tflite", member, {member: tflite.read_bytes(),
                                       sidecar: json.dumps(layout, indent=1).encode()})


# -- timing (auto backend) -------------------------------------------------------------------
def _random_value(spec_: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(d if isinstance(d, int) and d >= 0 else 1 for d in spec_.shape)
    dtype = np.dtype(spec_.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.integers(0, 2, size=shape).astype(dtype)


def synthetic_feeds(seg: Segment, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for a segment no sample run reached (symbolic dims set to 1)."""
    rng = np.random.default_rng(seed)
    return {d["name"]: _random_value(TensorSpec.from_dict(d), rng) for d in input_specs(seg)}


@dataclasses.dataclass
class Probe:
    """What seeded sample runs (ORT segments) saw: first feeds and all shapes per segment,
    and the model inputs of every run that completed (auto times whole bundles on them)."""

    feeds: dict[str, dict[str, np.ndarray]]
    shapes: dict[str, dict[str, set[tuple[int, ...]]]]
    inputs: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    calls: dict[str, set[Any]] = dataclasses.field(default_factory=dict)  # segment -> call_shapes keys


def probe(part: Partition, graph: Any, runs: int = PROBE_RUNS,
          samples: Sequence[Mapping[str, np.ndarray]] | None = None) -> Probe:
    """Run the program on ``runs`` seeded random inputs with ORT, recording every segment call.

    Several seeds, so data-dependent branches are likely to be reached more than one way.
    ``samples`` (the user's inputs) replace the random ones; one that fails to run is an
    InputError, since it says the model and its samples disagree.
    """
    import onnxruntime as ort

    quiet_ort(ort)
    sessions = {seg.id: ort.InferenceSession(seg.model_bytes, providers=["CPUExecutionProvider"])
                for seg in part.segments}
    seen = Probe({}, {})

    def call(seg_id: str, feeds: dict[str, Any]) -> list[Any]:
        seen.feeds.setdefault(seg_id, {k: np.asarray(v) for k, v in feeds.items()})
        shapes = seen.shapes.setdefault(seg_id, {})
        for name, value in feeds.items():
            shapes.setdefault(name, set()).add(tuple(np.shape(value)))
        seen.calls.setdefault(seg_id, set()).add(call_shapes(feeds))
        return sessions[seg_id].run(None, feeds)

    inits = {t.name for t in graph.initializer}
    interpreter = Interpreter(part.program, call, part.consts)
    if samples is not None:
        for index, feeds in enumerate(samples):
            try:
                interpreter.run(feeds)
            except Exception as exc:  # ORT's untyped errors included
                raise InputError(f"sample input {index} does not run through the model: {exc}",
                                 sample=index) from exc
            seen.inputs.append(dict(feeds))
        return seen
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        feeds = {i.name: _random_value(spec(i), rng) for i in graph.input if i.name not in inits}
        try:
            interpreter.run(feeds)
        except Exception:  # random inputs may be invalid for the model; keep what was seen so far
            continue
        seen.inputs.append(feeds)
    return seen


def time_ms(engine: str, art: Artifact, feeds: dict[str, np.ndarray],
            threads: int | None) -> float:
    """Median wall time of one segment run, measured here, in milliseconds."""
    backend = get_backend(engine, BackendOptions(threads=threads))
    with tempfile.TemporaryDirectory(prefix="edgert-time-") as tmp:
        for name, data in art.members.items():
            dest = Path(tmp) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        session = backend.load(Path(tmp) / art.artifact)
        try:
            for _ in range(2):
                session.run(feeds)
            samples = []
            for _ in range(TIMING_RUNS):
                start = time.perf_counter_ns()
                session.run(feeds)
                samples.append(time.perf_counter_ns() - start)
        except EdgertError:
            raise
        except Exception as exc:
            raise BackendError(f"{engine} failed to run a segment while timing: {exc}") from exc
        finally:
            session.close()
    return statistics.median(samples) / 1e6
