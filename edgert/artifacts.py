"""What ``edgert push`` checks before it uploads: a file it can tell is damaged is never sent.

Bundles and All-in-One files carry checksums (docs/bundle-format.md, docs/aio-format.md) and
are opened the way the device will open them; an ONNX model must parse and hold its weights. Other files (TVM
libraries, LiteRT flatbuffers) have no checksum of their own and go as they are.
"""
from __future__ import annotations

from pathlib import Path

from edgert.errors import ModelError
from edgert.onnx_file import data_files


def check_before_upload(path: Path) -> None:
    """Raise BundleError/ModelError naming ``path`` when it is truncated or corrupt."""
    if path.suffix == ".edgert":
        from edgert.dynamic.bundle import Bundle

        Bundle(path)
    elif path.suffix == ".aio":
        from edgert.variants import aiofile

        aiofile.read(path).close()
    elif path.suffix == ".onnx":
        refuse_weights_beside(path)  # parses it too: a truncated or non-ONNX file is refused


def refuse_weights_beside(path: Path) -> None:
    """ModelError when the ONNX model ``path`` cannot be parsed (``onnx_file``) or keeps its
    weights in other files: a device gets the one file (bench/run --device failed there, on
    the missing weights)."""
    beside = data_files(path)
    if beside:
        raise ModelError(f"{path} keeps its weights in {', '.join(p.name for p in beside)} beside it and "
                         "a device gets one file: compile it to a bundle (edgert compile) or save "
                         "it with its weights inline", path=str(path))
