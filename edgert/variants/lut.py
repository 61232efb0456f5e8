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

Timing (``lut_run``, which runs on the device): every entry, twin, the overhead call and the
checks are timed in shared interleaved rounds, one window each per round in a new order,
each keeping its fastest window; a window is the mean of as many calls as fill
``window_ms``. At an emulated (CPU-quota) level, where the CPU's speed changes from one quota
period to the next, each is instead timed paired with the costliest unit within windows of
whole cgroup periods (``lut_run.paired``): its CPU time relative to the reference's in the same
periods, times the reference's wall time per call.

Where: ``measure`` runs the job in this process at the frequency settings the caller gives
(``lut_run.settings_for``: cpufreq clocks or emulated levels); ``measure_on_device`` sends it
to a device's agent inside a copy of the file (``write_job``), which pins and times there.
The table is assembled here (``assemble``). Host-only: imports onnx.
"""
from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgert import device_facts
from edgert.errors import BundleError, EdgertError, UsageError

from . import config as C
from . import aiofile, config_graph, tables
from .frequency import FrequencySetting
from .lut_run import JOB, JOB_GRAPH, JOB_SCHEMA, LutSettings, note_power, run_job
from .lut_run import settings_for  # noqa: F401 - the host's name for it (`edgert lut`)
from .prune import rewrite_shapes
from .ranges import shape_values
from .runtime import VariantModel

SCHEMA = tables.SCHEMAS[tables.LUT]
FUSED = frozenset({"BatchNormalization", "Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid",
                   "Tanh", "Gelu", "Elu"})


@dataclasses.dataclass
class Block:
    nodes: list[Any]  # onnx NodeProto, in graph order
    groups: tuple[int, ...]  # prunable groups whose width changes any of its tensors


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


def _head_values(meta: dict[str, Any], config: C.Config) -> dict[str, dict[int, int]]:
    """The shape-constant entries (attention heads, Split sizes) ``config`` writes."""
    return shape_values(meta["template"].get("reshapes", {}), config.as_dict())


def _shapes(model: Any, meta: dict[str, Any], config: C.Config) -> dict[str, list[int]]:
    """Every tensor's shape in ``model`` re-declared for ``config``."""
    import onnx

    graph = config_graph.redeclare(model.SerializeToString(), C.weight_shapes(meta, config),
                                   C.depthwise_groups(meta, config))
    m = onnx.load_from_string(rewrite_shapes(graph, _head_values(meta, config)))
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


def _element_types(model: Any) -> dict[str, int]:
    """Every value's ONNX element type (BERT's input_ids feed a Gather as int64)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    return {vi.name: vi.type.tensor_type.elem_type
            for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)
            if vi.type.tensor_type.elem_type}


def _block_graph(model: Any, block: Block, shapes: dict[str, list[int]], float_inits: set[str],
                 types: dict[str, int]) -> bytes:
    """The block as its own ONNX graph: outside activations become inputs (of their own element
    types), float weights stay external (supplied by the caller), integer constants inline."""
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
                inputs.append(helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT),
                                                            shapes[name]))
    last = block.nodes[-1].output[0]
    graph = helper.make_graph(
        [n for n in block.nodes], "block", inputs,
        [helper.make_tensor_value_info(last, types.get(last, onnx.TensorProto.FLOAT), None)],
        [inits[n] for n in dict.fromkeys(weights + consts)])
    for t in graph.initializer:
        if t.name in float_inits:
            del t.dims[:]
            t.dims.extend(shapes[t.name])
    out = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return out.SerializeToString()


# -- the job ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Job:
    """What ``lut_run`` times (its docstring): the JSON ``spec``, the graphs it names and, for
    the table, each block's nodes, ops and groups."""

    spec: dict[str, Any]
    graphs: dict[str, bytes]
    described: list[dict[str, Any]]


def _inputs_of(graph: bytes) -> dict[str, list[int]]:
    import onnx

    model = onnx.load_from_string(graph)
    return {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}


def _twin_graph(model: Any, block: Block, shapes: dict[str, list[int]], float_inits: set[str],
                types: dict[str, int]) -> bytes:
    """The block's call cost without its work: the same activation inputs, one Identity."""
    import onnx
    from onnx import helper

    graph = onnx.load_from_string(_block_graph(model, block, shapes, float_inits, types)).graph
    first = graph.input[0]
    twin = helper.make_graph([helper.make_node("Identity", [first.name], ["twin"])], "twin", list(graph.input),
                             [helper.make_tensor_value_info("twin", first.type.tensor_type.elem_type,
                                                            shapes[first.name])])
    return helper.make_model(twin, opset_imports=model.opset_import, ir_version=model.ir_version).SerializeToString()


