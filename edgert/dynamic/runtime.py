"""Load a bundle and run it: segments on their engines, control flow on the host.

Device side: stdlib, numpy and the engines' runtimes (through ``backends``); no onnx.
"""
from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edgert.backends import BackendOptions, Session, TensorSpec, get_backend
from edgert.errors import BundleError, InputError
from edgert.tensors import FeedCheck

from .bundle import Bundle
from .program import Interpreter, Trace, to_numpy
from .program import check as check_program

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def machine_arch() -> str:
    """This machine's CPU architecture, spelled as bundles record it."""
    return arch_name(platform.machine())


def arch_name(machine: str) -> str:
    """A ``platform.machine()`` string (of any machine) spelled as bundles record it."""
    return _ARCH_ALIASES.get(machine.lower(), machine.lower())


def inspect(bundle_path: Path) -> dict[str, Any]:
    """The verified manifest of a bundle; works for bundles built for any machine."""
    bundle = Bundle(bundle_path)
    check_manifest(bundle.manifest, str(bundle.path))
    return bundle.manifest


class Runtime(Session):
    """A loaded bundle. ``run`` takes and returns numpy arrays in the ONNX graph's order.

    It is a ``backends.Session``, so anything that benchmarks sessions can run it; the
    per-segment counters and ``last_path`` add what a bundle-aware report needs.
    """

    def __init__(self, bundle: Bundle, threads: int | None = None,
                 keep_tensors: bool = True) -> None:
        check_manifest(bundle.manifest, str(bundle.path))
        self.manifest = bundle.manifest
        arch = self.manifest.get("target_arch", "any")
        if arch not in ("any", machine_arch()):
            raise BundleError(
                f"{bundle.path} was compiled for {arch} and cannot run on this {machine_arch()} "
                f"machine; copy it to a {arch} device to run it (here it can only be inspected: "
                f"edgert.dynamic.inspect)", path=str(bundle.path), arch=arch)
        self.inputs = [TensorSpec.from_dict(d) for d in self.manifest["inputs"]]
        self.outputs = [TensorSpec.from_dict(d) for d in self.manifest["outputs"]]
        self._check_inputs = FeedCheck(self.inputs)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgert-bundle-")
        self._sessions: dict[str, Session] = {}
        self._fixed: dict[str, list[tuple[TensorSpec, bool]]] = {}
        checked = _checked_upfront(self.manifest)
        for seg in self.manifest["segments"]:
            path = bundle.extract(seg["artifact"], Path(self._tmp.name))
            for extra in seg.get("extra_members", []):
                bundle.extract(extra, Path(self._tmp.name))
            backend = get_backend(seg["engine"], BackendOptions(threads=threads))
            self._sessions[seg["id"]] = backend.load(path)
            specs = [TensorSpec.from_dict(d) for d in seg["input_specs"]
                     if (seg["id"], d["name"]) not in checked]
            self._fixed[seg["id"]] = [(spec, all(isinstance(d, int) and d >= 0 for d in spec.shape))
                                      for spec in specs]
        # Sessions that take and return engine tensors (TVM): values then stay in the engine's
        # memory between its segments (``keep_tensors=False`` copies through numpy instead).
        # ORT needs no such call: its numpy outputs are views of ORT's buffers, and numpy
        # inputs are wrapped without a copy. Others get numpy, copied out of engine tensors
        # only when some segment returns engine tensors.
        tensors = {seg: session.run_tensors for seg, session in self._sessions.items()
                   if keep_tensors and hasattr(session, "run_tensors")}
        self._calls: dict[str, Callable[[dict[str, Any]], list[Any]]] = {
            seg: tensors.get(seg) or (_numpy_call(session) if tensors else session.run)
            for seg, session in self._sessions.items()}
        self._numpy_out = not tensors  # no engine tensors anywhere: every value is numpy
        for seg in self.manifest["segments"]:
            if seg.get("variants"):
                self._calls[seg["id"]] = self._by_shape(bundle, seg, self._calls[seg["id"]], threads)
        consts = {cid: bundle.array(member) for cid, member in self.manifest["consts"].items()}
        self.segment_ns: dict[str, int] = {s["id"]: 0 for s in self.manifest["segments"]}
        self.segment_calls: dict[str, int] = {s["id"]: 0 for s in self.manifest["segments"]}
        self.on_segment: Callable[[str, int], None] | None = None
        self.last_path: Trace | None = None
        self.record_margins = False  # True: If events carry "margin" (how close the decision was)
        check = self._check_segment_feeds if any(self._fixed.values()) else None
        self._interp = Interpreter(self.manifest["program"], self._run_segment, consts, self._count,
                                   check)
        # A guarded program (docs/bundle-format.md) runs when the guarded inputs equal these values.
        guarded = self.manifest.get("guarded")
        self._guard = ([(name, consts[cid]) for name, cid in guarded["guard"].items()]
                       if guarded else None)
        self._guarded_interp = (Interpreter(guarded["program"], self._run_segment, consts,
                                            self._count, check, name="guarded")
                                if guarded else None)

    def _by_shape(self, bundle: Bundle, seg: dict[str, Any],
                  general: Callable[[dict[str, Any]], list[Any]],
                  threads: int | None) -> Callable[[dict[str, Any]], list[Any]]:
        """A call that runs the static variant built for the feeds' shapes (numpy in and
        out), or ``general`` for shapes no variant was built for."""
        table: dict[tuple[Any, ...], Callable[[dict[str, Any]], list[Any]]] = {}
        for index, variant in enumerate(seg["variants"]):
            path = bundle.extract(variant["artifact"], Path(self._tmp.name))
            for extra in variant.get("extra_members", []):
                bundle.extract(extra, Path(self._tmp.name))
            session = get_backend(variant["engine"], BackendOptions(threads=threads)).load(path)
            self._sessions[f"{seg['id']}.v{index}"] = session  # closed with the others
            key = tuple(sorted((name, tuple(shape)) for name, shape in variant["shapes"].items()))
            table[key] = _numpy_call(session)

        def call(feeds: dict[str, Any]) -> list[Any]:
            key = tuple(sorted((name, tuple(int(d) for d in (v.shape if hasattr(v, "shape")
                                                                else np.shape(v))))
                               for name, v in feeds.items()))
            return table.get(key, general)(feeds)
        return call

    def _count(self, seg: str, ns: int) -> None:
        self.segment_ns[seg] += ns
        self.segment_calls[seg] += 1
        if self.on_segment is not None:
            self.on_segment(seg, ns)

    def _check_segment_feeds(self, seg: str, feeds: dict[str, Any]) -> None:
        for spec, static in self._fixed[seg]:
            value = feeds[spec.name]
            got = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
            want = spec.shape
            if (got != want) if static else (
                    len(got) != len(want) or any(isinstance(w, int) and w >= 0 and w != g
                                                 for w, g in zip(want, got))):
                raise InputError(
                    f"this input is outside what the bundle supports: segment {seg} was built "
                    f"for {spec.name!r} of shape {list(want)} (the shape the model declares or "
                    f"ONNX inferred) and would get shape {list(got)}",
                    segment=seg, value=spec.name, expected=list(want), got=list(got))

    def _run_segment(self, seg: str, feeds: dict[str, Any]) -> list[Any]:
        return self._calls[seg](feeds)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        feeds = self._check_inputs(feeds)
        interp = self._interp
        if self._guard is not None and all(
                feeds[name].shape == value.shape and np.array_equal(feeds[name], value)
                for name, value in self._guard):
            interp = self._guarded_interp
        interp.record_margins = self.record_margins
        outputs, self.last_path = interp.run(feeds)
        return outputs if self._numpy_out else [to_numpy(o) for o in outputs]

    def segment_stats(self) -> list[dict[str, Any]]:
        """Engine time per segment since the last ``reset_counters`` (measured, wall clock)."""
        return [{"segment": seg["id"], "engine": seg["engine"],
                 "calls": self.segment_calls[seg["id"]], "total_ns": self.segment_ns[seg["id"]]}
                for seg in self.manifest["segments"]]

    def reset_counters(self) -> None:
        for seg in self.segment_ns:
            self.segment_ns[seg] = 0
            self.segment_calls[seg] = 0

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        self._tmp.cleanup()

    def __enter__(self) -> "Runtime":
        return self


