"""MetaSchedule tuning of a bundle's TVM segments into one database (host only).

What is tuned must be exactly what TVM compiled, or the records would not match at
compile time: the bundle keeps each segment's unspecialised ONNX, so ``tvm_sources``
re-runs ``specialize`` with the ranks the manifest recorded and checks the result
against the sha256 ``engines`` stored when it built the library. All segments share
one budget and one round-robin scheduler (``compilers.tvm_tune.tune_model``); a kernel
that recurs across segments is one task. ``edgert compile --tuning-db`` applies them.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgert.errors import BundleError, UsageError

from .bundle import Bundle, sha256
from .specialize import specialize

if TYPE_CHECKING:
    from edgert.compilers.tvm_tune import TuneSummary


def tvm_sources(bundle: Bundle) -> dict[str, bytes]:
    """Segment id -> the ONNX bytes TVM compiled, for every TVM segment of ``bundle``
    (a guarded program's segments included: they are bundle segments like any other)."""
    sources = {}
    for entry in bundle.manifest["segments"]:
        if entry["engine"] != "tvm":
            continue
        special = entry.get("specialized", {})
        if "source_sha256" not in special:
            raise BundleError(f"{bundle.path} does not record what TVM compiled for {entry['id']} "
                              "(an older edgert made it); recompile it", path=str(bundle.path))
        ranks = {s["name"]: len(s["shape"]) for s in entry["input_specs"]}
        observed = {name: {(1,) * ranks[name]} for name in special.get("ranks_from_sample", [])}
        data = specialize(bundle.read(entry["onnx"]), observed).model.SerializeToString(deterministic=True)
        if sha256(data) != special["source_sha256"]:
            raise BundleError(f"{bundle.path}: segment {entry['id']} specialises differently with this "
                              "edgert than when it was compiled; recompile the bundle",
                              path=str(bundle.path), segment=entry["id"])
        sources[entry["id"]] = data
    return sources


def bundle_target(bundle: Bundle) -> str:
    """The exact TVM target the bundle's libraries were built for (from their sidecars)."""
    keys = {json.loads(bundle.read(Path(entry["artifact"]).with_suffix(".json").as_posix()))["target"]
            for entry in bundle.manifest["segments"] if entry["engine"] == "tvm"}
    if len(keys) != 1:
        raise BundleError(f"{bundle.path}: its TVM segments name {len(keys)} targets, expected one",
                          path=str(bundle.path))
    return keys.pop()


def tune_bundle(path: Path, db_root: Path, target: str | None = None, **options: Any) -> TuneSummary:
    """Tune every TVM segment of the bundle at ``path`` into ``db_root``.

    ``target`` (an edgert target name) must be the one the bundle was compiled for;
    by default it is taken from the bundle. ``options`` go to ``tune_model``.
    """
    from edgert.compilers.tvm_target import resolve_target, target_key
    from edgert.compilers.tvm_tune import tune_model

    bundle = Bundle(path)
    sources = tvm_sources(bundle)
    if not sources:
        raise UsageError(f"{path} has no TVM segments to tune; compile it with --backend tvm",
                         path=str(path))
    tvm_target = resolve_target(bundle_target(bundle))
    if target is not None and target_key(resolve_target(target)) != target_key(tvm_target):
        raise UsageError(f"{path} was compiled for {target_key(tvm_target)}, not for --target {target}; "
                         "leave --target out to tune for the bundle's target", path=str(path))
    with tempfile.TemporaryDirectory(prefix="edgert-tune-bundle-") as tmp:
        files = []
        for seg_id, data in sources.items():
            files.append(Path(tmp) / f"{seg_id}.onnx")
            files[-1].write_bytes(data)
        return tune_model(files, db_root, tvm_target, **options)
