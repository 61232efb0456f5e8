"""Build the dynamic model zoo (edgert/zoo/dynamic/*.onnx) and the inputs that cover each path.

Every model's graph depends on its input (early exits, gated blocks, a block-drop policy,
top-1 expert routing, a greedy decoding Loop, an If over a symbolic batch). Weights come
from fixed seeds. Thresholds and biases are set from the model's own behaviour on seeded
random inputs (run with ONNX Runtime), so that every branch is taken by some input; the
chosen test inputs sit well away from every decision boundary.

The files are the same on every machine: ONNX Runtime's (and numpy's log's) last bits
depend on the CPU's vector unit and the engine's version, so every value derived from them
that lands in a file is rounded to a multiple of GRID first, and the chosen test inputs keep
MARGIN from every threshold. The decoder's trip counts come from argmaxes inside its Loop,
which no output shows: a float64 replay checks that no greedy step is a near tie.
tests/test_dynamic_zoo.py regenerates the zoo with every ORT output perturbed beyond such
noise and checks that the bytes do not change. Beside each model:

    <name>.npz         arrays "<case>/<input name>" for each test case
    <name>.cases.json  for each case the path ONNX Runtime's outputs imply:
                       {"branches": {If node: [branch, ...]}, "trips": {Loop node: [n]}}

    python tools/make_dynamic_zoo.py [--out edgert/zoo/dynamic]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
OPSET = 17
IR_VERSION = 8
MARGIN = 0.05  # how far (in probability) a test input's decision value stays from its threshold
GRID = 2.0 ** -8  # thresholds and biases are multiples of this (far below MARGIN, far above noise)
CASES_PER_PATH = 2
PROBES = 400
# Sizes: large enough that compute, not per-call overhead, dominates a batch-1 run on a
# CPU (the benchmark compares engines), small enough for quick CI compiles.
IMAGE = 64  # input height and width of the CNNs
EE_CH = (16, 32)  # early-exit CNN: stage 1 channels, stage 2/3 channels
GATED_CH = 16  # skipnet / blockdrop block width
MOE_WIDTH = 64


class _Graph:
    """Nodes of one (sub)graph; initializers live in the root so subgraphs capture them."""

    def __init__(self, rng: np.random.Generator, inits: list[Any], prefix: str = "") -> None:
        self.rng, self.inits, self.prefix = rng, inits, prefix
        self.nodes: list[onnx.NodeProto] = []
        self.outputs: list[str] = []  # for a branch: the names it returns

    def sub(self, prefix: str) -> "_Graph":
        return _Graph(self.rng, self.inits, self.prefix + prefix)

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = self.prefix + name
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, name: str, stride: int = 1) -> str:
        w = self.rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))
        b = self.rng.normal(0.0, 0.05, cout)
        wn = self.const(f"{self.prefix}{name}.w", w.astype(np.float32))
        bn = self.const(f"{self.prefix}{name}.b", b.astype(np.float32))
        return self.node("Conv", [x, wn, bn], name, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[stride, stride])

    def dense(self, x: str, cin: int, cout: int, name: str, bias: np.ndarray | None = None,
              scale: float = 1.0) -> str:
        w = self.rng.standard_normal((cin, cout)) * np.sqrt(1.0 / cin) * scale
        b = np.zeros(cout) if bias is None else bias
        wn = self.const(f"{self.prefix}{name}.w", w.astype(np.float32))
        bn = self.const(f"{self.prefix}{name}.b", np.asarray(b, np.float32))
        return self.node("Gemm", [x, wn, bn], name)

    def pool(self, x: str, name: str) -> str:
        return self.node("Flatten", [self.node("GlobalAveragePool", [x], name + "_gap")], name)

    def if_(self, cond: str, then: "_Graph", other: "_Graph", outs: list[tuple[str, int, list]],
            name: str) -> list[str]:
        def graph(g: _Graph, tag: str) -> onnx.GraphProto:
            return helper.make_graph(g.nodes, f"{name}_{tag}", [], [
                helper.make_tensor_value_info(o, t, None) for o, (_, t, _) in zip(g.outputs, outs)])
        names = [self.prefix + o for o, _, _ in outs]
        self.nodes.append(helper.make_node("If", [cond], names, name=self.prefix + name,
                                           then_branch=graph(then, "then"),
                                           else_branch=graph(other, "else")))
        return names


def _model(g: _Graph, name: str, inputs: list[Any], outputs: list[Any]) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, producer_name="edgert.make_dynamic_zoo", producer_version="1",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """ONNX Runtime's outputs for each feed (one session for all of them)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, f) for f in feeds]