def _empty_graph() -> bytes:
    import onnx
    from onnx import helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty", [x], [y])
    return helper.make_model(graph).SerializeToString()


def width_key(widths: Sequence[int]) -> str:
    return ",".join(str(w) for w in widths)


def plan(vm: VariantModel, settings: LutSettings, dims: dict[str, int] | None = None) -> Job:
    """Cut ``vm``'s file into blocks and lay out every entry, twin and check to time (host: onnx).
    Symbolic input dims are 1 (one inference) unless ``dims`` sets them."""
    from edgert.tensors import random_feeds

    meta = vm._file.meta
    if not C.prunable(meta):
        raise UsageError(f"{vm.path} has no prunable group (every group is kept whole): no widths to tabulate")
    dims = {**{d: 1 for spec in vm.inputs for d in spec.shape if isinstance(d, str)}, **(dims or {})}
    model = _full_graph(vm, random_feeds(vm.inputs, dims, settings.seed))
    shape_of = shape_model(model, meta)
    types = _element_types(model)
    blocks = find_blocks(model, shape_of)
    widths, sizes = C.candidate_widths(meta), C.prunable(meta)
    float_inits = set(meta["levels"][0]["params"])
    graphs: dict[str, bytes] = {}

    def unit(graph: bytes, weights: dict[str, Any] | None = None) -> dict[str, Any]:
        name = JOB_GRAPH.format(len(graphs))
        graphs[name] = graph
        return {"graph": name, "inputs": _inputs_of(graph), "weights": weights or {}}

    spec_blocks, described = [], []
    full = shape_of.shapes(C.make(meta, sizes))
    for block in blocks:
        described.append({"nodes": [n.name or n.output[0] for n in block.nodes],
                          "ops": [n.op_type for n in block.nodes], "groups": list(block.groups)})
        entries = []
        for combo in itertools.product(*(widths[g] for g in block.groups)):
            config = C.make(meta, {**{g: widths[g][-1] for g in sizes}, **dict(zip(block.groups, combo))})
            shapes, specs = shape_of.shapes(config), C.weight_specs(meta, config)
            used = {n for node in block.nodes for n in node.input if n in float_inits}
            weights = {n: {"tensor": specs[n]["tensor"], "ranges": specs[n]["ranges"]} for n in sorted(used)}
            graph = rewrite_shapes(config_graph.redeclare(_block_graph(model, block, shapes, float_inits, types), {},
                                                          C.depthwise_groups(meta, config)),
                                   _head_values(meta, config))
            entries.append({"key": width_key(combo), **unit(graph, weights)})
        spec_blocks.append({"entries": entries, "twin": unit(_twin_graph(model, block, full, float_inits, types))})
    rng = random.Random(settings.seed)
    checks = [C.of_level(meta, i) for i in range(len(meta["levels"]))]
    checks += [C.make(meta, {g: rng.choice(ws) for g, ws in widths.items()}) for _ in range(settings.checks)]
    spec = {"schema": JOB_SCHEMA, "dims": dims, "seed": settings.seed, "settings": dataclasses.asdict(settings),
            "overhead": unit(_empty_graph()), "blocks": spec_blocks, "checks": [c.encode() for c in checks]}
    return Job(spec, graphs, described)


# -- measuring --------------------------------------------------------------------------------

def store(path: str | Path, table: dict[str, Any]) -> None:
    """Store a new table in ``path``. Pareto sets searched on the previous one predict with its
    numbers (an adaptive model would run them as if they held), so they go, with a warning.
    When the file cannot be rewritten (a disk that filled during the measurement), the table is
    kept in a JSON file that ``adopt`` (``edgert lut FILE --from-json``) stores later."""
    def removed(_: list[str]) -> None:
        table["warnings"].append("the Pareto sets searched on the previous table were removed: "
                                 "run `edgert search` again")

    try:
        tables.store(path, {tables.LUT: table}, drop=(tables.PARETO,), on_drop=removed)
    except (OSError, EdgertError) as exc:  # a full disk, or the file replaced or damaged meanwhile
        kept = _keep(Path(path), table)
        then = (f"the measurement is kept in {kept}: once {path} can be written, "
                f"`edgert lut {path} --from-json {kept}` stores it") if kept else \
            "the measurement could not be kept anywhere either"
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BundleError(f"could not store the latency table in {path}: {why}; {then}", path=str(path)) from exc


def _keep(path: Path, table: dict[str, Any]) -> Path | None:
    """Write ``table`` as JSON beside ``path``, else in the temp directory, else in the home
    directory; the first that takes it, or None."""
    import json
    import tempfile

    from edgert.atomic import replace_file

    text = json.dumps(table).encode("utf-8")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (path.parent, Path(tempfile.gettempdir()), Path.home()):
        target = folder / f"{path.name}.lut-{stamp}.json"
        try:
            replace_file(target, lambda file: file.write(text))
        except (OSError, EdgertError):
            continue
        return target
    return None


