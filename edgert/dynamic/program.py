"""The host control-flow program and its interpreter (device side: stdlib + numpy only).

A program is plain JSON. A block is ``{"inputs": [...], "steps": [...], "outputs": [...]}``
and a step is one of::

    {"op": "call",  "segment": id, "inputs": [names], "outputs": [names],
                    "control_flow": [nodes]}  # optional: If/Loop/Scan the engine runs itself
    {"op": "alias", "src": name, "dst": name}
    {"op": "const", "name": name, "const": const id}
    {"op": "if",    "node": n, "cond": name, "outputs": [...], "then": block, "else": block,
                    "probe": [a, b]}  # optional: float operands of the comparison behind cond
    {"op": "loop",  "node": n, "trip_count": name|"", "cond": name|"", "initial": [...],
                    "outputs": [...], "scan_outputs": [{"dtype", "shape"}], "body": block}
    {"op": "scan",  "node": n, "inputs": [...], "outputs": [...], "num_scan_inputs": k,
                    "input_axes", "input_directions", "output_axes", "output_directions",
                    "scan_outputs": [...], "body": block}

Values stay as the engine returned them (TVM tensors stay in TVM memory between TVM
segments); only If predicates and Loop trip counts and conditions are read back as
Python scalars (and, when ``record_margins`` is on, an If's
probe operands, to report how far the decision was from flipping). Scan slices and stacks on the host (numpy).
"""
from __future__ import annotations

import dataclasses
from time import perf_counter_ns
from typing import Any, Callable, Mapping

import numpy as np

from edgert.errors import BundleError, InputError

# 1: first version (call/alias/const/if/loop/scan).
PROGRAM_VERSION = 1

SegmentCall = Callable[[str, dict[str, Any]], list[Any]]
SegmentHook = Callable[[str, int], None]  # (segment id, nanoseconds spent in the engine)
# Named values in scope. A nested block runs on a copy, so its names do not leak out
# (a plain dict copy: lookups at C speed, unlike a ChainMap, on every step).
Env = dict[str, Any]


@dataclasses.dataclass(slots=True)
class Trace:
    """The path one run took: events in order, plus engine and total time."""

    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    total_ns: int = 0
    program: str = "main"  # "guarded": the bundle's program specialised to its inputs' values

    @property
    def segments(self) -> list[str]:
        """Segment ids in call order (repeats for loop bodies)."""
        return [e["segment"] for e in self.events if e["kind"] == "call"]

    @property
    def branches(self) -> dict[str, list[str]]:
        """If node -> branches taken ("then"/"else"), in order."""
        out: dict[str, list[str]] = {}
        for e in self.events:
            if e["kind"] == "if":
                out.setdefault(e["node"], []).append(e["branch"])
        return out

    @property
    def trip_counts(self) -> dict[str, list[int]]:
        """Loop/Scan node -> iterations run, one entry per time the node executed."""
        out: dict[str, list[int]] = {}
        for e in self.events:
            if e["kind"] in ("loop", "scan"):
                out.setdefault(e["node"], []).append(e["trips"])
        return out

    @property
    def segment_ns(self) -> int:
        return sum(e["ns"] for e in self.events if e["kind"] == "call")

    @property
    def host_overhead_ns(self) -> int:
        """Wall time not spent inside engine calls: control flow, slicing, bookkeeping."""
        return self.total_ns - self.segment_ns

    def key(self) -> str:
        """A short, stable description of the path, e.g. ``If_3=then;Loop_7=4``.

        A call whose engine runs control flow itself (whole-model bundles) adds
        ``<segment>=hidden``: the host cannot see which branches that engine took.
        A run of the guarded program starts with ``program=guarded``.
        """
        parts = [] if self.program == "main" else [f"program={self.program}"]
        parts += [f"{e['segment']}=hidden" if e["kind"] == "call" else
                 f"{e['node']}={e['branch']}" if e["kind"] == "if" else f"{e['node']}={e['trips']}"
                 for e in self.events if e["kind"] != "call" or "control_flow" in e]
        return ";".join(parts) or "straight"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key(), "program": self.program, "events": self.events,
                "total_ns": self.total_ns, "segment_ns": self.segment_ns,
                "host_overhead_ns": self.host_overhead_ns}


def to_numpy(value: Any) -> np.ndarray:
    """A value as numpy; engine tensors (TVM) are copied out, numpy passes through."""
    if isinstance(value, np.ndarray):
        return value
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _scalar(value: Any, what: str, node: str) -> Any:
    """The one element of ``value``; ``what`` (formatted with ``node``) names it in the error."""
    array = to_numpy(value)
    if array.size != 1:
        raise InputError(f"{what.format(node)} must hold exactly one element, "
                         f"got shape {list(array.shape)}")
    return array.item()