def _coarse(value: float) -> float:
    """``value`` rounded to a multiple of GRID, so float noise below GRID cannot reach a file."""
    return float(np.round(value / GRID) * GRID)


def _tensor(name: str, elem: int, shape: list) -> Any:
    return helper.make_tensor_value_info(name, elem, shape)


def _image(rng: np.random.Generator) -> np.ndarray:
    """Noise plus a per-channel offset: pixel noise alone averages out over a 64x64 pool,
    leaving every input's gates and confidences the same."""
    noise = rng.standard_normal((1, 3, IMAGE, IMAGE)) + rng.normal(0.0, 1.0, (1, 3, 1, 1))
    return noise.astype(np.float32)


# -- early exit CNN ------------------------------------------------------------------------
def _head(g: _Graph, x: str, channels: int, name: str) -> tuple[str, str]:
    probs = g.node("Softmax", [g.dense(g.pool(x, name + "_pool"), channels, 10, name + "_fc",
                                       scale=6.0)], name + "_probs", axis=1)
    return probs, g.node("ReduceMax", [probs], name + "_conf", keepdims=0)


def early_exit(t1: float, t2: float, seed: int = 10) -> onnx.ModelProto:
    """Three stages; stage 1 and 2 exit when the max softmax probability exceeds t1 / t2."""
    g = _Graph(np.random.default_rng(seed), [])
    a, b = EE_CH
    c1 = g.node("Relu", [g.conv("x", 3, a, "conv1")], "relu1")
    p1, conf1 = _head(g, c1, a, "exit1")
    cond1 = g.node("Greater", [conf1, g.const("t1", np.array([t1], np.float32))], "exit1_take")

    take1 = g.sub("")
    take1.node("Identity", [p1], "probs_e1")
    take1.node("Constant", [], "exit_e1", value=numpy_helper.from_array(np.array([0], np.int64)))
    take1.outputs = ["probs_e1", "exit_e1"]

    go2 = g.sub("")
    c2 = go2.node("Relu", [go2.conv(c1, a, b, "conv2", stride=2)], "relu2")
    p2, conf2 = _head(go2, c2, b, "exit2")
    cond2 = go2.node("Greater", [conf2, go2.const("t2", np.array([t2], np.float32))], "exit2_take")
    take2 = go2.sub("")
    take2.node("Identity", [p2], "probs_e2")
    take2.node("Constant", [], "exit_e2", value=numpy_helper.from_array(np.array([1], np.int64)))
    take2.outputs = ["probs_e2", "exit_e2"]
    go3 = go2.sub("")
    c3 = go3.node("Relu", [go3.conv(c2, b, b, "conv3")], "relu3")
    p3, _ = _head(go3, c3, b, "exit3")
    go3.node("Constant", [], "exit_e3", value=numpy_helper.from_array(np.array([2], np.int64)))
    go3.outputs = [p3, "exit_e3"]
    go2.if_(cond2, take2, go3, [("probs_b2", TensorProto.FLOAT, []),
                                ("exit_b2", TensorProto.INT64, [])], "exit2_if")
    go2.outputs = ["probs_b2", "exit_b2"]
    g.if_(cond1, take1, go2, [("probs", TensorProto.FLOAT, []), ("exit", TensorProto.INT64, [])],
          "exit1_if")
    return _model(g, "early_exit_cnn", [_tensor("x", TensorProto.FLOAT, [1, 3, IMAGE, IMAGE])],
                  [_tensor("probs", TensorProto.FLOAT, [1, 10]),
                   _tensor("exit", TensorProto.INT64, [1])])


