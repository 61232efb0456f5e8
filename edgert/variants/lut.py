"""FBNet-style latency (and energy) lookup tables of an All-in-One file's blocks, per frequency.

A *block* is a chain of nodes ORT runs as one fused kernel or close to it: a node, then
each following BatchNormalization / activation that is the only consumer of the previous
output. A block's cost depends only on the widths of the prunable groups its tensors carry
(its *groups*: usually the input and output groups of one conv), so the table holds, per
block, one entry for every combination of its groups' candidate widths (the file's level
widths), measured alone: the block cut out as its own graph, weights sliced from the file,
run by the same kind of ORT session the runtime builds.

A configuration's predicted time is the sum of its blocks' entries plus one call's fixed
cost. Each entry has its own call's cost taken out: the block's *twin* (its inputs, one
Identity, nothing else) timed the same way; the network's one call is an empty graph's. Whole-network
*checks* on a few configurations (the uniform levels and random ones) measure how well the
sum predicts; per frequency a line ``measured = a * predicted + b`` is fitted to them and
both errors (raw and corrected) are reported as percentiles.

Timing: each entry is the fastest of ``repeats`` windows, each the mean time of as many
calls as fill ``window_ms``. A window spans several cgroup periods, so an emulated
(CPU-quota) level slows a 50 µs block as it slows the whole network; a per-call median
would hide the quota.

The measurement runs in this process at frequency settings the caller gives (context
managers that pin a cpufreq clock or an emulated level and restore it:
``cpufreq_settings`` here, ``frequency.emulated_settings``). Host-only: imports onnx.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgert import device_facts
from edgert.errors import UsageError

from . import config as C
from . import config_graph, tables
from .frequency import FrequencySetting
from .ranges import EXTERNAL_LOCATION, slice_ranges
from .runtime import VariantModel

SCHEMA = "edgert.aio.lut/1"
FUSED = frozenset({"BatchNormalization", "Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid",
                   "Tanh", "Gelu", "Elu"})


@dataclasses.dataclass(frozen=True)
class LutSettings:
    window_ms: float = 30.0  # one timing window (several cgroup periods for the emulated domain)
    repeats: int = 5  # windows per entry; the entry is the fastest (``time_ms``)
    checks: int = 8  # random whole-network configurations besides the uniform levels
    seed: int = 0
    threads: int | None = 1
    clock: str = "wall"  # or "cpu": this thread's CPU time (see time_ms)

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.repeats < 1 or self.checks < 0:
            raise UsageError("lut: need window_ms > 0, repeats >= 1, checks >= 0")
        if self.clock not in ("wall", "cpu"):
            raise UsageError(f"lut: clock must be 'wall' or 'cpu', not {self.clock!r}")
        if self.clock == "cpu" and self.threads != 1:
            raise UsageError("lut: the cpu clock needs threads=1 (ORT then computes in the calling thread)")


@dataclasses.dataclass
class Block:
    nodes: list[Any]  # onnx NodeProto, in graph order
    groups: tuple[int, ...]  # prunable groups whose width changes any of its tensors


def time_ms(run: Callable[[], object], settings: LutSettings) -> float:
    """Mean ms per call over a window of ``window_ms``; the least of ``repeats`` windows (on a
    shared machine the window least disturbed by other processes; blocks and whole networks
    are timed alike, so the choice does not bias the sum against the whole).

    ``clock="cpu"`` counts this thread's CPU time instead of wall time: with one engine thread
    ORT computes in the calling thread, so this is the work itself, unaffected by other
    processes taking the CPU (on a machine shared with a load of 15 on 2 cores, wall time
    ran 20x the CPU time). It is not a latency: it ignores stalls, so it cannot see an
    emulated CPU quota (``measure`` refuses that combination)."""
    clock = time.thread_time if settings.clock == "cpu" else time.perf_counter
    run()
    t0 = clock()
    run()
    once = max(clock() - t0, 1e-6)
    n = max(1, int(settings.window_ms / 1e3 / once))
    windows = []
    for _ in range(settings.repeats):
        t0 = clock()
        for _ in range(n):
            run()
        windows.append((clock() - t0) / n * 1e3)
    return float(min(windows))


# -- blocks -----------------------------------------------------------------------------------

def _full_graph(vm: VariantModel, feeds: dict[str, np.ndarray]) -> Any:
    """Level 0's graph declared at full width with concrete input shapes (for shape inference)."""
    import onnx

    meta = vm._file.meta
    full = C.make(meta, {g: n for g, n in C.prunable(meta).items()})
    shapes = {n: list(vm._file.tensors[s["tensor"]].shape) if s["tensor"] == n else None
              for n, s in C.weight_specs(meta, full).items()}
    graph = config_graph.redeclare(bytes(vm._file.tensors[meta["levels"][0]["graph"]]),
                           {n: s for n, s in shapes.items() if s is not None}, C.depthwise_groups(meta, full))
    model = onnx.load_from_string(graph)
    for inp in model.graph.input:
        if inp.name in feeds:
            dims = inp.type.tensor_type.shape.dim
            for d, size in zip(dims, feeds[inp.name].shape):
                d.ClearField("dim_param")
                d.dim_value = int(size)
    return model