class Interpreter:
    """Runs a program; ``call`` runs one segment and returns its outputs in order."""

    def __init__(self, program: dict[str, Any], call: SegmentCall,
                 consts: Mapping[str, np.ndarray], on_segment: SegmentHook | None = None,
                 check: Callable[[str, dict[str, Any]], None] | None = None,
                 name: str = "main") -> None:
        """``check(segment, feeds)`` runs before each call, outside the timed engine window;
        ``name`` labels the traces (a bundle's ``guarded`` program)."""
        if program.get("version") != PROGRAM_VERSION:
            raise BundleError(f"host program version {program.get('version')!r} is not "
                              f"supported (this edgert reads version {PROGRAM_VERSION})")
        self.program = program
        self.name = name
        self._body = program["body"]
        self._check = check
        self._steps = {op: getattr(self, "_step_" + op)
                       for op in ("call", "alias", "const", "if", "loop", "scan")}
        self._run_segment = call
        self._consts = consts
        self._on_segment = on_segment
        self._trace = Trace()
        self.record_margins = False  # validate turns this on; it costs host time per If
        steps = self._body["steps"]
        # A program that is one call of all inputs to all outputs (a whole-model or static
        # bundle) skips the environment: its host cost is then a small part of a small model.
        self._only_call = (steps[0] if len(steps) == 1 and steps[0]["op"] == "call"
                           and steps[0]["inputs"] == self._body["inputs"]
                           and steps[0]["outputs"] == self._body["outputs"] else None)

    def run(self, feeds: Mapping[str, Any]) -> tuple[list[Any], Trace]:
        self._trace = trace = Trace([], 0, self.name)
        start = perf_counter_ns()
        if self._only_call is not None:
            outputs = self._call(self._only_call, feeds)
        else:
            body = self._body
            outputs = self._block(body, {n: feeds[n] for n in body["inputs"]})
        trace.total_ns = perf_counter_ns() - start
        return outputs, trace

    def _block(self, block: dict[str, Any], env: Env) -> list[Any]:
        for step in block["steps"]:
            try:
                handler = self._steps[step["op"]]
            except KeyError:
                raise BundleError(f"unknown host program step {step.get('op')!r}; the bundle "
                                  f"needs a newer edgert") from None
            handler(step, env)
        return [env[name] for name in block["outputs"]]

    def _step_call(self, step: dict[str, Any], env: Env) -> None:
        env.update(zip(step["outputs"], self._call(step, {name: env[name] for name in step["inputs"]})))

    def _call(self, step: dict[str, Any], feeds: dict[str, Any]) -> list[Any]:
        seg = step["segment"]
        if self._check is not None:
            self._check(seg, feeds)
        start = perf_counter_ns()
        results = self._run_segment(seg, feeds)
        spent = perf_counter_ns() - start
        event = {"kind": "call", "segment": seg, "ns": spent}
        if "control_flow" in step:  # If/Loop/Scan nodes the engine ran out of the host's sight
            event["control_flow"] = step["control_flow"]
        self._trace.events.append(event)
        if self._on_segment is not None:
            self._on_segment(seg, spent)
        return results

    def _step_alias(self, step: dict[str, Any], env: Env) -> None:
        env[step["dst"]] = env[step["src"]]

    def _step_const(self, step: dict[str, Any], env: Env) -> None:
        env[step["name"]] = self._consts[step["const"]]

    def _step_if(self, step: dict[str, Any], env: Env) -> None:
        taken = "then" if bool(_scalar(env[step["cond"]], "If {} condition", step["node"])) else "else"
        event = {"kind": "if", "node": step["node"], "branch": taken}
        if self.record_margins and "probe" in step:
            a, b = (to_numpy(env[name]).astype(np.float64) for name in step["probe"])
            event["margin"] = float(np.min(np.abs(a - b)))
        self._trace.events.append(event)
        results = self._block(step[taken], dict(env))
        for name, value in zip(step["outputs"], results):
            if name:
                env[name] = value

    def _step_loop(self, step: dict[str, Any], env: Env) -> None:
        body = step["body"]
        limit = (int(_scalar(env[step["trip_count"]], "Loop {} trip count", step["node"]))
                 if step["trip_count"] else None)
        keep_going = (bool(_scalar(env[step["cond"]], "Loop {} condition", step["node"]))
                      if step["cond"] else True)
        state = [env[name] for name in step["initial"]]
        stacks: list[list[Any]] = [[] for _ in step["scan_outputs"]]
        trips = 0
        while keep_going and (limit is None or trips < limit):
            inner = dict(env)
            inner[body["inputs"][0]] = np.array(trips, dtype=np.int64)
            inner[body["inputs"][1]] = np.array(keep_going, dtype=np.bool_)
            for name, value in zip(body["inputs"][2:], state):
                inner[name] = value
            results = self._block(body, inner)
            keep_going = bool(_scalar(results[0], "Loop {} body condition", step["node"]))
            state = results[1:1 + len(state)]
            for stack, value in zip(stacks, results[1 + len(state):]):
                stack.append(to_numpy(value))
            trips += 1
        self._trace.events.append({"kind": "loop", "node": step["node"], "trips": trips})
        stacked = [_stack(s, spec, 0) for s, spec in zip(stacks, step["scan_outputs"])]
        for name, value in zip(step["outputs"], state + stacked):
            if name:
                env[name] = value

    def _step_scan(self, step: dict[str, Any], env: Env) -> None:
        body = step["body"]
        n_scan = step["num_scan_inputs"]
        values = [env[name] for name in step["inputs"]]
        state, scans = values[:len(values) - n_scan], [to_numpy(v) for v in values[-n_scan:]]
        axes = [a % s.ndim for a, s in zip(step["input_axes"] or [0] * n_scan, scans)]
        directions = step["input_directions"] or [0] * n_scan
        lengths = {s.shape[a] for s, a in zip(scans, axes)}
        if len(lengths) != 1:
            raise InputError(f"Scan {step['node']}: scan inputs disagree on the sequence length "
                             f"({sorted(lengths)})")
        length = lengths.pop()
        stacks: list[list[Any]] = [[] for _ in step["scan_outputs"]]
        for t in range(length):
            inner = dict(env)
            for name, value in zip(body["inputs"], state):
                inner[name] = value
            for name, s, a, d in zip(body["inputs"][len(state):], scans, axes, directions):
                inner[name] = np.asarray(np.take(s, length - 1 - t if d else t, axis=a))
            results = self._block(body, inner)
            state = results[:len(state)]
            for stack, value in zip(stacks, results[len(state):]):
                stack.append(to_numpy(value))
        self._trace.events.append({"kind": "scan", "node": step["node"], "trips": length})
        out_axes = step["output_axes"] or [0] * len(stacks)
        out_dirs = step["output_directions"] or [0] * len(stacks)
        stacked = []
        for stack, spec, axis, direction in zip(stacks, step["scan_outputs"], out_axes, out_dirs):
            stacked.append(_stack(stack[::-1] if direction else stack, spec, axis))
        for name, value in zip(step["outputs"], state + stacked):
            if name:
                env[name] = value


