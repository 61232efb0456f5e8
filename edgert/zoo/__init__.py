"""The bundled static models, so every command has something to run without downloads.

``tools/make_zoo.py`` builds them from fixed seeds (random weights, realistic structure:
MobileNetV2-style and ResNet-style CNNs, input ``input`` float32 [1, 3, 160, 160], output
``logits`` [1, 10]) and converts each to ``NAME.tflite`` next to ``NAME.onnx``.
"""
from __future__ import annotations

from pathlib import Path

from edgert.errors import ModelError, UsageError

ZOO_DIR = Path(__file__).resolve().parent
PREFIX = "zoo:"
_SUFFIXES = (".onnx", ".tflite")


def zoo_models() -> dict[str, Path]:
    """Zoo name -> its ONNX file, sorted by name."""
    return {p.stem: p for p in sorted(ZOO_DIR.glob("*.onnx"))}


def resolve(name_or_path: str | Path) -> Path:
    """An existing file as is; else ``zoo:resnet`` or ``resnet`` -> the bundled ONNX file
    (``resnet.tflite`` -> the bundled LiteRT file)."""
    spec = str(name_or_path)
    is_zoo = spec.startswith(PREFIX)
    if not is_zoo and Path(spec).is_file():  # an existing file wins over a zoo name
        return Path(spec)
    name = spec[len(PREFIX):] if is_zoo else spec
    suffix = next((s for s in _SUFFIXES if name.endswith(s)), "")
    stem = name[: len(name) - len(suffix)]
    models = zoo_models()
    if stem in models:
        bundled = models[stem].with_suffix(suffix or ".onnx")
        if bundled.is_file():
            return bundled
    if is_zoo or not (set(spec) & {"/", "\\", "."}):  # a bare name means a zoo model
        choices = ", ".join(f"{n}[.tflite]" for n in models) or "(none installed)"
        raise UsageError(f"unknown zoo model {name!r}; the zoo has: {choices}", model=name)
    raise ModelError(f"no such model file: {spec}", path=spec)

