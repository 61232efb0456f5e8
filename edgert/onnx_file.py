"""A user's ONNX file read with the weights stored beside it (host only: imports onnx).

``torch.onnx.export(..., dynamo=True)`` and ``onnx.save_model(save_as_external_data=True)``
write the weights to a file such as ``MODEL.onnx.data`` that the model names by a path
relative to its own directory. Parsing the ``.onnx`` bytes alone leaves the weights out (and
onnx resolves them against the working directory later); so every entry point that takes a
model by path loads it here, and caches key on the weights' files as well as the model's.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edgert.errors import ModelError
from edgert.files import not_a_file

MAX_BYTES = 2**31 - 1  # protobuf's limit on one message: the graph and its weights, inlined


def _parse(path: Path) -> Any:
    """The model's own protobuf, its external weights not read."""
    import onnx

    why = not_a_file(path)
    if why:
        raise ModelError(f"the model {path} {why}", path=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror}", path=str(path)) from exc
    try:
        return onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path} is not an ONNX model: {exc}", path=str(path)) from exc


def _external_tensors(model: Any) -> list[Any]:
    """The tensors (main graph, subgraphs, Constant attributes) whose data lies in another file."""
    from onnx import TensorProto
    from onnx.external_data_helper import _get_all_tensors

    return [t for t in _get_all_tensors(model) if t.data_location == TensorProto.EXTERNAL]


def data_files(path: Path, model: Any | None = None) -> list[Path]:
    """The weight files ``path`` names, in first-use order (none for a self-contained model)."""
    model = _parse(path) if model is None else model
    names = dict.fromkeys(_location(t) for t in _external_tensors(model))
    return [path.parent / name for name in names]


def _location(tensor: Any) -> str:
    """The file an external tensor names, relative to its model's directory."""
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def model_digest(path: Path) -> str:
    """sha256 (hex) of the model file then each of its weight files: a cache key that changes
    when only the weights do (an exporter's ``.onnx`` stays byte-identical across retraining)."""
    digest = hashlib.sha256(_bytes(path))
    for data in data_files(path):
        digest.update(b"\0" + _bytes(data))
    return digest.hexdigest()


def _bytes(path: Path) -> bytes:
    """The file's content; a ModelError naming it when it cannot be read."""
    why = not_a_file(path)
    try:
        if why:
            raise OSError(why)
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc


def load_model(path: Path) -> Any:
    """``path`` as an ``onnx.ModelProto`` with every weight inline, read from the files the
    model names relative to its own directory. A missing, unreadable or short weight file, or
    a model too big for one protobuf message, is a ModelError naming it."""
    from onnx import TensorProto
    from onnx.external_data_helper import load_external_data_for_tensor

    path = Path(path)
    model = _parse(path)
    tensors = _external_tensors(model)
    if not tensors:
        return model
    files = data_files(path, model)
    total = path.stat().st_size + sum(_size(f, path) for f in files)
    if total > MAX_BYTES:
        raise ModelError(f"{path} and its weight files hold {total / 2**30:.1f} GiB; edgert loads "
                         "models of up to 2 GiB (protobuf's limit)", path=str(path))
    for tensor in tensors:
        expected, where = _expected_bytes(tensor), _location(tensor)
        try:
            load_external_data_for_tensor(tensor, str(path.parent))
        except Exception as exc:  # onnx: ValidationError for a path outside the directory, OSError
            raise ModelError(f"cannot read the weights of {tensor.name!r} from {where} for {path}: {exc}",
                             path=str(path)) from exc
        if expected is not None and len(tensor.raw_data) != expected:
            raise ModelError(f"the weight file {where} of {path} is truncated or corrupt: {tensor.name!r} "
                             f"has {len(tensor.raw_data)} of {expected} bytes", path=str(path))
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]
    return model


def _size(data: Path, model: Path) -> int:
    """The size of a weight file; a ModelError when it is missing or not a regular file."""
    why = not_a_file(data)
    try:
        if why:
            raise OSError(why)
        return data.stat().st_size
    except OSError as exc:
        raise ModelError(f"the weight file {data} of {model} {why or 'does not exist or cannot be read'}",
                         path=str(model)) from exc


def _expected_bytes(tensor: Any) -> int | None:
    """The byte size ``tensor``'s dims and type call for (None for strings: variable length)."""
    import numpy as np
    from onnx import TensorProto, helper

    packed = {getattr(TensorProto, n, None) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")}
    if tensor.data_type in {TensorProto.STRING, TensorProto.UNDEFINED, *packed}:
        return None  # strings vary in length; sub-byte types pack several per byte
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError):  # a type this onnx has no numpy dtype for: not checked
        return None
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