def _stack(values: list[np.ndarray], spec: dict[str, Any], axis: int) -> np.ndarray:
    if values:
        return np.stack(values, axis=axis % (values[0].ndim + 1))
    shape = [0] + [d or 0 for d in spec["shape"]]
    return np.zeros(shape, dtype=spec["dtype"])


# -- checking a program before it runs -------------------------------------------------------

# What each step must hold: a name ("" allowed where marked), a list of names, an int, a list
# of ints, scan-output specs or a nested block. The interpreter reads these without checking.
_FIELDS: dict[str, dict[str, str]] = {
    "call": {"segment": "name", "inputs": "names", "outputs": "names"},
    "alias": {"src": "name", "dst": "name"},
    "const": {"name": "name", "const": "name"},
    "if": {"node": "name", "cond": "name", "outputs": "names", "then": "block", "else": "block"},
    "loop": {"node": "name", "trip_count": "name?", "cond": "name?", "initial": "names", "outputs": "names",
             "scan_outputs": "specs", "body": "block"},
    "scan": {"node": "name", "inputs": "names", "outputs": "names", "num_scan_inputs": "int",
             "input_axes": "ints", "input_directions": "ints", "output_axes": "ints",
             "output_directions": "ints", "scan_outputs": "specs", "body": "block"},
}


_KINDS: dict[str, Callable[[Any], bool]] = {
    "name": lambda v: isinstance(v, str) and v != "",
    "name?": lambda v: isinstance(v, str),
    "names": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "ints": lambda v: isinstance(v, list) and all(isinstance(n, int) for n in v),
    "specs": lambda v: isinstance(v, list) and all(
        isinstance(s, dict) and isinstance(s.get("dtype"), str) and isinstance(s.get("shape"), list) for s in v),
    "block": lambda v: isinstance(v, dict),
}