def _shapes(model: Any, meta: dict[str, Any], config: C.Config) -> dict[str, list[int]]:
    """Every tensor's shape in ``model`` re-declared for ``config``."""
    import onnx

    m = onnx.load_from_string(config_graph.redeclare(model.SerializeToString(), C.weight_shapes(meta, config),
                                                     C.depthwise_groups(meta, config)))
    inferred = onnx.shape_inference.infer_shapes(m)
    out = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        out[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        out[t.name] = list(t.dims)
    return out



@dataclasses.dataclass
class ShapeModel:
    """Every tensor's shape as a function of the configuration: a tensor's dim is its full size
    less, per group, (channels removed) x (how many of that group's channels the dim carries).
    Found from one shape inference at full width and one per group at half width, instead of one
    per configuration."""

    full: dict[str, list[int]]
    per_channel: dict[int, dict[str, list[float]]]  # group -> tensor -> dims lost per removed channel
    sizes: dict[int, int]

    def shapes(self, config: C.Config) -> dict[str, list[int]]:
        out = {k: list(v) for k, v in self.full.items()}
        for g, kept in config.kept:
            removed = self.sizes[g] - kept
            for name, rate in self.per_channel[g].items():
                out[name] = [int(round(d - r * removed)) for d, r in zip(out[name], rate)]
        return out

    def changed_by(self, g: int) -> set[str]:
        return set(self.per_channel[g])


def shape_model(model: Any, meta: dict[str, Any]) -> ShapeModel:
    sizes = C.prunable(meta)
    full = _shapes(model, meta, C.make(meta, sizes))
    per_channel: dict[int, dict[str, list[float]]] = {}
    for g, n in sizes.items():
        half = max(1, n // 2)
        shapes = _shapes(model, meta, C.make(meta, {**sizes, g: half}))
        per_channel[g] = {k: [(a - b) / (n - half) for a, b in zip(full[k], v)]
                          for k, v in shapes.items() if k in full and full[k] != v and n > half}
    return ShapeModel(full, per_channel, sizes)


def find_blocks(model: Any, shapes: ShapeModel) -> list[Block]:
    """Chain the nodes into blocks and give each the groups that change any of its tensors."""
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    chains: list[list[Any]] = []
    for node in model.graph.node:
        prev = chains[-1][-1] if chains else None
        acts = [i for i in node.input if i]
        if prev is not None and node.op_type in FUSED and acts and acts[0] == prev.output[0] \
                and consumers.get(prev.output[0]) == 1:
            chains[-1].append(node)
        else:
            chains.append([node])
    blocks = []
    for chain in chains:
        names = {n for node in chain for n in list(node.input) + list(node.output) if n}
        blocks.append(Block(chain, tuple(sorted(g for g in shapes.sizes if shapes.changed_by(g) & names))))
    return blocks


def _block_graph(model: Any, block: Block, shapes: dict[str, list[int]], float_inits: set[str]) -> bytes:
    """The block as its own ONNX graph: outside activations become inputs, float weights stay
    external (supplied by the caller), integer constants inline."""
    import onnx
    from onnx import helper

    inits = {t.name: t for t in model.graph.initializer}
    produced = {o for node in block.nodes for o in node.output}
    inputs, weights, consts = [], [], []
    for node in block.nodes:
        for name in node.input:
            if not name or name in produced or name in {i.name for i in inputs}:
                continue
            if name in inits:
                (weights if name in float_inits else consts).append(name)
            else:
                inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shapes[name]))
    last = block.nodes[-1].output[0]
    graph = helper.make_graph(
        [n for n in block.nodes], "block", inputs,
        [helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, None)],
        [inits[n] for n in dict.fromkeys(weights + consts)])
    for t in graph.initializer:
        if t.name in float_inits:
            del t.dims[:]
            t.dims.extend(shapes[t.name])
    out = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return out.SerializeToString()


# -- measuring --------------------------------------------------------------------------------

