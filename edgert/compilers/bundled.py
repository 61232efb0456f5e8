"""Models with control flow on TVM or LiteRT: compiled as a bundle instead of refused.

TVM's ONNX importer has no ``Loop``/``Scan`` and imports ``If`` only as a whole graph of
both branches; onnx2tf converts none of them. ``edgert compile --backend tvm`` (or
``tflite``) already handles all three: static segments on the engine and a host program
for the control flow. ``bench --backend tvm`` / ``tflite`` on such a model builds that
bundle (cached by model bytes, engine, target and tuning database) and measures it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

CONTROL_FLOW = ("If", "Loop", "Scan")


def control_flow_ops(model_path: Path) -> list[str]:
    """The control-flow operators in ``model_path``'s main graph, e.g. ``["Loop"]``."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return sorted({n.op_type for n in model.graph.node if n.op_type in CONTROL_FLOW})


def bundle_path(model_path: Path, options: Any, engine: str = "tvm",
                samples: Sequence[Mapping[str, np.ndarray]] | None = None) -> Path:
    """The cache entry: keyed by everything that changes what the bundle holds."""
    from edgert.compilers.tvm import default_cache_dir
    from edgert.dynamic.bundle import FORMAT_VERSION

    from edgert.onnx_file import model_digest

    digest = hashlib.sha256(model_digest(Path(model_path)).encode())
    for part in (engine, options.target, *_engine_key(engine, options), _compiler_code_digest(),
                 str(FORMAT_VERSION)):
        digest.update(b"\0" + part.encode())
    for sample in samples or ():  # they choose the ranks and the per-shape variants built
        for name in sorted(sample):
            value = np.ascontiguousarray(sample[name])
            digest.update(f"\0{name}:{value.dtype}:{value.shape}".encode() + value.tobytes())
    base = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    return base / "bundles" / f"{Path(model_path).stem}-{digest.hexdigest()[:20]}.edgert"


def _engine_key(engine: str, options: Any) -> list[str]:
    """The engine's version and settings: a new TVM, pipeline, tuning records (by content, not
    path) or converter builds a new bundle."""
    if engine == "tvm":
        import tvm

        from edgert.compilers.tvm import PIPELINE_VERSION
        from edgert.compilers.tvm_db import database_digest
        from edgert.compilers.tvm_target import resolve_target

        records = (database_digest(Path(options.tuning_db), resolve_target(options.target))
                   if options.tuning_db else "untuned")
        return [tvm.__version__, PIPELINE_VERSION, records]
    from edgert.compilers.litert import converter_version

    return [converter_version()]


def _compiler_code_digest() -> str:
    """edgert's bundle compiler and converters, by content: ``edgert.__version__`` does not
    change with every edit, and a bundle built by older code must not be served as current."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([*(package / "dynamic").glob("*.py"), *(package / "compilers").glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def compile_bundle(model_path: Path, options: Any,
                   samples: Sequence[Mapping[str, np.ndarray]] | None = None,
                   engine: str = "tvm") -> Path:
    """The ``engine`` bundle of ``model_path`` (compiled once, then taken from the cache; a
    cached bundle that fails its checksums is rebuilt)."""
    from edgert.dynamic import compile as compile_dynamic
    from edgert.dynamic.bundle import intact
    from edgert.errors import UsageError

    if samples and not _covers_inputs(model_path, samples[0]):
        samples = None  # some inputs left to the runner (random): seeded sample runs instead
    out = bundle_path(model_path, options, engine, samples)
    if out.is_file():
        if intact(out):  # the whole file's sha256: loading it then checks its members once
            return out
        out.unlink(missing_ok=True)  # damaged in the cache: built again below
    elif out.exists() or out.is_symlink():  # a directory, a FIFO, a dangling link: not ours to remove
        raise UsageError(f"the cache entry {out} is not a bundle file: remove it to rebuild", path=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")  # two processes building it at once
    try:
        built = compile_dynamic(model_path, backend=engine, target=options.target, out=tmp,
                                cache_dir=options.cache_dir, threads=options.threads,
                                tuning_db=options.tuning_db, samples=samples)
        Path(built).replace(out)
    finally:
        tmp.unlink(missing_ok=True)  # left by a failed or interrupted build
    return out


def _covers_inputs(model_path: Path, sample: Mapping[str, np.ndarray]) -> bool:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return all(i.name in sample for i in graph.input if i.name not in weights)