def check(program: Any, segments: set[str], consts: set[str], inputs: list[str]) -> None:
    """Refuse (BundleError) a program the interpreter could not run to the end: a step of an
    unknown shape, a segment or constant the bundle lacks, a value read before it is bound.
    A bundle's checksums say its bytes are as written, not that its writer wrote sense."""
    if not isinstance(program, dict) or program.get("version") != PROGRAM_VERSION:
        version = program.get("version") if isinstance(program, dict) else None
        raise BundleError(f"host program version {version!r} is not supported "
                          f"(this edgert reads version {PROGRAM_VERSION})")
    _Checker(segments, consts).block(program.get("body"), set(inputs), "body", binds_inputs=False)


class _Checker:
    def __init__(self, segments: set[str], consts: set[str]) -> None:
        self.segments, self.consts = segments, consts

    def block(self, block: Any, scope: set[str], where: str, binds_inputs: bool = True) -> None:
        """``binds_inputs``: the interpreter binds the block's inputs (the bundle's, a loop or
        scan body's); an If branch's it does not, so they must be bound already."""
        if not isinstance(block, dict):
            raise BundleError(f"host program: {where} is not a block")
        inputs = self.names(block.get("inputs"), f"{where}.inputs")
        if not binds_inputs:
            self.read(inputs, scope, f"{where}.inputs")
        scope = scope | set(inputs)
        steps = block.get("steps")
        if not isinstance(steps, list):
            raise BundleError(f"host program: {where}.steps is not a list")
        for i, step in enumerate(steps):
            self.step(step, scope, f"{where}.steps[{i}]")
        self.read(self.names(block.get("outputs"), f"{where}.outputs"), scope, f"{where}.outputs")

    def step(self, step: Any, scope: set[str], where: str) -> None:
        op = step.get("op") if isinstance(step, dict) else None
        if op not in _FIELDS:
            raise BundleError(f"unknown host program step {op!r} at {where}; the bundle needs a newer edgert")
        for field, kind in _FIELDS[op].items():
            self.field(step.get(field), kind, f"{where}.{field}")
        if op == "call":
            if step["segment"] not in self.segments:
                raise BundleError(f"host program: {where} calls segment {step['segment']!r}, which the bundle lacks")
            self.read(step["inputs"], scope, where)
            scope.update(step["outputs"])
        elif op == "alias":
            self.read([step["src"]], scope, where)
            scope.add(step["dst"])
        elif op == "const":
            if step["const"] not in self.consts:
                raise BundleError(f"host program: {where} binds constant {step['const']!r}, which the bundle lacks")
            scope.add(step["name"])
        else:
            self.control_flow(op, step, scope, where)

    def control_flow(self, op: str, step: dict[str, Any], scope: set[str], where: str) -> None:
        if op == "if":
            self.read([step["cond"], *self.names(step.get("probe", []), f"{where}.probe")], scope, where)
            self.block(step["then"], scope, f"{where}.then", binds_inputs=False)
            self.block(step["else"], scope, f"{where}.else", binds_inputs=False)
        else:
            reads = step["initial"] + [n for n in (step["trip_count"], step["cond"]) if n] if op == "loop" \
                else step["inputs"]
            self.read(reads, scope, where)
            body_inputs = self.names(step["body"].get("inputs"), f"{where}.body.inputs")
            if op == "loop" and len(body_inputs) < 2:
                raise BundleError(f"host program: {where}.body needs inputs [iteration, condition, ...]")
            if op == "scan" and not 0 < step["num_scan_inputs"] <= len(step["inputs"]):
                raise BundleError(f"host program: {where}.num_scan_inputs is out of range")
            self.block(step["body"], scope, f"{where}.body")
        scope.update(n for n in step["outputs"] if n)

    def field(self, value: Any, kind: str, where: str) -> None:
        if not _KINDS[kind](value):
            raise BundleError(f"host program: {where} is malformed ({kind} expected, got {str(value)[:60]!r})")

    def names(self, value: Any, where: str) -> list[str]:
        self.field(value, "names", where)
        return list(value)

    @staticmethod
    def read(names: list[str], scope: set[str], where: str) -> None:
        missing = [n for n in names if n not in scope]
        if missing:
            raise BundleError(f"host program: {where} reads {missing[0]!r} before anything binds it")