def _early_exit_zoo(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[dict], list[dict]]:
    probes = [{"x": _image(rng)} for _ in range(PROBES)]
    # With t=2 (never exit) / t=-1 (always exit) the output confidence is that stage's.
    conf1 = np.array([out[0].max() for out in _run(early_exit(-1, -1), probes)])
    conf2 = np.array([out[0].max() for out in _run(early_exit(2, -1), probes)])
    t1 = _coarse(np.quantile(conf1, 0.6))
    t2 = _coarse(np.quantile(conf2[conf1 <= t1], 0.5))
    model = early_exit(t1, t2)
    exits = [out[1][0] for out in _run(model, probes)]
    cases, expects = [], []
    for exit_id, expect in [(0, {"exit1_if": ["then"]}),
                            (1, {"exit1_if": ["else"], "exit2_if": ["then"]}),
                            (2, {"exit1_if": ["else"], "exit2_if": ["else"]})]:
        ok = [i for i in range(PROBES) if abs(conf1[i] - t1) > MARGIN
              and (exit_id == 0 or abs(conf2[i] - t2) > MARGIN)
              and exits[i] == exit_id]
        for i in ok[:CASES_PER_PATH]:
            cases.append(probes[i])
            expects.append({"branches": expect})
    return model, cases, expects


# -- gated / block-drop residual networks -------------------------------------------------
def _block(g: _Graph, h: str, name: str) -> str:
    y = g.node("Relu", [g.conv(h, GATED_CH, GATED_CH, name + "_conv1")], name + "_relu1")
    y = g.conv(y, GATED_CH, GATED_CH, name + "_conv2")
    return g.node("Relu", [g.node("Add", [h, y], name + "_add")], name + "_out")


def _gated(g: _Graph, h: str, cond: str, i: int) -> str:
    run = g.sub("")
    run.outputs = [_block(run, h, f"block{i}")]
    skip = g.sub("")
    skip.outputs = [skip.node("Identity", [h], f"block{i}_skip")]
    return g.if_(cond, run, skip, [(f"h{i}", TensorProto.FLOAT, [])], f"block{i}_if")[0]


def skipnet(biases: list[float], seed: int = 20) -> onnx.ModelProto:
    """Three residual blocks; a gate computed from the current features decides each one."""
    g = _Graph(np.random.default_rng(seed), [])
    h = g.node("Relu", [g.conv("x", 3, GATED_CH, "stem")], "stem_relu")
    gates = []
    for i, bias in enumerate(biases):
        gate = g.node("Sigmoid", [g.dense(g.pool(h, f"gate{i}_pool"), GATED_CH, 1, f"gate{i}_fc",
                                          bias=[bias], scale=4.0)], f"gate{i}")
        gates.append(gate)
        cond = g.node("Squeeze", [g.node("Greater", [gate, g.const(f"half{i}", np.float32(0.5))],
                                         f"gate{i}_on")], f"gate{i}_cond")
        h = _gated(g, h, cond, i)
    g.dense(g.pool(h, "head_pool"), GATED_CH, 10, "logits")
    g.node("Concat", gates, "gates", axis=1)
    return _model(g, "skipnet", [_tensor("x", TensorProto.FLOAT, [1, 3, IMAGE, IMAGE])],
                  [_tensor("logits", TensorProto.FLOAT, [1, 10]),
                   _tensor("gates", TensorProto.FLOAT, [1, len(biases)])])


def blockdrop(bias: np.ndarray, seed: int = 30) -> onnx.ModelProto:
    """A policy head looks at the input once and decides which of three blocks run."""
    g = _Graph(np.random.default_rng(seed), [])
    h = g.node("Relu", [g.conv("x", 3, GATED_CH, "stem")], "stem_relu")
    feat = g.pool(g.node("Relu", [g.conv("x", 3, GATED_CH, "policy_conv")], "policy_relu"),
                  "policy_pool")
    policy = g.node("Sigmoid", [g.dense(feat, GATED_CH, len(bias), "policy_fc", bias=bias, scale=4.0)],
                    "policy")
    for i in range(len(bias)):
        keep = g.node("Gather", [policy, g.const(f"idx{i}", np.array([i], np.int64))],
                      f"policy{i}", axis=1)
        cond = g.node("Greater", [keep, g.const(f"half{i}", np.float32(0.5))], f"policy{i}_on")
        h = _gated(g, h, cond, i)
    g.dense(g.pool(h, "head_pool"), GATED_CH, 10, "logits")
    return _model(g, "blockdrop", [_tensor("x", TensorProto.FLOAT, [1, 3, IMAGE, IMAGE])],
                  [_tensor("logits", TensorProto.FLOAT, [1, 10]),
                   _tensor("policy", TensorProto.FLOAT, [1, len(bias)])])


