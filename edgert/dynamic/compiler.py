"""Compile a dynamic ONNX model into one bundle file (host only).

normalize -> partition -> prepare each segment on an engine (``engines``) -> write the
bundle. With ``backend="auto"`` every segment is timed on each engine that can build
it (with inputs captured from sample runs) and the faster one kept; then that
partitioned bundle is timed against the whole model as one ORT segment (``whole``), and
the faster of the two is written. The timing happens where the bundle will run: on this
machine, or with a ``timer`` on a device whose agent times each candidate as a bundle
(``candidates``); there ORT and the whole model are baselines that another candidate
replaces only when clearly faster (``auto_rule``). All times go into the manifest with the
facts of where they were taken (``timed_on``). For another machine's target without a
timer, auto refuses: times taken here would choose engines for the wrong CPU.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

import edgert
from edgert.backends import TensorSpec
from edgert.errors import BackendError, EdgertError, InputError, ModelError, UsageError
from edgert.tensors import FeedCheck

from . import auto_rule, engines, guard, specialize_calls, whole
from .bundle import npy_bytes, write_bundle
from .candidates import BundleTimer, TimedCandidates, keep, mark_incomplete, prepare_keep_dir, segment_bundle
from .normalize import NormalizedModel, normalize
from .partition import Partition, Segment, partition
from .runtime import arch_name, machine_arch
from .specialize import fold_constants

BACKENDS = ("ort", "tvm", "tflite", "auto")
BASELINE_ENGINE = "ort"  # auto keeps it for a segment unless another engine is clearly faster
STATIC_ENGINES = ("tvm", "tflite")  # need shapes from a sample run; ORT runs what they cannot
SUFFIX = ".edgert"


def target_arch(target: str) -> str:
    """The CPU architecture a target string builds for ("host", "aarch64" or JSON)."""
    if target == "host":
        return machine_arch()
    if target == "aarch64":
        return "aarch64"
    try:
        spec = json.loads(target)
        kind, triple = spec.get("kind"), str(spec.get("mtriple") or "")
    except (ValueError, AttributeError):
        raise UsageError(f"unknown target {target!r}: use host, aarch64 or a JSON target dict",
                         target=target) from None
    if kind != "llvm":  # ORT and LiteRT segments run on the CPU; TVM's GPU kinds are not built in
        raise UsageError(f"a bundle's segments run on the board's CPU: a JSON target needs "
                         f'"kind": "llvm", not {kind!r}', target=target)
    return triple.split("-")[0] or machine_arch()


def check_options(backend: str, target: str) -> list[str]:
    """The engines ``backend`` tries, once it and ``target`` are known to fit (UsageError):
    cheap, so a command can call it before it shows any progress."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r} for dynamic compilation; choose one of "
                         f"{', '.join(BACKENDS)}", backend=backend)
    target_arch(target)
    candidates = engines.candidates(backend, target)
    if "tvm" in candidates:  # before the model is read: LLVM would log an error per function
        from edgert.compilers import check_target

        check_target(target)
    return candidates