def adopt(path: str | Path, json_path: str | Path) -> dict[str, Any]:
    """Store in ``path`` a table that ``store`` kept in ``json_path`` after a failed write,
    once checked as a stored one is and against ``path``'s groups and levels."""
    from edgert.result import parse_json_file

    table = tables.check_given(tables.LUT, parse_json_file(Path(json_path)))
    meta = aiofile.read_meta(Path(path))  # its groups alone: no session of any level is built
    prunable = set(C.prunable(meta))
    for block in table["blocks"]:
        if not set(block["groups"]) <= prunable:
            raise UsageError(f"{json_path} is the table of another file: its blocks name groups "
                             f"{sorted(set(block['groups']) - prunable)}, which {path} cannot prune")
    for check in table["checks"]:
        try:
            C.decode(meta, check["config"])
        except UsageError as exc:
            raise UsageError(f"{json_path} is the table of another file: {exc}") from None
    store(path, table)
    return table


def measure(path: str | Path, settings_list: Sequence[FrequencySetting], lut: LutSettings | None = None, *,
            unit: str = "khz", emulated: bool = False, power: str = "none", sysfs_root: str = "/",
            dims: dict[str, int] | None = None,
            progress: Callable[[str], None] | None = None, write: bool = True) -> dict[str, Any]:
    """Measure the block table and the whole-network checks at every setting, in this process;
    return (and by default store in ``path``) the table (docs/aio-format.md, ``ofa/lut``)."""
    from edgert.device_agents.sampler import Sampler, open_source

    if not settings_list:
        raise UsageError("lut needs at least one frequency setting")
    if write:
        tables.check_writable(path)
    lut = _checked(lut, emulated)
    source = open_source(power, sysfs_root) if power != "none" else None
    try:
        with VariantModel(path, threads=lut.threads, config_budget=None, graph_builder=config_graph.build) as vm:
            job = plan(vm, lut, dims)
            raw = run_job(vm, job.spec, job.graphs.__getitem__, settings_list,
                          sampler=Sampler(source) if source is not None else None, progress=progress)
    finally:
        if source is not None:
            source.close()
    raw.update(unit=unit, emulated=emulated, sysfs_root=sysfs_root, onnxruntime=_ort_version())
    note_power(raw, power, source)
    table = assemble(job, raw, {**device_facts.collect("local"), "emulated": emulated}, lut)
    if write:
        store(path, table)
    return table


def measure_on_device(path: str | Path, device: Any, lut: LutSettings | None = None, *,
                      cpu_freqs: Sequence[int] | None = None, policy: str = "policy0",
                      emulated_levels: Sequence[float] | None = None, power: str = "none",
                      sysfs_root: str | None = None, dims: dict[str, int] | None = None,
                      progress: Callable[[str], None] | None = None, write: bool = True) -> dict[str, Any]:
    """The table measured on ``device`` through its agent: the job (blocks cut here, where onnx
    is) goes to the device inside a copy of the file with the checks' graphs, the agent pins
    each clock or emulated level on its own sysfs root and times it there (``lut.run``), the
    table is assembled here and stored in ``path``. ``sysfs_root``, when given, must be the
    agent's own (it refuses another)."""
    import tempfile

    from edgert.devices.connect import open_client

    if bool(cpu_freqs) == bool(emulated_levels):
        raise UsageError("choose one of --cpu-freqs LIST and --emulated LEVELS")
    lut = _checked(lut, bool(emulated_levels))
    path = Path(path)
    if write:
        tables.check_writable(path)
    request = {"cpu_freqs": [int(f) for f in cpu_freqs or []], "policy": policy,
               "emulated_levels": [float(x) for x in emulated_levels or []], "power": power,
               **({"sysfs_root": sysfs_root} if sysfs_root else {})}
    with tempfile.TemporaryDirectory(prefix="edgert-lut-") as tmp:
        job_path = Path(tmp) / f"{path.stem}.lutjob.aio"
        job = write_job(path, job_path, lut, dims)
        with open_client(device) as client:
            sha = client.upload(job_path)
            raw = client.call("lut.run", {"sha256": sha, "suffix": ".aio", "transport": client.transport_name,
                                          "request": request},
                              (lambda data: progress(str(data.get("line", data)))) if progress else None)
    facts = raw.pop("device", None) or {"transport": device.scheme}
    facts["emulated"] = bool(facts.get("emulated") or raw.get("emulated") or getattr(device, "emulated", False))
    table = assemble(job, raw, facts, lut)
    if write:
        store(path, table)
    return table


