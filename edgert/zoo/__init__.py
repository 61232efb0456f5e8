"""The bundled models, so every command has something to run without downloads.

``tools/make_zoo.py`` builds the static ones from fixed seeds (random weights, realistic
structure: MobileNetV2-style and ResNet-style CNNs, input ``input`` float32 [1, 3, 160, 160],
output ``logits`` [1, 10]) and converts each to ``NAME.tflite`` next to ``NAME.onnx``;
``tools/make_dynamic_zoo.py`` the dynamic networks under ``dynamic/`` (with ``NAME.npz`` cases).
Every ``.onnx`` file below this directory is ``zoo:NAME``; the top level wins a name clash.
"""
from __future__ import annotations

from pathlib import Path

from edgert.errors import ModelError, UsageError
from edgert.files import not_a_file

ZOO_DIR = Path(__file__).resolve().parent
PREFIX = "zoo:"
_SUFFIXES = (".onnx", ".tflite", ".npz")  # the model, its LiteRT twin, its input cases


def zoo_models() -> dict[str, Path]:
    """The static models: zoo name -> its ONNX file, sorted by name."""
    return {p.stem: p for p in sorted(ZOO_DIR.glob("*.onnx"))}


def all_models() -> dict[str, Path]:
    """Every ``zoo:`` name -> its ONNX file: the static models and the dynamic zoo, sorted."""
    found = dict(zoo_models())
    for path in sorted(ZOO_DIR.rglob("*.onnx")):
        found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def resolve(name_or_path: str | Path) -> Path:
    """An existing file as is; else ``zoo:resnet`` or ``resnet`` -> the bundled ONNX file
    (``resnet.tflite`` -> the bundled LiteRT file, ``zoo:early_exit_cnn.npz`` -> its cases)."""
    spec = str(name_or_path)
    is_zoo = spec.startswith(PREFIX)
    if not is_zoo and Path(spec).is_file():  # an existing file wins over a zoo name
        return Path(spec)
    why = None if is_zoo else not_a_file(spec)
    if why:  # a directory, a FIFO, a device: not "no such file" or "unknown zoo model"
        raise ModelError(f"{spec} {why}, not a model file", path=spec)
    name = spec[len(PREFIX):] if is_zoo else spec
    suffix = next((s for s in _SUFFIXES if name.endswith(s)), "")
    stem = name[: len(name) - len(suffix)]
    models = all_models()
    if stem in models:
        bundled = models[stem].with_suffix(suffix or ".onnx")
        if bundled.is_file():
            return bundled
    if is_zoo or not (set(spec) & {"/", "\\", "."}):  # a bare name means a zoo model
        choices = ", ".join(f"{n}[{'.tflite' if p.with_suffix('.tflite').is_file() else '.npz'}]"
                            if p.with_suffix(".tflite").is_file() or p.with_suffix(".npz").is_file() else n
                            for n, p in models.items()) or "(none installed)"
        raise UsageError(f"unknown zoo model {name!r}; the zoo has: {choices}", model=name)
    raise ModelError(f"no such model file: {spec}", path=spec)