def _gate_cases(probes: list[dict], gates: np.ndarray) -> tuple[list, list]:
    """Pick inputs far from 0.5 on every gate so that each block is both run and skipped."""
    safe = [i for i in range(len(probes)) if np.all(np.abs(gates[i] - 0.5) > MARGIN)]
    cases, expects, seen = [], [], set()
    for block in range(gates.shape[1]):
        for on in (True, False):
            pick = [i for i in safe if (gates[i, block] > 0.5) == on and i not in seen]
            for i in pick[:1]:
                seen.add(i)
                cases.append(probes[i])
                expects.append({"branches": {f"block{b}_if": ["then" if gates[i, b] > 0.5 else "else"]
                                             for b in range(gates.shape[1])}})
    return cases, expects


def _skipnet_zoo(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[dict], list[dict]]:
    probes = [{"x": _image(rng)} for _ in range(PROBES)]
    biases = [0.0, 0.0, 0.0]
    for i in range(3):  # centre each gate on its median, given the gates before it
        gates = np.array([out[1][0] for out in _run(skipnet(biases), probes)])
        logit = np.log(gates[:, i]) - np.log1p(-gates[:, i])
        biases[i] = _coarse(-np.median(logit))
    model = skipnet(biases)
    gates = np.array([out[1][0] for out in _run(model, probes)])
    return (model, *_gate_cases(probes, gates))


def _blockdrop_zoo(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[dict], list[dict]]:
    probes = [{"x": _image(rng)} for _ in range(PROBES)]
    policy = np.array([out[1][0] for out in _run(blockdrop(np.zeros(3)), probes)])
    policy = np.clip(policy, 1e-6, 1 - 1e-6)  # saturated sigmoids would give infinite logits
    logit = np.log(policy) - np.log1p(-policy)
    model = blockdrop(np.array([_coarse(-m) for m in np.median(logit, axis=0)]))
    policy = np.array([out[1][0] for out in _run(model, probes)])
    return (model, *_gate_cases(probes, policy))


# -- top-1 mixture of experts ---------------------------------------------------------------
def moe(seed: int = 40, experts: int = 4, width: int = MOE_WIDTH) -> onnx.ModelProto:
    """A router's argmax picks one of four MLP experts through a chain of Ifs."""
    g = _Graph(np.random.default_rng(seed), [])
    logits = g.dense("x", width, experts, "router", scale=3.0)
    choice = g.node("ArgMax", [logits], "route", axis=1, keepdims=0)

    def expert(sub: _Graph, k: int) -> None:
        hid = sub.node("Relu", [sub.dense("x", width, 2 * width, f"expert{k}_fc1")], f"expert{k}_relu")
        sub.outputs = [sub.node("Add", ["x", sub.dense(hid, 2 * width, width, f"expert{k}_fc2")],
                                f"expert{k}_out")]

    def chain(sub: _Graph, k: int) -> None:
        cond = sub.node("Squeeze", [sub.node("Equal", [choice, sub.const(
            f"k{k}", np.array([k], np.int64))], f"is{k}")], f"is{k}_cond")
        pick, rest = sub.sub(""), sub.sub("")
        expert(pick, k)
        if k + 2 < experts:
            chain(rest, k + 1)
        else:
            expert(rest, k + 1)
        sub.outputs = sub.if_(cond, pick, rest, [(f"y{k}", TensorProto.FLOAT, [])], f"expert{k}_if")

    chain(g, 0)
    g.nodes.append(helper.make_node("Identity", ["y0"], ["y"], name="y_out"))
    return _model(g, "moe_top1", [_tensor("x", TensorProto.FLOAT, [1, width])],
                  [_tensor("y", TensorProto.FLOAT, [1, width]),
                   _tensor(logits, TensorProto.FLOAT, [1, experts])])


def _moe_zoo(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[dict], list[dict]]:
    model = moe()
    probes = [{"x": rng.standard_normal((1, MOE_WIDTH)).astype(np.float32)} for _ in range(PROBES)]
    cases, expects = [], []
    for feed, out in zip(probes, _run(model, probes)):
        logits = np.sort(out[1][0])
        if logits[-1] - logits[-2] < 0.5:  # keep the router's top-2 gap clear of noise
            continue
        k = int(np.argmax(out[1][0]))
        if sum(1 for e in expects if e["expert"] == k) >= CASES_PER_PATH:
            continue
        branches = {f"expert{j}_if": ["else"] for j in range(min(k, 3))}
        if k < 3:
            branches[f"expert{k}_if"] = ["then"]
        cases.append(feed)
        expects.append({"expert": k, "branches": branches})
    return model, cases, [{"branches": e["branches"]} for e in expects]


