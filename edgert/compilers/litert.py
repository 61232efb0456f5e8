"""ONNX -> LiteRT (.tflite) on the host: edgert's light converter where it covers the model,
onnx2tf for everything else.

``edgert.compilers.tflite`` (a dozen CNN operators, no TensorFlow) converts the small
CNNs it covers exactly and in milliseconds. onnx2tf (through TensorFlow) covers the
operators real exported models use; it is a large host-only dependency (``pip install
'edgert[convert]'``, see pyproject.toml). When neither can, the error names the operator
and node (from each converter).

Shapes are fixed first (``edgert.compilers.shapes``: static dims, ``--shape`` sizes) since
both converters need static graphs. 4-D inputs keep ONNX's NCHW layout (onnx2tf inserts
the transpose), so the same feeds run on ORT and LiteRT; the signature keeps the ONNX
input/output names.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from edgert.cache import cache_root
from edgert.errors import ModelError
from edgert.onnx_file import load_model, model_digest


# ONNX operators onnx2tf writes as builtin LiteRT ops instead of TensorFlow (Flex) ops,
# which LiteRT's interpreter cannot run: Erf (BERT's and ViT's GELU) becomes the
# Abramowitz-Stegun polynomial (max error 1.5e-7).
PSEUDO_OPS = ("erf",)


def converter_version() -> str:
    """Part of the cache key: which converter would run."""
    from importlib.metadata import PackageNotFoundError, version

    from edgert.compilers.tflite import CONVERTER_VERSION

    try:
        return f"onnx2tf{version('onnx2tf')}-{'-'.join(PSEUDO_OPS)}+light{CONVERTER_VERSION}"
    except PackageNotFoundError:
        return f"light{CONVERTER_VERSION}"


def _onnx2tf_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("onnx2tf", "tensorflow"))


def convert(onnx_path: Path, out_path: Path, dims: Mapping[str, int] | None = None) -> str:
    """Write ``out_path`` (atomically) from ``onnx_path``; returns the converter that succeeded."""
    from edgert.compilers.tflite import convert_model, write_atomic
    from edgert.compilers.shapes import fix_input_shapes

    fixed = fix_input_shapes(load_model(onnx_path), dims or {})
    if fixed.open_dims:
        names = ", ".join(f"--shape {d}=SIZE" for d in fixed.open_dims)
        raise ModelError(f"LiteRT needs static shapes: set {names}", path=str(onnx_path))
    try:  # exact for what it covers, and no TensorFlow start-up (seconds)
        data, used = convert_model(fixed.model), "light"
    except ModelError as exc:
        if not _onnx2tf_available():
            raise ModelError(f"cannot convert {onnx_path.name} to .tflite: {exc.message} "
                             "(real models need onnx2tf: pip install 'edgert[convert]')",
                             **{"path": str(onnx_path), **exc.fields}) from exc
        try:
            data, used = _onnx2tf(fixed.model), "onnx2tf"
        except ModelError as failed:
            raise ModelError(f"cannot convert {onnx_path.name} to .tflite: {failed.message}; "
                             f"{exc.message}", **{"path": str(onnx_path), **exc.fields}) from failed
    write_atomic(out_path, data)
    return used


def _onnx2tf(model: Any) -> bytes:
    """onnx2tf's float32 .tflite of ``model`` (static shapes)."""
    import onnx

    from edgert.chatter import captured, log_path

    work = Path(tempfile.mkdtemp(prefix="edgert-onnx2tf-"))
    try:
        source = work / "model.onnx"
        onnx.save(model, str(source))
        nchw = [i.name for i in model.graph.input if len(i.type.tensor_type.shape.dim) in (3, 4, 5)]
        log = log_path("litert")
        start = log.stat().st_size if log.is_file() else 0
        with captured("litert", "onnx2tf conversion"):
            try:
                import onnx2tf

                onnx2tf.convert(input_onnx_file_path=str(source), output_folder_path=str(work / "tf"),
                                copy_onnx_input_output_names_to_tflite=True,
                                keep_ncw_or_nchw_or_ncdhw_input_names=nchw or None,
                                replace_to_pseudo_operators=list(PSEUDO_OPS),
                                non_verbose=True)
            except BaseException as exc:  # onnx2tf raises anything, and sys.exit()s on some errors
                if isinstance(exc, KeyboardInterrupt):
                    raise
                detail = ": ".join(filter(None, [type(exc).__name__,
                                                 (str(exc).strip().splitlines() or [""])[-1]]))
                where = _failed_node(model, log, start)
                raise ModelError(f"onnx2tf cannot convert {where}({detail}; its output: {log})") from exc
        result = work / "tf" / "model_float32.tflite"
        if not result.is_file():
            raise ModelError(f"onnx2tf wrote no model_float32.tflite (its output: {log})")
        return result.read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _failed_node(model: Any, log: Path, start: int) -> str:
    """"operator OP (node 'NAME') " from onnx2tf's error report in ``log``, or ""."""
    import re

    try:
        with open(log, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    names = re.findall(r"onnx_op_name: (\S+)", text)
    if not names:
        return ""
    ops = {n.name: n.op_type for n in model.graph.node}
    return f"operator {ops.get(names[-1], '?')} (node {names[-1]!r}) "


def default_cache_dir(cache_dir: Path | None = None) -> Path:
    """``<cache_dir>/tflite``, or ``tflite`` under edgert's cache root (``$EDGERT_CACHE``)."""
    if cache_dir is not None:
        return Path(cache_dir) / "tflite"
    return cache_root() / "tflite"


def convert_cached(onnx_path: Path, cache_dir: Path | None = None,
                   dims: Mapping[str, int] | None = None) -> Path:
    """The cached .tflite for an ONNX model (keyed by its sha256, the converters' versions and
    ``dims``), converted on a cache miss by ``convert`` (light converter first, then onnx2tf)."""
    digest = hashlib.sha256(model_digest(Path(onnx_path)).encode())
    shapes = ",".join(f"{k}={v}" for k, v in sorted((dims or {}).items()))
    digest.update(f"\0{converter_version()}\0{shapes}".encode())
    target = default_cache_dir(cache_dir) / f"{Path(onnx_path).stem}-{digest.hexdigest()[:16]}.tflite"
    if not target.is_file():
        convert(Path(onnx_path), target, dims)
    return target


def convert_segment(model_bytes: bytes, name: str, cache_dir: Path | None,
                    observed: Mapping[str, set[tuple[int, ...]]] | None) -> tuple[Path, dict[str, Any]]:
    """A bundle segment as a cached .tflite, and its layout sidecar (``backends.tflite.LAYOUT``).

    LiteRT needs static shapes: a symbolic input dim takes the one size the sample run
    fed it (a segment that saw several sizes is refused). onnx2tf computes in NHWC and
    may hand 4-D outputs back as NHWC, and orders outputs by name; the next segment
    expects the ONNX layout and order, so the sidecar lists each output in ONNX order
    with the permutation back to ONNX's layout, ONNX's shape and dtype, and the names
    given to inputs/outputs TensorFlow would not accept (``inputs``, ``tflite_name``).
    """
    import onnx

    from edgert.dynamic.specialize import specialize

    model = specialize(model_bytes, observed).model
    for info in model.graph.input:
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            continue
        seen = sorted({s for s in (observed or {}).get(info.name, ()) if len(s) == len(dims)})
        if len(seen) != 1:
            raise ModelError(f"LiteRT needs static shapes: segment input {info.name!r} has "
                             f"symbolic dims and the sample run fed it "
                             f"{'shapes ' + ', '.join(map(str, seen)) if seen else 'no value'}",
                             value=info.name)
        for dim, size in zip(dims, seen[0]):
            dim.dim_value = size
    renamed = _tf_safe_names(model)
    with tempfile.TemporaryDirectory(prefix="edgert-seg-") as tmp:
        source = Path(tmp) / f"{name}.onnx"
        onnx.save(model, str(source))
        tflite = convert_cached(source, cache_dir)
        typed = specialize(source.read_bytes()).model
    return tflite, _layout(tflite, typed, renamed)


def _tf_safe_names(model: Any) -> dict[str, str]:
    """Rename graph inputs/outputs TensorFlow refuses as names (exporters write
    ``/Concat_output_0``; onnx2tf then exits); returns new name -> ONNX name."""
    import re

    valid = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
    graph = model.graph
    renames = {info.name: f"edgert_io_{index}"
               for index, info in enumerate(list(graph.input) + list(graph.output))
               if not valid.match(info.name)}
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        info.name = renames.get(info.name, info.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    return {new: old for old, new in renames.items()}


def _layout(tflite: Path, model: Any, renamed: Mapping[str, str]) -> dict[str, Any]:
    """The sidecar: each ONNX output's name, its permutation from LiteRT's layout, its dtype.

    The permutation is found by running both engines on one seeded input and keeping the
    layout whose values agree with ORT's (a shape alone is ambiguous when C == H == W); an
    output that agrees in no layout is refused.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import helper

    from edgert.backends.tflite import TfliteBackend

    rng = np.random.default_rng(0)
    feeds = {}
    for info in model.graph.input:
        tensor = info.type.tensor_type
        shape = [d.dim_value for d in tensor.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        feeds[info.name] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                            else np.zeros(shape, dtype))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    want = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, feeds)
    session = TfliteBackend().load(tflite)
    try:
        got = dict(zip([s.name for s in session.outputs], session.run(feeds)))
    finally:
        session.close()
    outputs = []
    for info, ref in zip(model.graph.output, want):
        if info.name not in got:
            raise ModelError(f"the converted segment has no output {info.name!r} "
                             f"(it has {', '.join(got)})", value=info.name)
        perm = _matching_perm(np.asarray(got[info.name]), np.asarray(ref))
        if perm is None:
            raise ModelError(f"the converted segment's output {info.name!r} (shape "
                             f"{list(np.shape(got[info.name]))}) does not match ONNX Runtime's "
                             f"(shape {list(ref.shape)}) in any layout", value=info.name)
        outputs.append({"name": renamed.get(info.name, info.name), "tflite_name": info.name,
                        "perm": perm, "shape": list(ref.shape), "dtype": ref.dtype.name})
    inputs = {renamed[i.name]: i.name for i in model.graph.input if i.name in renamed}
    return {"format": "edgert.tflite.layout/1", "inputs": inputs, "outputs": outputs}


def _matching_perm(got: Any, ref: Any, rel: float = 1e-3) -> list[int] | None:
    """The permutation of ``got``'s axes (identity, or channels-last back to channels-first)
    that, reshaped to ref's shape, gives ``ref`` within ``rel`` of ref's largest magnitude;
    None if neither does."""
    import numpy as np

    rank = got.ndim  # may differ from ref's (a scalar as [1]): then only the sizes must agree
    perms = [list(range(rank))]
    if rank >= 3:
        perms.append([0, rank - 1, *range(1, rank - 1)])
    scale = max(float(np.abs(ref.astype(np.float64)).max(initial=0.0)), 1e-12)
    for perm in perms:
        moved = np.transpose(got, perm)
        if moved.size == ref.size:
            moved = moved.reshape(ref.shape)
        if moved.shape == ref.shape and float(
                np.abs(moved.astype(np.float64) - ref).max(initial=0.0)) <= rel * scale:
            return perm
    return None
