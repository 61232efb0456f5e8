"""TVM targets by edgert name, and how to link a library for each.

Host-only. 0.27 rejects "llvm -mtriple=..." strings, and ``-mcpu=native``
silently falls back to a generic CPU, so targets are dicts with the CPU named.
"""
from __future__ import annotations

import json
import shutil
from typing import Any, Callable

from edgert.errors import BackendError, UsageError

AARCH64_CXX = "aarch64-linux-gnu-g++"  # Debian package g++-aarch64-linux-gnu
TARGET_NAMES = ("host", "aarch64")


def target_dict(name: str) -> dict[str, Any]:
    """The target dict for ``host``, ``aarch64`` or a JSON object given verbatim."""
    if name == "host":
        from tvm.target import codegen

        # no "num-cores": it would make the cache key depend on the current affinity mask
        return {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()}
    if name == "aarch64":
        return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    if name.lstrip().startswith("{"):
        try:
            spec = json.loads(name)
        except ValueError as exc:
            raise UsageError(f"--target is not valid JSON: {exc}", target=name) from exc
        if not isinstance(spec, dict) or "kind" not in spec:
            raise UsageError('a JSON --target must be an object with a "kind", e.g. {"kind": "llvm"}',
                             target=name)
        return spec
    raise UsageError(f"unknown TVM target {name!r}; use one of {', '.join(TARGET_NAMES)} "
                     'or a JSON target such as {"kind": "llvm", "mcpu": "cortex-a72"}', target=name)


def resolve_target(name: str) -> Any:
    """A ``tvm.target.Target`` for an edgert target name (see ``target_dict``)."""
    import tvm

    spec = target_dict(name)
    if spec["kind"] != "llvm":  # TVM built for CUDA then failed at run time, 15 s later
        raise UsageError(f"edgert's TVM engine builds for the CPU: a JSON target needs \"kind\": \"llvm\", "
                         f"not {spec['kind']!r}", target=name)
    _check_llvm(spec, name)
    try:
        return tvm.target.Target(spec)
    except Exception as exc:  # TVM raises ValueError/TVMError variants for bad attributes
        raise UsageError(f"TVM rejected target {json.dumps(spec)}: {exc}", target=name) from exc


def _check_llvm(spec: dict[str, Any], name: str) -> None:
    """Refuse an ``mtriple`` LLVM was not built for and an ``mcpu`` it does not know for the
    triple: TVM accepts both, then LLVM prints an error line per function it compiles and
    quietly falls back to a generic CPU (a bundle recording a CPU it was not built for)."""
    import tvm
    from tvm.target import codegen

    triple = str(spec.get("mtriple") or "") or str(codegen.llvm_get_system_triple())
    if triple.split("-")[0] not in set(codegen.llvm_get_targets()):
        raise UsageError(f"LLVM in this TVM has no target for triple {triple!r}; "
                         f"architectures: {', '.join(sorted(codegen.llvm_get_targets()))}", target=name)
    cpu = str(spec.get("mcpu", "host CPU"))  # "" named no CPU: LLVM fell back to generic, loudly
    if "mcpu" in spec and not codegen.llvm_is_valid_cpu(cpu, triple):
        known = codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple}))
        hint = "" if spec.get("mtriple") else '; a CPU of another architecture needs its "mtriple" too'
        raise UsageError(f"LLVM does not know CPU {cpu!r} for {triple} (it knows {len(known)}, e.g. "
                         f"{', '.join(list(known)[:6])}){hint}", target=name)
    _check_features(spec.get("mattr"), triple, name)


def _check_features(mattr: Any, triple: str, name: str) -> None:
    """Refuse a ``mattr`` entry that is not ``+feature``/``-feature`` of a feature LLVM knows for
    the triple: LLVM prints "not a recognized feature (ignoring feature)" and builds without it.
    A feature is known when asking for it alone turns it on (LLVM lists no feature names)."""
    import tvm
    from tvm.target import codegen

    from edgert.chatter import captured

    if mattr is None:
        return
    items = mattr
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise UsageError(f"\"mattr\" must be a list of \"+feature\"/\"-feature\" strings, got {mattr!r}",
                         target=name)
    for item in items:
        feature = item[1:]
        if item[:1] not in ("+", "-") or not feature:
            raise UsageError(f"mattr {item!r} must be \"+feature\" or \"-feature\" (e.g. \"+neon\")", target=name)
        with captured("tvm", f"checking mattr {item} for {triple}"):  # LLVM's own warning line
            on = codegen.llvm_get_cpu_features(
                tvm.target.Target({"kind": "llvm", "mtriple": triple, "mattr": [f"+{feature}"]}))
        if feature not in set(on):
            raise UsageError(f"LLVM does not know feature {feature!r} (mattr {item!r}) for {triple}: it "
                             "would build without it", target=name)


def target_key(target: Any) -> str:
    """Canonical text of a target (sorted JSON of all attributes), used in cache keys."""
    return json.dumps(dict(target.export()), sort_keys=True, default=list)


def is_cross(target: Any) -> bool:
    """True when code for ``target`` cannot run on this machine (a foreign triple)."""
    import tvm

    triple = str(target.attrs.get("mtriple", "") or "")
    if not triple:
        return False
    host = str(tvm.target.codegen.llvm_get_system_triple())
    return triple.split("-")[0] != host.split("-")[0]


def export_compiler(target: Any) -> Callable[..., None] | None:
    """The ``fcompile`` for ``export_library``: None (host cc) or a cross g++ for aarch64."""
    triple = str(target.attrs.get("mtriple", "") or "")
    if not is_cross(target):
        return None
    if not triple.startswith("aarch64"):
        raise BackendError(f"no cross linker known for triple {triple!r}; edgert links aarch64 only",
                           triple=triple)
    if shutil.which(AARCH64_CXX) is None:
        raise BackendError(f"cross-linking for {triple} needs {AARCH64_CXX}; install the Debian "
                           "package g++-aarch64-linux-gnu", triple=triple)
    from tvm.support import cc

    # a fresh function each time: cross_compiler appends to its option list in place
    return cc.cross_compiler(AARCH64_CXX, options=[])