def compile(model_path: Path, *, backend: str = "auto", target: str = "host",
            out: Path | None = None, cache_dir: Path | None = None,
            threads: int | None = None, tuning_db: Path | None = None,
            samples: Sequence[Mapping[str, np.ndarray]] | None = None,
            timer: BundleTimer | None = None, keep_candidates: Path | None = None) -> Path:
    """Compile ``model_path`` into a bundle; returns the bundle's path.

    ``tuning_db``: an ``edgert tune`` database whose records TVM segments use (each
    segment's manifest entry then says which of its kernels were tuned).
    ``samples``: model inputs (one feed dict each) for the compile-time sample run, in
    place of seeded random ones: they set the ranks TVM is given, the inputs ``auto``
    times on and the paths it sees. With ``backend="tvm"``, when some segment falls back
    to ORT, small integer inputs that had one value in every sample get a guarded
    program specialised to that value (``guard``).
    ``timer``: times auto's candidates on a device (``edgert.devices.timer``) instead of here.
    ``keep_candidates``: a directory that receives every candidate auto timed, as a bundle,
    with the inputs it was timed on (``candidates.keep``).
    """
    candidates = check_options(backend, target)
    prepare_keep_dir(keep_candidates)
    if tuning_db is not None and backend == "ort":
        raise UsageError("a tuning database applies to TVM segments; use --backend tvm or auto")
    model_path = Path(model_path)
    arch = target_arch(target)
    timed_on = _timing_place(backend, target, arch, timer)
    norm = normalize(model_path)
    graph = norm.model.graph
    if not graph.node:  # an empty file parses as an empty model: a bundle of nothing, 'compiled'
        raise ModelError(f"{model_path} is not an ONNX model with a graph (no nodes)", path=str(model_path))
    inputs = [engines.spec(i) for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if samples is not None:
        samples = _checked_samples(samples, inputs)
    part = partition(norm)
    host_folded = fold_constants(part)
    # auto also times the whole model as one ORT segment (see ``whole``)
    whole_candidate = backend == "auto" and engines.available("ort")
    static = any(e in STATIC_ENGINES for e in candidates)
    seen = (engines.probe(part, graph, samples=samples)
            if (static or whole_candidate) and engines.available("ort")
            else engines.Probe({}, {}))
    fallback = backend in STATIC_ENGINES and engines.available("ort")
    built = {seg.id: _build(seg, candidates, target, cache_dir, seen.shapes.get(seg.id), fallback,
                            tuning_db)
             for seg in part.segments}
    kept = keep_candidates if backend == "auto" else None
    mark_incomplete(kept, True)
    if len(candidates) > 1:
        _choose_fastest(part, built, seen, threads, _Timing(timer, target, arch, keep_candidates))
    variants = ({seg.id: _variants(seg, candidates[0], seen.calls.get(seg.id, ()), target, cache_dir,
                                   tuning_db)
                 for seg in part.segments if built[seg.id].get("ort") and
                 built[seg.id]["ort"].note.get("fallback_from") and
                 specialize_calls.has_symbolic_inputs(seg)} if fallback else {})
    segments, consts, members = _contents(part, built, variants)
    extra: dict[str, Any] = {}
    if backend == "tvm" and fallback and samples and any(art.note.get("fallback_from")
                                    for options in built.values() for art in options.values()):
        extra = _guarded(norm, inputs, samples,  # TVM only: a fallback is a failure here
                         lambda seg, observed: _build(seg, ["tvm"], target, cache_dir, observed,
                                                      False, tuning_db),
                         segments, consts, members)
    used = sorted({s["engine"] for s in segments})
    if "tvm" not in used:
        arch = "any"  # segment ONNX files run wherever the engine is installed
    manifest = {
        "created_by": f"edgert {edgert.__version__}",
        "source": {"name": model_path.name, "sha256": norm.source_sha256},
        "target": target, "target_arch": arch,
        "engines": {name: engines.version(name) for name in used},
        "inputs": [i.to_dict() for i in inputs],
        "outputs": [engines.spec(o).to_dict() for o in graph.output],
        "program": part.program, "segments": segments, "consts": consts,
        "host_folded": host_folded, **extra,
    }
    if timed_on is not None:
        manifest["timed_on"] = timed_on
    if whole_candidate:
        manifest, members = whole.choose(norm, manifest, members, seen.inputs, threads,
                                         timer, keep_candidates)
    mark_incomplete(kept, False)  # every candidate kept
    out = Path(out) if out is not None else model_path.with_suffix(SUFFIX)
    return write_bundle(out, manifest, members)


def _timing_place(backend: str, target: str, arch: str,
                  timer: BundleTimer | None) -> dict[str, Any] | None:
    """Facts of the machine auto times on (None when nothing is timed); refuses a timer
    of another architecture than the target, and timing here for another machine's target."""
    if backend != "auto":
        return None
    if timer is not None:
        device_arch = arch_name(str(timer.facts.get("arch", "")))
        if device_arch != arch:
            raise UsageError(f"the timing device is {device_arch or 'of unknown architecture'} but "
                             f"the target {target!r} builds for {arch}: pass the --target of "
                             f"that device", device_arch=device_arch, target_arch=arch)
        return dict(timer.facts)
    if arch != machine_arch():
        raise UsageError(f"--backend auto times every candidate where the bundle will run, and "
                         f"target {target!r} ({arch}) is not this {machine_arch()} machine: "
                         f"pass --device (a board of that target) or pick a backend "
                         f"(--backend tvm or ort)", target=target)
    from edgert import device_facts

    return dict(device_facts.collect("local"), emulated=False)


def _checked_samples(samples: Sequence[Mapping[str, np.ndarray]],
                     inputs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """The samples as numpy feeds, each checked against the model's inputs (InputError)."""
    check = FeedCheck(inputs)
    feeds = []
    for index, sample in enumerate(samples):
        feed = {name: np.asarray(value) for name, value in sample.items()}
        try:
            check(feed)
        except InputError as exc:
            raise InputError(f"sample {index}: {exc.message}", sample=index, **exc.fields) from exc
        feeds.append(feed)
    if not feeds:
        raise UsageError("samples is empty: pass at least one input, or leave samples out")
    return feeds


def _variants(seg: Segment, engine: str, calls: Any, target: str, cache_dir: Path | None,
              tuning_db: Path | None) -> specialize_calls.Variants:
    """Static ``engine`` variants of a segment that fell back to ORT, one per call shape seen."""
    return specialize_calls.build(
        seg, sorted(calls),
        lambda static, observed: engines.prepare(engine, static, target, cache_dir, observed,
                                                 tuning_db))


def _contents(part: Partition, built: dict[str, dict[str, engines.Artifact]],
              variants: dict[str, specialize_calls.Variants] | None = None,
              ) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, bytes]]:
    """Manifest segment entries, const table and bundle members of a built partition."""
    members: dict[str, bytes] = {}
    segments = []
    for seg in part.segments:
        (art,) = built[seg.id].values()
        entry, seg_members = engines.manifest_entry(seg, art)
        found = (variants or {}).get(seg.id)
        if found is not None:
            entry["variants"] = found.entries(seg_members)
            if found.failed:
                entry["variants_failed"] = found.failed
        segments.append(entry)
        members.update(seg_members)
    consts = {}
    for cid, value in part.consts.items():
        members[f"consts/{cid}.npy"] = npy_bytes(value)
        consts[cid] = f"consts/{cid}.npy"
    return segments, consts, members