@dataclasses.dataclass
class _Prepared:
    """Everything to time at one setting: block entries, the empty call, whole-network checks."""

    entries: list[tuple[int, str, Callable[[], Callable[[], object]]]]  # (block, width key, make a run)
    twins: list[Callable[[], Callable[[], object]]]  # per block: a call with its inputs that does nothing
    overhead: Callable[[], object]
    checks: list[C.Config]


def _session(graph: bytes, weights: dict[str, np.ndarray], threads: int | None) -> Any:
    from edgert.backends.ort import CallerWeightsSession

    return CallerWeightsSession(graph, weights, location=EXTERNAL_LOCATION, threads=threads)


def _twin_graph(model: Any, block: Block, shapes: dict[str, list[int]], float_inits: set[str]) -> bytes:
    """The block's call cost without its work: the same activation inputs, one Identity."""
    import onnx
    from onnx import helper

    graph = onnx.load_from_string(_block_graph(model, block, shapes, float_inits)).graph
    first = graph.input[0].name
    twin = helper.make_graph([helper.make_node("Identity", [first], ["twin"])], "twin", list(graph.input),
                             [helper.make_tensor_value_info("twin", onnx.TensorProto.FLOAT, shapes[first])])
    return helper.make_model(twin, opset_imports=model.opset_import, ir_version=model.ir_version).SerializeToString()


def _empty_call(threads: int | None) -> Callable[[], object]:
    import onnx
    from onnx import helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty", [x], [y])
    session = _session(helper.make_model(graph).SerializeToString(), {}, threads)
    feeds = {"x": np.zeros(1, np.float32)}
    return lambda: session.run(feeds)


def _builder(graph: bytes, weights: dict[str, np.ndarray], shapes: dict[str, list[int]], settings: LutSettings
             ) -> Callable[[], Callable[[], object]]:
    """Build the block's session when it is timed (not all at once: hundreds of sessions)."""
    def make() -> Callable[[], object]:
        session = _session(graph, weights, settings.threads)
        rng = np.random.default_rng(settings.seed)
        feeds = {s.name: rng.standard_normal(shapes[s.name]).astype(np.float32) for s in session.inputs}
        return lambda: session.run(feeds)

    return make


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def width_key(widths: Sequence[int]) -> str:
    return ",".join(str(w) for w in widths)


def _prepare(vm: VariantModel, feeds: dict[str, np.ndarray], settings: LutSettings
             ) -> tuple[list[Block], _Prepared, list[dict[str, Any]]]:
    meta, tensors = vm._file.meta, vm._file.tensors
    model = _full_graph(vm, feeds)
    shape_of = shape_model(model, meta)
    blocks = find_blocks(model, shape_of)
    widths = C.candidate_widths(meta)
    sizes = C.prunable(meta)
    float_inits = set(meta["levels"][0]["params"])
    entries, twins = [], []
    described = []
    for index, block in enumerate(blocks):
        combos = list(itertools.product(*(widths[g] for g in block.groups)))
        described.append({"nodes": [n.name or n.output[0] for n in block.nodes],
                          "ops": [n.op_type for n in block.nodes], "groups": list(block.groups)})
        for combo in combos:
            config = C.make(meta, {**{g: widths[g][-1] for g in sizes}, **dict(zip(block.groups, combo))})
            shapes = shape_of.shapes(config)
            specs = C.weight_specs(meta, config)
            used = {n for node in block.nodes for n in node.input if n in float_inits}
            weights = {n: slice_ranges(tensors[specs[n]["tensor"]], specs[n]["ranges"]) for n in used}
            graph = _block_graph(model, block, shapes, float_inits)
            entries.append((index, width_key(combo), _builder(graph, weights, shapes, settings)))
        full = shape_of.shapes(C.make(meta, sizes))
        twins.append(_builder(_twin_graph(model, block, full, float_inits), {}, full, settings))
    rng = random.Random(settings.seed)
    checks = [C.of_level(meta, i) for i in range(len(meta["levels"]))]
    checks += [C.make(meta, {g: rng.choice(ws) for g, ws in widths.items()}) for _ in range(settings.checks)]
    return blocks, _Prepared(entries, twins, _empty_call(settings.threads), checks), described


