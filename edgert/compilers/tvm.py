"""Apache TVM (Relax), host step: ONNX compiled to a shared library the device session loads.

Needs onnx and the TVM compiler: ONNX -> Relax with weights bound (``import_onnx``) ->
fused, parallelised TIR -> ``<key>.so`` plus a ``<key>.json`` signature sidecar, cached
by model bytes, target, TVM version, pipeline and tuning records. The device step,
``edgert.backends.tvm.TvmBackend.load``, needs only the TVM runtime, numpy and the
sidecar. Measurements behind the pipeline choice are in docs/tvm-notes.md.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

from edgert.backends.base import BackendOptions, TensorSpec
from edgert.backends.tvm import SIDECAR_SCHEMA, read_signature, read_tuning, signature_path
from edgert.cache import cache_root
from edgert.errors import BackendError, BundleError, ModelError
from edgert.hashing import sha256_file
from edgert.onnx_file import load_model, model_digest

from .tvm_db import database_digest, open_database, records_emulated, tuning_target
from .tvm_target import export_compiler, is_cross, resolve_target, target_key

# Bump when the passes in _lower change: cached libraries from another pipeline are not reused.
PIPELINE_VERSION = "fuse+parallel-vectorize-unroll/1"
_DIRECT_OPS = {"If", "Constant"}  # handled by the importer outside its converter table
_JOBS_PER_CORE = 16  # MetaSchedule's default parallel extent per core
_MAX_VECTOR = 64
_UNROLL = 16


# ---------------------------------------------------------------- host: ONNX side

def onnx_signature(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs, shapes inferred where ONNX can."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort; unknown dims stay "?"
        pass
    graph = model.graph
    weights = {init.name for init in graph.initializer}

    def spec(value: Any) -> TensorSpec:
        ttype = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in ttype.shape.dim)
        return TensorSpec(value.name, dims, onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name)

    inputs = [spec(v) for v in graph.input if v.name not in weights]
    return inputs, [spec(v) for v in graph.output]


def check_supported(model: Any) -> None:
    """Raise ``ModelError`` naming the first node whose operator TVM's importer lacks."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map()) | _DIRECT_OPS
    pending = [model.graph]
    while pending:
        graph = pending.pop()
        for index, node in enumerate(graph.node):
            if node.op_type not in known:
                where = node.name or f"#{index}"
                raise ModelError(
                    f"TVM's ONNX importer does not support operator {node.op_type!r} "
                    f"(node {where!r}); try --backend ort",
                    op=node.op_type, node=where,
                )
            for attr in node.attribute:  # If/Loop bodies
                pending.extend([attr.g] if attr.HasField("g") else [])
                pending.extend(attr.graphs)


def import_onnx(model: Any, inputs: list[TensorSpec]) -> Any:
    """The Relax module of an ONNX model (weights bound), or ``ModelError`` naming what TVM lacks."""
    from tvm.relax.frontend.onnx import from_onnx

    from edgert.chatter import captured

    check_supported(model)
    shapes = {s.name: list(s.shape) for s in inputs if all(isinstance(d, int) for d in s.shape)}
    with captured("tvm", "ONNX import") as log:
        try:
            return from_onnx(model, shape_dict=shapes or None,
                             dtype_dict={s.name: s.dtype for s in inputs},
                             keep_params_in_input=False)
        except Exception as exc:  # converters raise NotImplementedError/ValueError/TVMError
            last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        # The failed import's frames hold a BlockBuilder whose destructor warns: free it here,
        # inside the capture, not at some later collection on the terminal.
        gc.collect()
    open_dims = sorted({d for s in inputs for d in s.shape if isinstance(d, str)})
    hint = f"; set {', '.join(f'--shape {d}=SIZE' for d in open_dims)}" if open_dims else ""
    raise ModelError(f"TVM cannot import the model: {last}{hint}; try --backend ort "
                     f"(importer output: {log})")


def import_specialized(model: Any, dims: Mapping[str, int]) -> tuple[Any, list[TensorSpec], list[TensorSpec]]:
    """(Relax module, inputs, outputs) of ``model`` with its input shapes fixed and folded first."""
    from .shapes import fix_input_shapes

    fixed = fix_input_shapes(model, dims).model
    inputs, outputs = onnx_signature(fixed)
    return import_onnx(fixed, inputs), inputs, outputs


# ------------------------------------------------------------- host: the pipeline