def _guarded(norm: NormalizedModel, inputs: list[TensorSpec],
             samples: list[dict[str, np.ndarray]], build_tvm: guard.Builder,
             segments: list[dict[str, Any]], consts: dict[str, str],
             members: dict[str, bytes]) -> dict[str, Any]:
    """The manifest's ``guarded`` program (its segments, consts and members added to the
    bundle's), or ``guard_skipped`` saying why there is none."""
    values = guard.fixed_inputs(inputs, samples)
    if not values:
        return {"guard_skipped": f"no integer or bool input of at most {guard.MAX_ELEMENTS} "
                                 f"elements had one value across the samples"}
    try:
        special = guard.build(norm, values, samples, build_tvm)
    except EdgertError as exc:
        return {"guard_skipped": f"the program specialised to {', '.join(values)} cannot run "
                                 f"fully on TVM either: {_first_line(exc.message)}"}
    more_segments, more_consts, more_members = _contents(special.part, special.built)
    segments += more_segments
    consts.update(more_consts)
    members.update(more_members)
    return {"guarded": {"guard": special.guard, "program": special.part.program,
                        "host_folded": special.host_folded}}


def _build(seg: Segment, candidates: list[str], target: str, cache_dir: Path | None,
           observed: dict[str, set[tuple[int, ...]]] | None,
           fallback: bool, tuning_db: Path | None) -> dict[str, engines.Artifact]:
    """Prepare ``seg`` on every candidate engine; a sole candidate's failure is fatal.

    ``fallback`` (backend="tvm" or "tflite" with ORT installed): a segment that engine
    cannot build runs on ORT instead, and the manifest's ``choice`` says so and why.
    """
    built: dict[str, engines.Artifact] = {}
    failures = []
    for engine in candidates:
        try:
            built[engine] = engines.prepare(engine, seg, target, cache_dir, observed, tuning_db)
        except (BackendError, ModelError) as exc:
            failures.append(f"{engine}: {_first_line(exc.message)}")
    if not built and fallback:
        (engine,) = candidates
        art = engines.prepare("ort", seg, target, cache_dir)
        art.note = {"chosen": "ort", "fallback_from": engine, "failed": failures,
                    "reason": f"{engine} could not build this segment (see failed); it runs on ORT"}
        return {"ort": art}
    if not built:
        raise ModelError(
            f"segment {seg.id} (nodes {', '.join(seg.nodes[:5])}{'...' if len(seg.nodes) > 5 else ''})"
            f" could not be built: {'; '.join(failures)}",
            segment=seg.id, nodes=seg.nodes, ops=sorted(set(seg.ops)))
    for engine, art in built.items():
        art.note = {"failed": failures} if failures else {}
    return built


def _first_line(message: str, limit: int = 300) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line[:limit]


