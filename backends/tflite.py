"""LiteRT (TensorFlow Lite) with its default XNNPACK delegate.

Device-side: imports numpy and the stdlib at module level and the engine inside methods;
``ai_edge_litert`` is preferred, ``tflite_runtime`` serves boards stuck on numpy 1. ``load``
takes ``.tflite`` files only; the host step that converts an ONNX model (cached by its
sha256, so ``--backend tflite zoo:resnet`` works) is ``edgert.compilers.tflite``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgert.chatter import captured
from edgert.device_facts import usable_cores
from edgert.errors import BackendError, ModelError

from .base import Backend, Session, TensorSpec


def _interpreter_class() -> tuple[type, str]:
    """The Interpreter class and the distribution that provides it."""
    for module, dist in (("ai_edge_litert.interpreter", "ai-edge-litert"),
                         ("tflite_runtime.interpreter", "tflite-runtime")):
        try:
            return importlib.import_module(module).Interpreter, dist
        except ImportError:
            continue
    raise ImportError("neither ai_edge_litert nor tflite_runtime is importable")


def _spec(detail: dict[str, Any]) -> TensorSpec:
    signature = detail.get("shape_signature", detail["shape"])
    shape = tuple(int(d) if d >= 0 else "?" for d in signature)
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]).name)


def _io_details(interpreter: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output details named as the model's signature names them, if it has one.

    Converters that go through TensorFlow (onnx2tf) name tensors ``serving_default_x:0``
    and keep the ONNX names only in the signature.
    """
    signatures = interpreter.get_signature_list() if hasattr(interpreter, "get_signature_list") else {}
    if len(signatures) != 1:
        return interpreter.get_input_details(), interpreter.get_output_details()
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    return ([dict(d, name=n) for n, d in runner.get_input_details().items()],
            [dict(d, name=n) for n, d in runner.get_output_details().items()])


LAYOUT_SUFFIX = ".layout.json"  # beside a bundle segment's .tflite: see ``_read_layout``


def _read_layout(model_path: Path) -> dict[str, Any] | None:
    """``<model>.layout.json`` (written by ``compilers.litert.convert_segment``), or None.

    A bundle segment's outputs feed segments that expect ONNX's order, layout and dtype;
    onnx2tf's may differ (NHWC, sorted by name, int32), so the sidecar says how to restore
    them.
    """
    import json

    path = model_path.with_name(model_path.stem + LAYOUT_SUFFIX)
    if not path.is_file():
        return None
    try:
        layout = json.loads(path.read_text())
        if layout.get("format") != "edgert.tflite.layout/1":
            raise ValueError(f"unknown format {layout.get('format')!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in layout.get("inputs", {}).items()):
            raise ValueError("inputs must map ONNX names to LiteRT names")
        for out in layout["outputs"]:
            np.dtype(out["dtype"])  # TypeError for a name numpy does not know
            if not all(isinstance(d, int) and d >= 0 for d in out["shape"]):
                raise ValueError(f"{out['shape']} is not a static shape")
            if sorted(out["perm"]) != list(range(len(out["perm"]))):
                raise ValueError(f"{out['perm']} is not a permutation")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path.name} is not a readable layout sidecar: {exc}",
                         path=str(path)) from exc
    return layout


def _flex_ops(message: str) -> str:
    """"FlexErf (node 52)" from LiteRT's error for a model with Select TensorFlow ops, or ""."""
    import re

    found = re.search(r"Node number (\d+) \((Flex\w+)\)", message)
    return f"{found.group(2)} (node {found.group(1)})" if found else ""


class TfliteSession(Session):
    def __init__(self, interpreter: Any, layout: dict[str, Any] | None = None) -> None:
        self._interpreter = interpreter
        inputs, outputs = _io_details(interpreter)
        self.inputs = [_spec(d) for d in inputs]
        self._input_index = {d["name"]: d["index"] for d in inputs}
        for onnx_name, tflite_name in (layout or {}).get("inputs", {}).items():
            self._input_index[onnx_name] = self._input_index.pop(tflite_name)
            for spec_index, spec in enumerate(self.inputs):
                if spec.name == tflite_name:
                    self.inputs[spec_index] = TensorSpec(onnx_name, spec.shape, spec.dtype)
        by_name = {d["name"]: d for d in outputs}
        # A layout sidecar (a bundle segment): outputs in ONNX order, layout, shape and dtype
        self._restore = [(by_name[o.get("tflite_name", o["name"])], o["perm"], tuple(o["shape"]),
                          np.dtype(o["dtype"])) for o in layout["outputs"]] if layout else []
        if layout:
            outputs = [dict(detail, name=o["name"], shape=np.array(shape),
                            shape_signature=np.array(shape), dtype=dtype)
                       for o, (detail, _, shape, dtype) in zip(layout["outputs"], self._restore)]
        self.outputs = [_spec(d) for d in outputs]
        self._output_index = [d["index"] for d in outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            for name, value in feeds.items():
                self._interpreter.set_tensor(self._input_index[name], np.ascontiguousarray(value))
            self._interpreter.invoke()
            # get_tensor copies, so results survive the next invoke
            results = [self._interpreter.get_tensor(i) for i in self._output_index]
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"LiteRT failed to run the model: {exc}") from exc
        if self._restore:
            results = [np.ascontiguousarray(np.transpose(r, perm)).reshape(shape).astype(dtype, copy=False)
                       for r, (_, perm, shape, dtype) in zip(results, self._restore)]
        return results


class TfliteBackend(Backend):
    name = "tflite"
    extra = "tflite"
    engine_modules = ("ai_edge_litert", "tflite_runtime")
    suffixes = (".tflite",)

    def version(self) -> str:
        _, dist = _interpreter_class()
        return f"{dist} {importlib.metadata.version(dist)}"

    def load(self, model_path: Path) -> TfliteSession:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(f"no such model file: {model_path}", path=str(model_path))
        if model_path.suffix == ".onnx":
            raise ModelError(f"LiteRT loads .tflite files, not {model_path.name}; convert it on the "
                             "host first (edgert.compilers.tflite)", path=str(model_path))
        layout = _read_layout(model_path)
        interpreter_cls, _ = _interpreter_class()
        try:
            # the default op resolver applies the XNNPACK delegate (and says so: to the log)
            with captured("litert", f"load {model_path.name}"):
                interpreter = interpreter_cls(model_path=str(model_path),
                                              num_threads=self._threads())
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            flex = _flex_ops(str(exc))
            if flex:  # a valid file, converted with TensorFlow ops this interpreter lacks
                raise ModelError(f"LiteRT cannot run {model_path.name}: it uses TensorFlow (Flex) "
                                 f"operator {flex}, which LiteRT's interpreter does not include; "
                                 "convert the model without Flex ops", path=str(model_path),
                                 operator=flex) from exc
            raise ModelError(f"LiteRT cannot load {model_path}: is it a .tflite file? ({exc})",
                             path=str(model_path)) from exc
        try:
            return TfliteSession(interpreter, layout)
        except KeyError as exc:
            raise ModelError(f"{model_path.name}'s layout sidecar names tensor {exc} the model "
                             "lacks", path=str(model_path)) from exc

    def _threads(self) -> int:
        """All usable cores by default, like ONNX Runtime, so side-by-side numbers are fair
        (LiteRT's own Python default is 1 thread)."""
        return self.options.threads or usable_cores()

    def effective_options(self) -> dict[str, Any]:
        return {"threads": self.options.threads, "num_threads": self._threads(),
                "delegate": "xnnpack", "op_resolver": "BUILTIN (default delegates on)"}