def measure(path: str | Path, settings_list: Sequence[FrequencySetting], lut: LutSettings | None = None, *,
            unit: str = "khz", emulated: bool = False, power: str = "none", sysfs_root: str = "/",
            dims: dict[str, int] | None = None,
            progress: Callable[[str], None] | None = None, write: bool = True) -> dict[str, Any]:
    """Measure the block table and the whole-network checks at every setting; return (and by
    default store in ``path``) the table (docs/aio-format.md, ``ofa/lut``). Symbolic input dims
    are 1 (one inference) unless ``dims`` sets them."""
    from edgert.device_agents.sampler import Sampler, open_source

    if not settings_list:
        raise UsageError("lut needs at least one frequency setting")
    lut = lut or LutSettings()
    if emulated and lut.clock == "cpu":
        raise UsageError("the cpu clock cannot see an emulated CPU quota (stalls are not CPU time): "
                         "use the wall clock on the emulated domain")
    order = sorted(settings_list, key=lambda s: s.frequency)
    source = open_source(power, sysfs_root) if power != "none" else None
    sampler = Sampler(source) if source is not None else None
    with VariantModel(path, threads=lut.threads, config_budget=None, graph_builder=config_graph.build) as vm:
        from edgert.tensors import random_feeds

        symbolic = {d: 1 for spec in vm.inputs for d in spec.shape if isinstance(d, str)}
        feeds = random_feeds(vm.inputs, {**symbolic, **(dims or {})}, lut.seed)
        blocks, prepared, described = _prepare(vm, feeds, lut)
        for c in prepared.checks:
            vm.select_config(c)
        latency = [{} for _ in blocks]
        energy = [{} for _ in blocks]
        overhead, check_ms, check_mj = [], [[] for _ in prepared.checks], [[] for _ in prepared.checks]
        call_ms: list[list[float]] = [[] for _ in blocks]
        powered = sampler is not None

        def timed(run: Callable[[], object]) -> tuple[float, float | None]:
            if sampler is None:
                return time_ms(run, lut), None
            sampler.start()
            ms = time_ms(run, lut)
            values = sampler.stop()["values"]
            return ms, (float(np.mean(values)) * ms if values else None)

        try:
            for setting in order:
                if progress:
                    progress(f"measuring {len(prepared.entries)} block entries and {len(prepared.checks)} "
                             f"networks at {setting.label or setting.frequency}")
                with setting.apply():
                    overhead.append(time_ms(prepared.overhead, lut))
                    calls = [time_ms(make(), lut) for make in prepared.twins]
                    for index, call in enumerate(calls):
                        call_ms[index].append(call)
                    for index, key, make in prepared.entries:
                        ms, mj = timed(make())
                        latency[index].setdefault(key, []).append(max(ms - calls[index], 0.0))  # noise
                        energy[index].setdefault(key, []).append(mj)
                        powered = powered and mj is not None
                    for i, c in enumerate(prepared.checks):
                        vm.select_config(c)
                        ms, mj = timed(lambda: vm.run(feeds))
                        check_ms[i].append(ms)
                        check_mj[i].append(mj)
        finally:
            if source is not None:
                source.close()
    table: dict[str, Any] = {
        "schema": SCHEMA, "emulated": emulated, "frequency_unit": unit,
        "frequencies": [s.frequency for s in order], "labels": [s.label for s in order],
        "feeds": {k: list(v.shape) for k, v in feeds.items()},
        "overhead_ms": overhead,
        "blocks": [{**d, "latency_ms": latency[i], "call_ms": call_ms[i],
                    **({"energy_mj": energy[i]} if powered else {})}
                   for i, d in enumerate(described)],
        "checks": [{"config": c.encode(), "measured_ms": check_ms[i],
                    **({"measured_mj": check_mj[i]} if powered else {})} for i, c in enumerate(prepared.checks)],
        "power_source": f"{source.name} ({source.kind})" if source is not None and powered else None,
        "device": {**device_facts.collect("local"), "emulated": emulated},
        "onnxruntime": _ort_version(),
        "settings": dataclasses.asdict(lut), "measured_unix": time.time(),
    }
    table.update(fit(table))
    if write:
        tables.store(path, {tables.LUT: table})
    return table


# -- predicting -------------------------------------------------------------------------------

def frequency_index(table: dict[str, Any], frequency: float) -> int:
    for j, f in enumerate(table["frequencies"]):
        if abs(float(f) - float(frequency)) <= 1e-9 * max(1.0, abs(float(f))):
            return j
    raise UsageError(f"the table has no frequency {frequency:g}; it has "
                     f"{', '.join(f'{f:g}' for f in table['frequencies'])} ({table['frequency_unit']})")