def _keep(options: dict[str, engines.Artifact], engine: str, reason: str,
          times: dict[str, float] | None = None) -> None:
    art = options[engine]
    art.note = dict(art.note, chosen=engine, reason=reason)
    if times is not None:
        art.note["measured_ms"] = times
    options.clear()
    options[engine] = art


@dataclasses.dataclass(frozen=True)
class _Timing:
    """Where segment candidates are timed: here (no timer) or on the timer's device."""

    timer: BundleTimer | None
    target: str
    arch: str
    keep_dir: Path | None

    def segment_ms(self, seg: Segment, engine: str, art: engines.Artifact,
                   sample: dict[str, np.ndarray], threads: int | None) -> float:
        """The median here (no timer), keeping the candidate when asked."""
        if self.keep_dir is not None:
            with tempfile.TemporaryDirectory(prefix="edgert-cand-") as tmp:
                keep(self.keep_dir, self.bundle(Path(tmp), seg, engine, art), [sample])
        return engines.time_ms(engine, art, sample, threads)

    def on_device(self, seg: Segment, options: dict[str, engines.Artifact],
                  sample: dict[str, np.ndarray]) -> TimedCandidates:
        """Every engine's bundle of ``seg`` timed interleaved on the timer's device."""
        assert self.timer is not None
        with tempfile.TemporaryDirectory(prefix="edgert-cand-") as tmp:
            bundles = {engine: self.bundle(Path(tmp), seg, engine, art) for engine, art in options.items()}
            for bundle in bundles.values():
                keep(self.keep_dir, bundle, [sample])
            return self.timer.compare(bundles, [sample], BASELINE_ENGINE)

    def bundle(self, tmp: Path, seg: Segment, engine: str, art: engines.Artifact) -> Path:
        return segment_bundle(tmp / f"{seg.id}.{engine}.edgert", seg, art, self.target, self.arch)

    def where(self) -> str:
        if self.timer is None:
            return "this machine"
        facts = self.timer.facts
        return (f"the device {facts.get('hostname', '?')} ({facts.get('arch', '?')}"
                f"{', emulated' if facts.get('emulated') else ''}; see timed_on)")


def _choose_fastest(part: Partition, built: dict[str, dict[str, engines.Artifact]],
                    seen: engines.Probe, threads: int | None, timing: _Timing) -> None:
    """Time each segment on each engine it built for, where ``timing`` says, and keep one:
    here the fastest median; on a device ORT unless another engine is clearly faster
    (``auto_rule``: a choice that re-timing with bench --device reproduces)."""
    feeds = seen.feeds
    for seg in part.segments:
        options = built[seg.id]
        if len(options) == 1:
            (engine,) = options
            _keep(options, engine, "the only engine that could build it")
            continue
        sample = feeds.get(seg.id) or engines.synthetic_feeds(seg)
        if timing.timer is not None:
            _keep_device_choice(options, timing.on_device(seg, options, sample), timing.where())
            continue
        times: dict[str, float] = {}
        timing_failed: dict[str, str] = {}
        for engine, art in options.items():
            try:
                times[engine] = timing.segment_ms(seg, engine, art, sample, threads)
            except EdgertError as exc:
                timing_failed[engine] = _first_line(exc.message)
        if times:
            best = min(times, key=times.get)
            _keep(options, best, f"fastest median time on {timing.where()} at compile time", times)
        else:
            _keep(options, "ort", "no engine could be timed", times)
        if timing_failed:
            options[next(iter(options))].note["timing_failed"] = timing_failed


def _keep_device_choice(options: dict[str, engines.Artifact], timed: TimedCandidates,
                        where: str) -> None:
    """Keep the engine ``auto_rule`` picks from the device's interleaved samples (the
    fastest median when ORT could not be timed there)."""
    samples = timed.samples_ms
    times = {e: statistics.median(s) for e, s in samples.items()}
    if BASELINE_ENGINE in samples:
        decision = auto_rule.decide(BASELINE_ENGINE, samples)
        _keep(options, decision.chosen, f"timed on {where} at compile time, interleaved: "
              f"{decision.reason}", times)
        options[decision.chosen].note.update(samples_ms=samples, decision=decision.to_dict(),
                                             timing=timed.to_dict())
    elif times:
        best = min(times, key=times.get)
        _keep(options, best, f"fastest median time on {where} at compile time "
              f"(ORT could not be timed there)", times)
    else:
        _keep(options, BASELINE_ENGINE, "no engine could be timed", times)
    if timed.failed:
        options[next(iter(options))].note["timing_failed"] = dict(timed.failed)
