"""Models with control flow on TVM or LiteRT: compiled as a bundle instead of refused.

TVM's ONNX importer has no ``Loop``/``Scan`` and imports ``If`` only as a whole graph of
both branches; onnx2tf converts none of them. ``edgert compile --backend tvm`` (or
``tflite``) already handles all three: static segments on the engine and a host program
for the control flow. ``bench --backend tvm`` / ``tflite`` on such a model builds that
bundle (cached by model bytes, engine, target and tuning database) and measures it.
"""
from __future__ import annotations

import hashlib
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
    import edgert
    from edgert.compilers.tvm import default_cache_dir
    from edgert.dynamic.bundle import FORMAT_VERSION

    digest = hashlib.sha256(Path(model_path).read_bytes())
    for part in (engine, options.target, str(options.tuning_db or ""), edgert.__version__,
                 str(FORMAT_VERSION)):
        digest.update(b"\0" + part.encode())
    for sample in samples or ():  # they choose the ranks and the per-shape variants built
        for name in sorted(sample):
            value = np.ascontiguousarray(sample[name])
            digest.update(f"\0{name}:{value.dtype}:{value.shape}".encode() + value.tobytes())
    base = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    return base / "bundles" / f"{Path(model_path).stem}-{digest.hexdigest()[:20]}.edgert"


def compile_bundle(model_path: Path, options: Any,
                   samples: Sequence[Mapping[str, np.ndarray]] | None = None,
                   engine: str = "tvm") -> Path:
    """The ``engine`` bundle of ``model_path`` (compiled once, then taken from the cache)."""
    from edgert.dynamic import compile as compile_dynamic

    if samples and not _covers_inputs(model_path, samples[0]):
        samples = None  # some inputs left to the runner (random): seeded sample runs instead
    out = bundle_path(model_path, options, engine, samples)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    built = compile_dynamic(model_path, backend=engine, target=options.target, out=tmp,
                            cache_dir=options.cache_dir, threads=options.threads,
                            tuning_db=options.tuning_db, samples=samples)
    Path(built).replace(out)
    return out


def _covers_inputs(model_path: Path, sample: Mapping[str, np.ndarray]) -> bool:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return all(i.name in sample for i in graph.input if i.name not in weights)