# -- greedy decoder with a Loop ---------------------------------------------------------------
VOCAB, HIDDEN, MAX_STEPS, EOS = 32, 64, 8, 1


def decoder(eos_bias: float, seed: int = 50) -> onnx.ModelProto:
    """Greedy decoding: feed back the argmax token until it is EOS or MAX_STEPS have run."""
    rng = np.random.default_rng(seed)
    g = _Graph(rng, [])
    emb = g.const("embed", (rng.standard_normal((VOCAB, HIDDEN)) * 0.8).astype(np.float32))
    wh = g.const("w_h", (rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32))
    wo = g.const("w_out", (rng.standard_normal((HIDDEN, VOCAB)) * 1.5).astype(np.float32))
    bias = np.zeros(VOCAB, np.float32)
    bias[EOS] = eos_bias
    bo = g.const("b_out", bias)
    body = g.sub("")
    e = body.node("Gather", [emb, "tok_in"], "embed_tok", axis=0)
    h = body.node("Tanh", [body.node("Add", [body.node("MatMul", ["h_in", wh], "mix"), e], "pre")], "h_new")
    logits = body.node("Add", [body.node("MatMul", [h, wo], "proj"), bo], "logits")
    tok = body.node("ArgMax", [logits], "tok_new", axis=1, keepdims=0)
    go = body.node("Not", [body.node("Squeeze", [body.node("Equal", [tok, g.const(
        "eos", np.array([EOS], np.int64))], "is_eos")], "is_eos_scalar")], "go_on")
    body.nodes.append(helper.make_node("Identity", [tok], ["tok_scan"], name="tok_scan"))
    body_graph = helper.make_graph(
        body.nodes, "decode_step",
        [_tensor("i", TensorProto.INT64, []), _tensor("cond_in", TensorProto.BOOL, []),
         _tensor("h_in", TensorProto.FLOAT, [1, HIDDEN]), _tensor("tok_in", TensorProto.INT64, [1])],
        [_tensor(go, TensorProto.BOOL, []), _tensor(h, TensorProto.FLOAT, [1, HIDDEN]),
         _tensor(tok, TensorProto.INT64, [1]), _tensor("tok_scan", TensorProto.INT64, [1])])
    max_steps = g.const("max_steps", np.array(MAX_STEPS, np.int64))
    start = g.const("start", np.array(True))
    bos = g.const("bos", np.array([0], np.int64))
    g.nodes.append(helper.make_node("Loop", [max_steps, start, "h0", bos],
                                    ["h_final", "tok_final", "tokens"], name="decode_loop",
                                    body=body_graph))
    return _model(g, "greedy_decoder", [_tensor("h0", TensorProto.FLOAT, [1, HIDDEN])],
                  [_tensor("tokens", TensorProto.INT64, [None, 1]),
                   _tensor("h_final", TensorProto.FLOAT, [1, HIDDEN])])


DECODE_GAP = 1e-4  # least top-2 logit gap of any greedy step: ~100 float32 ulps of a logit


def _decode_lengths(model: onnx.ModelProto, probes: list[dict]) -> np.ndarray:
    """Decode lengths of a float64 replay of ``decoder``, refusing a step whose argmax is a
    near tie: the Loop's trip counts are then the same on any CPU and engine."""
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    lengths = []
    for feed in probes:
        h, tok, steps = feed["h0"].astype(np.float64), 0, 0
        while steps < MAX_STEPS and (steps == 0 or tok != EOS):
            h = np.tanh(h @ w["w_h"] + w["embed"][tok])
            logits = (h @ w["w_out"] + w["b_out"])[0]
            top2 = np.sort(logits)[-2:]
            if top2[1] - top2[0] < DECODE_GAP:
                raise RuntimeError(f"greedy_decoder: a near tie decides a token ({top2})")
            tok, steps = int(np.argmax(logits)), steps + 1
        lengths.append(steps)
    return np.array(lengths)