def write_job(path: str | Path, dest: str | Path, lut: LutSettings, dims: dict[str, int] | None = None) -> Job:
    """A copy of ``path`` at ``dest`` holding the job (``lut_run.JOB``) and the graphs it runs, the
    checks' included, so a device times it with ORT alone (``lut_run.run_file``)."""
    import shutil

    with VariantModel(path, threads=lut.threads, config_budget=None, graph_builder=config_graph.build) as vm:
        job = plan(vm, lut, dims)
        meta = vm._file.meta
        checks = config_graph.graphs_to_store(meta, vm._file.tensors,
                                              [C.decode(meta, t) for t in job.spec["checks"]])
    shutil.copy(path, dest)
    tables.store(dest, {JOB: job.spec}, {**checks, **job.graphs})
    return job


def _checked(lut: LutSettings | None, emulated: bool) -> LutSettings:
    lut = lut or LutSettings()
    if emulated and lut.clock == "cpu":
        raise UsageError("the cpu clock cannot see an emulated CPU quota (stalls are not CPU time): "
                         "use the wall clock on the emulated domain")
    return lut


def assemble(job: Job, raw: dict[str, Any], facts: dict[str, Any], lut: LutSettings) -> dict[str, Any]:
    """The table from ``lut_run``'s raw times: each entry less its block's twin (one call's cost),
    the correction fitted. Fixture clocks, fixture power (``energy_status``) and emulated
    levels are labelled as such."""
    from edgert.power_status import is_fixture_root

    fixture = is_fixture_root(raw.get("sysfs_root"))
    warnings = list(raw.get("warnings") or [])
    powered = bool(raw.get("power_source")) and all(v is not None for row in raw["entries_mj"] + raw["checks_mj"]
                                                    for v in row)
    if powered and fixture:  # kept so the tables work end to end on fixtures, labelled
        warnings.append(f"energy from {raw['power_source']} on a fixture sysfs tree: constant fixture "
                        "values, not a measurement")
    labels = [(label or f"{f:.10g}") + (" (fixture sysfs: clock not real)" if fixture and raw["unit"] == "khz" else "")
              for label, f in zip(raw["labels"], raw["frequencies"])]
    blocks, e = [], 0
    for i, d in enumerate(job.described):
        latency, energy = {}, {}
        for entry in job.spec["blocks"][i]["entries"]:
            latency[entry["key"]] = [max(ms - call, 0.0)
                                     for ms, call in zip(raw["entries_ms"][e], raw["call_ms"][i])]
            energy[entry["key"]] = raw["entries_mj"][e]
            e += 1
        blocks.append({**d, "latency_ms": latency, "call_ms": raw["call_ms"][i],
                       **({"energy_mj": energy} if powered else {})})
    table: dict[str, Any] = {
        # emulated levels, or a device that is itself an emulator (its agent says so)
        "schema": SCHEMA, "emulated": bool(raw["emulated"] or facts.get("emulated")), "fixture": fixture,
        "frequency_unit": raw["unit"],
        "frequencies": raw["frequencies"], "labels": labels, "feeds": raw["feeds"],
        "overhead_ms": raw["overhead_ms"], "blocks": blocks,
        "checks": [{"config": c, "measured_ms": raw["checks_ms"][i],
                    **({"measured_mj": raw["checks_mj"][i]} if powered else {})}
                   for i, c in enumerate(job.spec["checks"])],
        "power_source": raw["power_source"] if powered else None, "warnings": warnings,
        "energy_status": ("fixture" if fixture else "measured") if powered else None,
        "device": {**facts, "sysfs_root": raw.get("sysfs_root"), "fixture_sysfs": fixture},
        "onnxruntime": raw.get("onnxruntime"), "settings": dataclasses.asdict(lut), "measured_unix": time.time(),
        "timing": raw.get("timing"),  # per setting: its window (and quota period) (lut_run.at_setting)
    }
    table.update(fit(table))
    return table


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__

# -- predicting -------------------------------------------------------------------------------

def frequency_index(table: dict[str, Any], frequency: float) -> int:
    for j, f in enumerate(table["frequencies"]):
        if abs(float(f) - float(frequency)) <= 1e-9 * max(1.0, abs(float(f))):
            return j
    raise UsageError(f"the table has no frequency {frequency:.10g}; it has "
                     f"{', '.join(f'{f:.10g}' for f in table['frequencies'])} ({table['frequency_unit']})")


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
    """Least squares. (Theil-Sen was tried: on the digits tables its leave-one-out p50 was no
    better, and on one 9.4% against 2.3%: the checks' sums cluster, so pairwise slopes are noisy.)"""
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