def _parallelize(mod: Any, target: Any) -> Any:
    """Annotate every PrimFunc like MetaSchedule's ParallelizeVectorizeUnroll and apply it.

    Untuned TIR is a single-threaded loop nest; this parallelises the outer
    spatial loops and vectorises/unrolls the inner ones, deterministically.
    """
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    cores = int(target.attrs.get("num-cores", 0) or 4)  # only bounds the fused parallel extent
    for gvar, func in list(mod.functions_items()):
        if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
            continue  # not TIR, or already given a tuned schedule by the database
        sch = s_tir.Schedule(func)
        try:
            root = sch.get_sblock("root")
        except s_tir.ScheduleError:  # no root block (e.g. a bare loop body): leave it serial
            continue
        sch.annotate(root, "meta_schedule.parallel", _JOBS_PER_CORE * cores)
        sch.annotate(root, "meta_schedule.vectorize", _MAX_VECTOR)
        sch.annotate(root, "meta_schedule.unroll_explicit", _UNROLL)
        if ms.postproc.RewriteParallelVectorizeUnroll().apply(sch):
            mod[gvar] = sch.mod["main"]
    return mod


def legalize(mod: Any, target: Any) -> Any:
    """Relax passes of 0.27's CPU pipeline up to fused TIR: the functions MetaSchedule tunes.

    ``compilers.tvm_tune`` extracts its tasks from this module, so compile and tune must share it.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    with target:
        mod = relax.transform.DecomposeOpsForInference()(mod)
        return tvm.transform.Sequential(cpu.library_dispatch_passes(target)
                                        + cpu.legalize_passes(target))(mod)


def _apply_database(mod: Any, target: Any, tuning_db: Path) -> Any:
    """Replace every PrimFunc that has a record for ``target`` by its best tuned schedule."""
    from tvm import relax

    tuned_target = tuning_target(target)
    with tuned_target, open_database(tuning_db, target):
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)


def _lower(mod: Any, target: Any, tuning_db: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """``legalize``, tuned schedules from ``tuning_db``, ``_parallelize`` for the rest, lowering.

    Also returns which fused functions got a tuned schedule and whether the records were
    timed under emulation (the sidecar keeps both, so a cached library still says whether
    and how the database applied to it).
    """
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    mod = legalize(mod, target)
    if tuning_db is not None:
        mod = _apply_database(mod, target, tuning_db)
    prims = {gvar.name_hint: func for gvar, func in mod.functions_items()
             if isinstance(func, tvm.tirx.PrimFunc)}
    tuned = {"functions": len(prims),
             "tuned_functions": sorted(name for name, func in prims.items()
                                       if func.attrs.get("tirx.is_scheduled", False))}
    if tuning_db is not None:
        tuned["tuning_emulated"] = records_emulated(tuning_db, target)
    with target:
        mod = _parallelize(mod, target)
        return tvm.transform.Sequential(cpu.dataflow_lower_passes(target)
                                        + cpu.finalize_passes(target))(mod), tuned


def default_cache_dir() -> Path:
    return cache_root() / "tvm"


def cache_path(model_path: Path, target: Any, cache_dir: Path | None = None,
               tuning_db: Path | None = None, dims: Mapping[str, int] | None = None) -> Path:
    """Where ``compile_onnx`` puts (or finds) the library for this model, target and database.

    The key covers the records for ``target`` in ``tuning_db`` (by content), so a
    database that gained records compiles anew and an unchanged one hits the cache.
    """
    import tvm

    digest = hashlib.sha256()
    digest.update(model_digest(Path(model_path)).encode())
    records = database_digest(tuning_db, target) if tuning_db is not None else "untuned"
    shapes = ",".join(f"{k}={v}" for k, v in sorted((dims or {}).items()))  # --shape sizes
    for part in (target_key(target), tvm.__version__, PIPELINE_VERSION, records, shapes):
        digest.update(b"\0" + part.encode())
    return Path(cache_dir or default_cache_dir()) / f"{Path(model_path).stem}-{digest.hexdigest()[:24]}.so"


class _InterruptsKept:
    """``with _InterruptsKept():`` raises ``KeyboardInterrupt`` at the end of the block if
    Ctrl-C came during it.

    The handler runs inside TVM's Python callbacks (``tirx.build`` from constant folding);
    C++ passes catch what it raises and fold nothing, or tvm_ffi hands it back as a
    ``RuntimeError`` that reads as "TVM cannot build this", so compile went on and exited 0.
    Remembering the signal itself does not depend on how TVM passes the exception on. A class,
    not a generator: an unfinished generator's clean-up raised a second interrupt at exit.
    """

    def __enter__(self) -> None:
        self._previous = signal.getsignal(signal.SIGINT)
        # only the main thread gets signals; an ignored Ctrl-C stays ignored
        self._active = threading.current_thread() is threading.main_thread() and self._previous != signal.SIG_IGN
        self._seen = False
        if self._active:
            signal.signal(signal.SIGINT, self._remember)

    def _remember(self, signum: int, frame: Any) -> None:
        self._seen = True
        raise KeyboardInterrupt

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)
        if self._seen and not isinstance(value, KeyboardInterrupt):
            raise KeyboardInterrupt from value  # instead of whatever TVM made of it, or of nothing


@contextlib.contextmanager
def _staged(path: Path) -> Iterator[str]:
    """A temporary path next to ``path``, renamed onto it when the block ends without error,
    so readers never see a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o755 if path.suffix == ".so" else 0o644)  # mkstemp made it 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compile_onnx(model_path: Path, target: Any, cache_dir: Path | None = None,
                 tuning_db: Path | None = None, dims: Mapping[str, int] | None = None) -> Path:
    """Compile an ONNX file for ``target`` into a cached ``.so`` (+ ``.json`` signature).

    With ``tuning_db`` (a directory written by ``tvm_tune.tune_model``), functions
    with records use their best measured schedule. A library already in the cache
    under the same key is returned untouched. ``dims`` sizes symbolic input dims: the
    library is built for them, shape arithmetic folded first (``compilers.shapes``).
    """
    import tvm

    model_path = Path(model_path)
    out = cache_path(model_path, target, cache_dir, tuning_db, dims)
    if is_cached(out):
        return out
    _warn_if_damaged(out)
    model = load_model(model_path)
    mod, inputs, outputs = import_specialized(model, dims or {})
    fcompile = export_compiler(target)
    from edgert.chatter import captured

    try:
        with captured("tvm", f"compile {model_path.name}"):  # TOPI's warnings ('Fast mode segfaults ...')
            lowered, tuned = _lower(mod, target, tuning_db)
            executable = tvm.compile(lowered, target=target, relax_pipeline=None)
    except Exception as exc:
        raise BackendError(f"TVM failed to compile {model_path} for {target_key(target)}: {exc}",
                           path=str(model_path)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {"schema": SIDECAR_SCHEMA, "tvm": tvm.__version__, "target": target_key(target),
               "pipeline": PIPELINE_VERSION,
               "tuning_db": database_digest(tuning_db, target) if tuning_db is not None else None,
               **tuned,
               "inputs": [s.to_dict() for s in inputs],
               "outputs": [s.to_dict() for s in outputs]}
    with _staged(out) as library:
        try:
            executable.export_library(library, fcompile=fcompile)
        except Exception as exc:
            raise BackendError(f"TVM could not link {out}: {exc}", path=str(out)) from exc
        sidecar["library_sha256"] = sha256_file(Path(library))  # checked on every cache hit
        with _staged(signature_path(out)) as signature:
            Path(signature).write_text(json.dumps(sidecar, indent=1))
    return out


def is_cached(library: Path) -> bool:
    """A library counts only with its sidecar (the sidecar is renamed into place first, the .so
    last) and only while both are whole: see ``cache_damage``."""
    return Path(library).exists() and signature_path(library).exists() and cache_damage(library) is None


def cache_damage(library: Path) -> str | None:
    """Why a cached library and its sidecar must not be used, or None when they are whole.

    A truncated or bit-flipped ``.so`` loaded, then crashed or computed garbage, and was
    packed into bundles whose own checksums then vouched for it; the sidecar records the
    library's sha256, so any change to either file is caught before use.
    """
    try:
        read_signature(library)
        recorded = json.loads(signature_path(library).read_text()).get("library_sha256")
        actual = sha256_file(library)
    except BundleError as exc:
        return f"its signature is unreadable: {exc.__cause__ or exc}"
    except OSError as exc:
        return f"unreadable: {exc}"
    if recorded is None:
        return "no checksum recorded (an older edgert wrote it)"
    return None if recorded == actual else "its sha256 does not match the one recorded"


def _warn_if_damaged(library: Path) -> None:
    """One line on stderr when a cache entry exists but is damaged: it is compiled again."""
    if Path(library).exists() and signature_path(library).exists():
        sys.stderr.write(f"edgert: warning: cached TVM library {library} is damaged "
                         f"({cache_damage(library)}); compiling it again\n")


def compile_cached(model_path: Path, options: BackendOptions) -> tuple[Path, dict[str, Any]]:
    """The library for ``model_path`` and ``options`` (compiled on a cache miss), and what the
    compile did: target, cache hit or miss, artifact and, with a tuning database, its digest
    and which kernels it tuned. These notes go into the result's backend options."""
    target = resolve_target(options.target)
    db = options.tuning_db
    out = cache_path(model_path, target, options.cache_dir, db, options.dims)
    notes: dict[str, Any] = {"target": target_key(target), "cache": "hit" if is_cached(out) else "miss",
                             "artifact": str(out), "pipeline": PIPELINE_VERSION}
    if db is not None:
        notes.update(tuning_db=str(db), tuning_db_sha256=database_digest(db, target))
    with _InterruptsKept():
        library = compile_onnx(model_path, target, options.cache_dir, db, options.dims)
    if db is not None:
        notes.update(read_tuning(library))
    return library, notes


def check_runs_here(options: BackendOptions, model_path: Path) -> None:
    """Refuse, before compiling, a library that could not be loaded on this machine."""
    target = resolve_target(options.target)
    if is_cross(target):
        raise BackendError(f"a library for {target_key(target)} cannot run on this machine; "
                           "compile it here and run it on the device", path=str(model_path))