def _decoder_zoo(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[dict], list[dict]]:
    probes = [{"h0": rng.standard_normal((1, HIDDEN)).astype(np.float32)} for _ in range(PROBES)]
    best, model, lengths = None, None, None
    for eos_bias in np.linspace(-2.0, 2.0, 9):  # the bias that spreads decode lengths widest
        candidate = decoder(float(eos_bias))
        found = np.array([len(out[0]) for out in _run(candidate, probes)])
        if not np.array_equal(found, _decode_lengths(candidate, probes)):
            raise RuntimeError("greedy_decoder: the float64 replay decodes other lengths than ORT")
        spread = len(set(found.tolist()))
        if best is None or spread > best:
            best, model, lengths = spread, candidate, found
    cases, expects = [], []
    for steps in sorted(set(lengths.tolist())):
        for i in np.flatnonzero(lengths == steps)[:1]:
            cases.append(probes[i])
            expects.append({"trips": {"decode_loop": [int(steps)]}})
    return model, cases, expects


# -- If over a symbolic batch -----------------------------------------------------------------
SB_IN, SB_HIDDEN = 32, 64

def symbolic_batch(t: float, seed: int = 60) -> onnx.ModelProto:
    """Batch N is symbolic; a batch whose mean activation is high takes the deeper head."""
    g = _Graph(np.random.default_rng(seed), [])
    h = g.node("Relu", [g.dense("x", SB_IN, SB_HIDDEN, "fc1")], "relu1")
    score = g.node("ReduceMean", [h], "score", keepdims=0)
    cond = g.node("Greater", [score, g.const("t", np.float32(t))], "deep")
    deep, shallow = g.sub(""), g.sub("")
    mid = deep.node("Relu", [deep.dense(h, SB_HIDDEN, SB_HIDDEN, "fc_deep")], "relu_deep")
    deep.outputs = [deep.dense(mid, SB_HIDDEN, 4, "head_deep")]
    shallow.outputs = [shallow.dense(h, SB_HIDDEN, 4, "head_shallow")]
    g.if_(cond, deep, shallow, [("y", TensorProto.FLOAT, [])], "depth_if")
    return _model(g, "symbolic_batch", [_tensor("x", TensorProto.FLOAT, ["N", SB_IN])],
                  [_tensor("y", TensorProto.FLOAT, ["N", 4]), _tensor("score", TensorProto.FLOAT, [])])


def _symbolic_zoo(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[dict], list[dict]]:
    probes = [{"x": (rng.standard_normal((int(n), SB_IN)) + rng.normal(0, 0.5)).astype(np.float32)}
              for n in rng.integers(1, 6, PROBES)]
    scores = np.array([float(out[1]) for out in _run(symbolic_batch(0.0), probes)])
    t = _coarse(np.median(scores))
    cases, expects = [], []
    for deep in (True, False):
        pick = [i for i in range(PROBES) if (scores[i] > t) == deep and abs(scores[i] - t) > MARGIN]
        sizes_seen: set[int] = set()
        for i in pick:  # different batch sizes per branch
            n = probes[i]["x"].shape[0]
            if n in sizes_seen or len(sizes_seen) >= CASES_PER_PATH:
                continue
            sizes_seen.add(n)
            cases.append(probes[i])
            expects.append({"branches": {"depth_if": ["then" if deep else "else"]}})
    return symbolic_batch(t), cases, expects


ZOO: dict[str, Callable[[np.random.Generator], tuple[onnx.ModelProto, list[dict], list[dict]]]] = {
    "early_exit_cnn": _early_exit_zoo,
    "skipnet": _skipnet_zoo,
    "blockdrop": _blockdrop_zoo,
    "moe_top1": _moe_zoo,
    "greedy_decoder": _decoder_zoo,
    "symbolic_batch": _symbolic_zoo,
}


def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (name, make) in enumerate(ZOO.items()):
        model, cases, expects = make(np.random.default_rng(1000 + index))
        path = out / f"{name}.onnx"
        onnx.save(model, path)
        arrays = {f"case{c}/{k}": v for c, feed in enumerate(cases) for k, v in feed.items()}
        np.savez(out / f"{name}.npz", **arrays)
        (out / f"{name}.cases.json").write_text(json.dumps(
            {f"case{c}": e for c, e in enumerate(expects)}, indent=1, sort_keys=True) + "\n")
        written.append(path)
        print(f"{path}: {len(cases)} cases")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "edgert" / "zoo" / "dynamic")
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