def _checked_upfront(manifest: dict[str, Any]) -> set[tuple[str, str]]:
    """(segment, input) pairs that ``run``'s check of the bundle inputs already covers: a
    segment called in the program's top block reading a bundle input with the same spec."""
    inputs = manifest["inputs"]
    specs = {s["id"]: s["input_specs"] for s in manifest["segments"]}
    programs = [manifest["program"]]
    if "guarded" in manifest:
        programs.append(manifest["guarded"]["program"])
    return {(step["segment"], d["name"]) for program in programs for step in program["body"]["steps"]
            if step["op"] == "call" for d in specs.get(step["segment"], []) if d in inputs}


def check_manifest(manifest: dict[str, Any], where: str) -> None:
    """Refuse (BundleError) a manifest this runtime could not follow: its specs, segments,
    constants and programs, each of the shape the loader and interpreter read without
    checking (its checksum only says the bytes are as written). Members named here exist:
    ``Bundle`` verified every listed one."""
    members = set(manifest.get("members") or {})

    def bad(what: str) -> BundleError:
        return BundleError(f"{where}: the manifest is malformed: {what}", path=where)

    def specs(value: Any, what: str) -> list[str]:
        if not isinstance(value, list) or not all(
                isinstance(d, dict) and isinstance(d.get("name"), str) and isinstance(d.get("dtype"), str)
                and isinstance(d.get("shape"), list) and all(isinstance(x, (int, str)) for x in d["shape"])
                for d in value):
            raise bad(f"{what} must be a list of {{name, shape, dtype}}")
        try:
            for d in value:
                np.dtype(d["dtype"])
        except TypeError as exc:
            raise bad(f"{what}: {exc}") from None
        return [d["name"] for d in value]

    def artifact(entry: dict[str, Any], what: str) -> None:
        named = [entry.get("artifact"), *(entry.get("extra_members") or [])]
        if not isinstance(entry.get("engine"), str) or not isinstance(entry.get("extra_members", []), list) \
                or not all(isinstance(m, str) and m in members for m in named):
            raise bad(f"{what} needs an engine and artifact/extra_members listed as members")

    inputs = specs(manifest.get("inputs"), "inputs")
    specs(manifest.get("outputs"), "outputs")
    segments = manifest.get("segments")
    if not isinstance(segments, list) or not all(isinstance(s, dict) and isinstance(s.get("id"), str)
                                                 for s in segments):
        raise bad("segments must be a list of objects with an id")
    for seg in segments:
        artifact(seg, f"segment {seg['id']!r}")
        specs(seg.get("input_specs"), f"segment {seg['id']!r} input_specs")
        variants = seg.get("variants") or []
        if not isinstance(variants, list) or not all(isinstance(v, dict) and isinstance(v.get("shapes"), dict)
                                                     for v in variants):
            raise bad(f"segment {seg['id']!r} variants must be objects with shapes")
        for v in variants:
            artifact(v, f"a variant of segment {seg['id']!r}")
    consts = manifest.get("consts")
    if not isinstance(consts, dict) or not all(isinstance(m, str) and m in members for m in consts.values()):
        raise bad("consts must map names to members")
    ids = {s["id"] for s in segments}
    check_program(manifest.get("program"), ids, set(consts), inputs)
    guarded = manifest.get("guarded")
    if guarded is not None:
        if not isinstance(guarded, dict) or not isinstance(guarded.get("guard"), dict) \
                or not all(c in consts for c in guarded["guard"].values()):
            raise bad("guarded needs a guard of input names to constants")
        check_program(guarded.get("program"), ids, set(consts), inputs)


def _numpy_call(session: Session) -> Callable[[dict[str, Any]], list[Any]]:
    """``session.run`` with other engines' tensors copied to numpy first."""
    def call(feeds: dict[str, Any]) -> list[Any]:
        return session.run({name: to_numpy(v) for name, v in feeds.items()})
    return call


def load(bundle_path: Path, *, threads: int | None = None, keep_tensors: bool = True) -> Runtime:
    """Open, verify and load a bundle (raises ``BundleError`` naming a bad member).

    ``keep_tensors=False`` copies every segment's values through numpy (for comparison).
    """
    return Runtime(Bundle(bundle_path), threads=threads, keep_tensors=keep_tensors)
