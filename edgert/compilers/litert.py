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
    import onnx

    from edgert.compilers.tflite import convert_model, write_atomic
    from edgert.compilers.shapes import fix_input_shapes

    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # DecodeError, OSError, ...
        raise ModelError(f"cannot read ONNX model {onnx_path}: {exc}", path=str(onnx_path)) from exc
    fixed = fix_input_shapes(model, dims or {})
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

    from edgert.compilers.chatter import captured, log_path

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
    digest = hashlib.sha256()
    try:
        digest.update(Path(onnx_path).read_bytes())
    except OSError as exc:
        raise ModelError(f"cannot read {onnx_path}: {exc}", path=str(onnx_path)) from exc
    shapes = ",".join(f"{k}={v}" for k, v in sorted((dims or {}).items()))
    digest.update(f"\0{converter_version()}\0{shapes}".encode())
    target = default_cache_dir(cache_dir) / f"{Path(onnx_path).stem}-{digest.hexdigest()[:16]}.tflite"
    if not target.is_file():
        convert(Path(onnx_path), target, dims)
    return target