def predict(table: dict[str, Any], config: C.Config, j: int, *, corrected: bool = True,
            quantity: str = "latency_ms") -> float:
    """Predicted whole-network latency (ms) or energy (mJ, ``quantity="energy_mj"``) of
    ``config`` at the table's ``j``-th frequency."""
    kept = config.as_dict()
    total = table["overhead_ms"][j] if quantity == "latency_ms" else 0.0
    for block in table["blocks"]:
        entries = block[quantity]
        key = width_key([kept[g] for g in block["groups"]])
        if key not in entries:
            raise UsageError(f"configuration {config.key} uses widths {key} of groups {block['groups']}, "
                             "which the table did not measure (use the file's level widths)")
        total += entries[key][j]
    if corrected and quantity == "latency_ms" and table.get("correction"):
        a, b = table["correction"][j]["a"], table["correction"][j]["b"]
        total = a * total + b
    return float(total)


def _errors(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    rel = np.abs(np.asarray(pred) - np.asarray(meas)) / np.asarray(meas)
    return {"p50": float(np.percentile(rel, 50)), "p90": float(np.percentile(rel, 90)), "max": float(rel.max())}


def fit(table: dict[str, Any]) -> dict[str, Any]:
    """Per frequency: the sum-of-blocks error over the checks and a least-squares line
    ``measured = a * sum + b``, judged leave-one-out (each check predicted by the line fitted to
    the others). The line is kept only when it helps (a lower leave-one-out p50 than the raw
    sum, a > 0, positive at every check); otherwise the correction is the identity (``used: false``)."""
    meta_free = {**table, "correction": None}
    correction, errors = [], []
    configs = [_decode_free(c["config"]) for c in table["checks"]]
    for j in range(len(table["frequencies"])):
        x = np.asarray([predict(meta_free, c, j, corrected=False) for c in configs])
        y = np.asarray([c["measured_ms"][j] for c in table["checks"]])
        a, b = _line(x, y)
        loo = []
        for k in range(len(x)):
            rest = np.arange(len(x)) != k
            ak, bk = _line(x[rest], y[rest])
            loo.append(ak * x[k] + bk)
        raw_err, loo_err = _errors(x, y), _errors(loo, y)
        used = a > 0 and a * x.min() + b > 0 and loo_err["p50"] < raw_err["p50"]
        correction.append({"a": float(a) if used else 1.0, "b": float(b) if used else 0.0, "used": bool(used),
                           "fitted": {"a": float(a), "b": float(b)}})
        errors.append({"sum_of_blocks": raw_err, "corrected_leave_one_out": loo_err})
    return {"correction": correction, "prediction_error": errors}


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 2 or np.ptp(x) == 0:
        return 1.0, 0.0
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def _decode_free(text: str) -> C.Config:
    """A stored configuration's text, trusted (it was checked against the file when written)."""
    return C.Config(tuple(sorted((int(g), int(k)) for g, k in (p.split(":") for p in text.split(",")))))


def read(path: str | Path) -> dict[str, Any]:
    table = tables.read(path, tables.LUT)
    if table is None:
        raise UsageError(f"{path} has no latency table: run `edgert lut {path} ...` first", path=str(path))
    return table


def cpufreq_settings(policy: str, khz: Sequence[int], sysfs_root: str = "/") -> list[FrequencySetting]:
    """One setting per clock, each pinning ``policy`` (journaled ``DvfsControl``) and restoring after."""
    @contextlib.contextmanager
    def pinned(value: int) -> Iterator[int]:
        from edgert.device_agents.dvfs import DvfsControl
        from edgert.device_agents.sweep import default_journal_path

        with DvfsControl(sysfs_root, journal_path=default_journal_path()) as dvfs:
            yield dvfs.pin_cpu(policy, int(value))

    return [FrequencySetting(float(f), lambda f=f: pinned(f), f"{policy} {f} kHz") for f in khz]


def settings_for(cpu_freqs: Sequence[int] | None, policy: str, emulated_levels: Sequence[float] | None,
                 sysfs_root: str = "/") -> tuple[list[FrequencySetting], str, bool]:
    """Frequency settings (and their unit) for cpufreq clocks or emulated levels, as ``calibrate``."""
    from .frequency import emulated_settings

    if bool(cpu_freqs) == bool(emulated_levels):
        raise UsageError("choose one of --cpu-freqs LIST and --emulated LEVELS")
    if cpu_freqs:
        return cpufreq_settings(policy, cpu_freqs, sysfs_root), "khz", False
    from edgert.device_agents.emulated import EmulatedDomain

    domain = EmulatedDomain(sysfs_root, levels=tuple(emulated_levels or ()), cpus=1)
    if not domain.available():
        from edgert.errors import SysfsError

        raise SysfsError("emulated levels need a writable cgroup with cpu bandwidth control "
                         "(run as root on cgroup v1 'cpu' or v2 with 'cpu' enabled)")
    return emulated_settings(domain), "emulated fraction", True
