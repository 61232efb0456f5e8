"""Pruning: channel groups from the graph, nested levels that are real smaller models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgert.errors import ModelError, UsageError
from edgert.variants import aiofile, config_graph, open as open_variants
from edgert.variants.groups import analyze
from edgert.variants.prune import check_ratios, prune

REPO = Path(__file__).resolve().parents[1]
RESNET = REPO / "edgert" / "zoo" / "resnet.onnx"


class _Builder:
    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv(self, name: str, x: str, cin: int, cout: int, group: int = 1) -> str:
        w = self.const(f"{name}.w", self.rng.standard_normal((cout, cin // group, 3, 3)) * 0.3)
        self.nodes.append(helper.make_node("Conv", [x, w], [name], name=name, pads=[1, 1, 1, 1], group=group))
        return name

    def bn(self, name: str, x: str, c: int) -> str:
        ins = [x] + [self.const(f"{name}.{k}", v) for k, v in (
            ("g", self.rng.uniform(0.2, 1.5, c)), ("b", self.rng.normal(0, 0.1, c)),
            ("m", self.rng.normal(0, 0.1, c)), ("v", self.rng.uniform(0.5, 1.5, c)))]
        self.nodes.append(helper.make_node("BatchNormalization", ins, [name], name=name))
        return name

    def op(self, op: str, name: str, ins: list[str], **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, ins, [name], name=name, **attrs))
        return name

    def save(self, path: Path, x_last: str, channels: int) -> Path:
        flat = self.op("Flatten", "flat", [self.op("GlobalAveragePool", "gap", [x_last])])
        w = self.const("fc.w", self.rng.standard_normal((5, channels)))
        b = self.const("fc.b", self.rng.standard_normal(5))
        self.nodes.append(helper.make_node("Gemm", [flat, w, b], ["logits"], name="fc", transB=1))
        graph = helper.make_graph(
            self.nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], self.inits)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path


def tiny_model(path: Path) -> Path:
    """Residual add, depthwise conv, channel concat and a Gemm head: every rule in one graph."""
    g = _Builder()
    a = g.op("Relu", "relu_a", [g.bn("bn0", g.conv("c0", "x", 3, 8), 8)])
    b = g.bn("bn1", g.conv("c1", a, 8, 8), 8)
    r = g.op("Relu", "relu_r", [g.op("Add", "add", [a, b])])
    d = g.conv("dw", r, 8, 8, group=8)
    e = g.conv("c2", r, 8, 6)
    cat = g.op("Concat", "cat", [d, e], axis=1)
    return g.save(path, g.op("Relu", "relu_f", [g.conv("c3", cat, 14, 12)]), 12)


def shuffle_model(path: Path, blocks: int = 5) -> Path:
    """ShuffleNetV2's block structure: two branches concatenated and shuffled (Reshape to
    (1, 2, 8, H, W), Transpose, Reshape back), then split in halves; later blocks pass the
    first half through and convolve the second. The passed-through channels halve at every
    split: 8, 4, 2, 1 channels of 2, 4, 8, 16 entries, so the fourth split cannot be followed."""
    g = _Builder()
    i64 = lambda name, v: g.inits.append(numpy_helper.from_array(np.array(v, np.int64), name)) or name  # noqa: E731
    stem = g.op("Relu", "stem", [g.conv("c0", "x", 3, 16)])
    halves = (g.op("Relu", "b0_1", [g.conv("c0_1", stem, 16, 8)]), g.op("Relu", "b0_2", [g.conv("c0_2", stem, 16, 8)]))
    for k in range(blocks):
        cat = g.op("Concat", f"cat{k}", list(halves), axis=1)
        split = g.op("Reshape", f"view{k}", [cat, i64(f"view{k}.shape", [1, 2, 8, 16, 16])])
        moved = g.op("Transpose", f"transpose{k}", [split], perm=[0, 2, 1, 3, 4])
        shuffled = g.op("Reshape", f"unview{k}", [moved, i64(f"unview{k}.shape", [1, 16, 16, 16])])
        if k == blocks - 1:
            break
        g.nodes.append(helper.make_node("Split", [shuffled, i64(f"split{k}.sizes", [8, 8])],
                                        [f"s{k}_1", f"s{k}_2"], name=f"split{k}", axis=1))
        halves = (f"s{k}_1", g.op("Relu", f"b{k + 1}", [g.bn(f"bn{k + 1}", g.conv(f"c{k + 1}", f"s{k}_2", 8, 8), 8)]))
    return g.save(path, g.op("Relu", "relu_f", [g.conv("c_last", shuffled, 16, 12)]), 12)


def reshape_model(path: Path) -> Path:
    """A Reshape between two convs: the pruner cannot follow channels through it."""
    g = _Builder()
    a = g.conv("c0", "x", 3, 8)
    shape = g.inits.append(numpy_helper.from_array(np.array([1, 16, 8, 16], np.int64), "shape")) or "shape"
    r = g.op("Reshape", "reshape_0", [a, shape])  # folds rows into channels
    return g.save(path, g.op("Relu", "relu", [g.conv("c1", r, 16, 12)]), 12)


def _feeds(shape: tuple[int, ...], name: str = "x") -> dict[str, np.ndarray]:
    return {name: np.random.default_rng(1).standard_normal(shape).astype(np.float32)}


def _reference(model: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_groups_of_the_tiny_model(tmp_path: Path) -> None:
    graph = analyze(onnx.load(tiny_model(tmp_path / "m.onnx")))
    by_member = {m: g for g in graph.groups.values() for m in g.members}
    assert by_member["c0 output"] is by_member["c1 output"]  # the residual add ties them
    assert "dw" in graph.depthwise
    assert by_member["c2 output"].fixed is None and by_member["c3 output"].fixed is None
    assert by_member["fc output"].fixed == "reaches graph output 'logits'"
    c3_in = [p for p in graph.params if p.init == "c3.w" and p.axis == 1][0]
    assert [n for _, n in c3_in.segments] == [8, 6]  # the concat's two parts


def test_unprunable_node_is_named_and_skipped(tmp_path: Path) -> None:
    model = reshape_model(tmp_path / "m.onnx")
    report = prune(model, [0, 0.5], tmp_path / "m.aio")
    reasons = [s["reason"] for s in report.skipped]
    assert any("'reshape_0' (Reshape)" in r for r in reasons)
    with open_variants(tmp_path / "m.aio") as vm:  # the rest still prunes and runs
        vm.select(0.5)
        assert vm.run(_feeds((1, 3, 16, 16)))[0].shape == (1, 5)
        assert vm.levels[1].weight_bytes < vm.levels[0].weight_bytes


@pytest.mark.parametrize("ratios", [[], [0.5, 0.25], [0, 1.0], [-0.1, 0.5], [0.2, 0.2]])
def test_bad_ratios(ratios: list[float]) -> None:
    with pytest.raises(UsageError):
        check_ratios(ratios)


def test_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    with pytest.raises(ModelError):
        prune(bad, [0, 0.5], tmp_path / "o.aio")


def _masked_reference(aio: Path, model: Path, level: int, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The original graph with the file's permuted weights and the level's pruned input
    channels zeroed: what the physically smaller level must compute."""
    f = aiofile.read(aio)
    tensors = {k: np.array(v) for k, v in f.tensors.items()}
    lv = f.meta["levels"][level]
    for p in f.meta["template"]["param_axes"]:
        if p["role"] != "consumer":
            continue
        keep = np.zeros(tensors[p["init"]].shape[p["axis"]], bool)
        for a, b in lv["params"][p["init"]]["ranges"][p["axis"]]:
            keep[a:b] = True
        index = [slice(None)] * tensors[p["init"]].ndim
        index[p["axis"]] = ~keep
        tensors[p["init"]][tuple(index)] = 0.0
    f.close()
    m = onnx.load(str(model))
    for t in m.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(tensors[t.name], t.name))
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_levels_equal_the_masked_model(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    aio = tmp_path / "m.aio"
    prune(model, [0, 0.25, 0.5, 0.75], aio)
    feeds = _feeds((1, 3, 16, 16))
    with open_variants(aio) as vm:
        np.testing.assert_allclose(vm.run(feeds)[0], _reference(model, feeds), rtol=1e-4, atol=1e-5)
        previous = None
        for lv in vm.levels[1:]:
            vm.select(lv.ratio)
            got = vm.run(feeds)[0]
            np.testing.assert_allclose(got, _masked_reference(aio, model, lv.index, feeds), rtol=1e-4, atol=1e-5)
            assert previous is None or not np.allclose(got, previous)
            previous = got


def test_resnet_file_and_level_zero(tmp_path: Path) -> None:
    aio = tmp_path / "resnet.aio"
    report = prune(RESNET, [0, 0.25, 0.5, 0.75], aio)
    assert report.file_bytes <= 1.3 * RESNET.stat().st_size
    kept = [lv["kept"] for lv in report.levels]
    for bigger, smaller in zip(kept, kept[1:]):  # nested: every group shrinks or stays
        assert all(smaller[g] <= bigger[g] for g in bigger)
    assert kept[2]["13"] == 64  # the 128-channel residual stage at ratio 0.5
    feeds = _feeds((1, 3, 160, 160), "input")
    with open_variants(aio) as vm:
        np.testing.assert_allclose(vm.run(feeds)[0], _reference(RESNET, feeds), rtol=1e-4, atol=1e-4)


def test_ratio_zero_keeps_every_channel_whatever_the_channel_multiple(tmp_path: Path) -> None:
    """Ratio 0 rounded to the multiple too: with --channel-multiple 8 a group of 26 kept 24 (here,
    with 5, the group of 6 kept 5), so the 'full' level was not the model."""
    from edgert.variants.prune import level_kept

    graph = analyze(onnx.load(tiny_model(tmp_path / "m.onnx")))
    full = {g.id: g.size for g in graph.prunable()}
    assert 6 in full.values()
    assert level_kept(graph, 0.0, multiple=5) == full


def test_slicing_at_run_time_copies_nothing_and_agrees(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")  # the concat makes c3.w's level part two ranges
    aio = tmp_path / "m.aio"
    prune(model, [0, 0.5, 0.75], aio)
    feeds = _feeds((1, 3, 16, 16))
    with open_variants(aio, memory_budget=None, full_level="shared") as copied, \
            open_variants(aio, memory_budget=1.0, full_level="shared") as sliced:
        assert copied.memory()["strategies"] == ["view", "copy", "copy"]
        assert sliced.memory()["strategies"] == ["view", "slice", "slice"]
        assert copied.memory()["copied_bytes"] > 0
        assert sliced.memory()["copied_bytes"] == 0
        assert sliced.memory()["resident_bytes"] == sliced.full_weight_bytes
        for lv in copied.levels:
            copied.select_index(lv.index)
            sliced.select_index(lv.index)
            np.testing.assert_allclose(sliced.run(feeds)[0], copied.run(feeds)[0], rtol=1e-5, atol=1e-6)


def test_per_level_tensors_override_the_shared_slice(tmp_path: Path) -> None:
    from edgert.variants.prune import replace_weights

    model = tiny_model(tmp_path / "m.onnx")
    aio = tmp_path / "m.aio"
    prune(model, [0, 0.5], aio)
    feeds = _feeds((1, 3, 16, 16))
    with open_variants(aio) as vm:
        full = vm.run(feeds)[0]
        vm.select(0.5)
        before = vm.run(feeds)[0]
    with pytest.raises(UsageError, match="must have shape"):
        replace_weights(aio, tmp_path / "bad.aio", {}, {1: {"bn1.m": np.zeros(8, np.float32)}})
    replace_weights(aio, tmp_path / "new.aio", {}, {1: {"bn1.m": np.full(4, 5.0, np.float32)}}, note="test")
    with open_variants(tmp_path / "new.aio") as vm:
        np.testing.assert_array_equal(vm.run(feeds)[0], full)  # level 0 unchanged
        vm.select(0.5)
        assert not np.allclose(vm.run(feeds)[0], before)


def test_a_level_as_a_configuration_runs_with_that_levels_own_tensors(tmp_path: Path) -> None:
    """With --channel-multiple two levels keep a group at one width; each level's own BN
    statistics must serve its own configuration (not the last level with the same width)."""
    from edgert.variants import config as C
    from edgert.variants.prune import replace_weights
    from edgert.variants.ranges import slice_ranges

    aio = tmp_path / "m.aio"
    prune(tiny_model(tmp_path / "m.onnx"), [0, 0.25, 0.5, 0.75], aio, multiple=4)
    f = aiofile.read(aio)
    levels = f.meta["levels"]
    widths = [lv["kept"]["1"] for lv in levels]
    own = {i: {n: np.asarray(slice_ranges(f.tensors[s["tensor"]], s["ranges"])) + i
               for n, s in lv["params"].items() if n in ("bn0.m", "bn1.m")} for i, lv in enumerate(levels) if i}
    f.close()
    assert len(set(widths)) < len(widths)  # two levels share group 1's width: the case under test
    replace_weights(aio, tmp_path / "own.aio", {}, own)
    feeds = _feeds((1, 3, 16, 16))
    with open_variants(tmp_path / "own.aio", config_budget=None) as vm:
        for i in range(len(vm.levels)):
            vm.select_index(i)
            level = vm.run(feeds)[0].copy()
            vm.select_config(C.of_level(vm._file.meta, i))
            np.testing.assert_allclose(vm.run(feeds)[0], level, rtol=1e-5, atol=1e-5)


def test_grouped_conv_prunes_whole_groups(tmp_path: Path) -> None:
    """A grouped conv (16 channels, 4 groups of 4) between two convs: its input and output
    share one group pruned in whole blocks, each level's graph has group = kept blocks (ORT
    refuses a conv whose weight and group disagree), and level 0 is the original model."""
    g = _Builder()
    a = g.op("Relu", "relu_a", [g.conv("c0", "x", 3, 16)])
    b = g.op("Relu", "relu_b", [g.conv("gc", a, 16, 16, group=4)])
    model = g.save(tmp_path / "m.onnx", g.op("Relu", "relu_c", [g.conv("c1", b, 16, 6)]), 6)
    graph = analyze(onnx.load(model))
    shared = [grp for grp in graph.prunable() if grp.block == 4]
    assert len(shared) == 1 and shared[0].size == 16 and graph.grouped == {"gc": (((shared[0].id, 16),), 4)}
    aio = tmp_path / "m.aio"
    report = prune(model, [0, 0.3, 0.5, 0.75], aio)
    kept = [lv["kept"][str(shared[0].id)] for lv in report.levels]
    assert kept == [16, 12, 8, 4]  # 0.3 of 16 is 11.2 channels: whole blocks of 4 -> 12
    feeds = _feeds((1, 3, 16, 16))
    with open_variants(aio, graph_builder=config_graph.build) as vm:
        np.testing.assert_allclose(vm.run(feeds)[0], _reference(model, feeds), rtol=1e-4, atol=1e-5)
        f = aiofile.read(aio)
        for lv, k in zip(f.meta["levels"], kept):
            level = onnx.load_from_string(bytes(f.tensors[lv["graph"]]))
            node = next(n for n in level.graph.node if n.name == "gc")
            assert next(a.i for a in node.attribute if a.name == "group") == k // 4
        f.close()
        for lv in vm.levels:
            vm.select_index(lv.index)
            assert np.isfinite(vm.run(feeds)[0]).all()
        # a per-layer configuration (edgert.variants.config) mixing widths gets group = kept blocks too
        from edgert.variants import config as C

        widths = {g: (8 if int(g) == shared[0].id else k) for g, k in report.levels[1]["kept"].items()}
        vm.select_config(C.make(f.meta, widths))
        assert np.isfinite(vm.run(feeds)[0]).all()


def control_flow_model(path: Path) -> Path:
    """c0 -> relu -> If(flag): the branches' convs read the relu output and a weight of the
    outer graph, which a main-graph conv (c1 -> c2) reads too; an orphan initializer nothing
    reads (exporters leave those) sits in the graph."""
    g = _Builder()
    r = g.op("Relu", "relu", [g.conv("c0", "x", 3, 8)])
    shared = g.const("shared.w", g.rng.standard_normal((8, 8, 3, 3)) * 0.3)
    branch = {}
    for side in ("then", "else"):
        w = shared if side == "then" else g.const(f"{side}.w", g.rng.standard_normal((8, 8, 3, 3)) * 0.3)
        body = helper.make_graph([helper.make_node("Conv", [r, w], [f"{side}_out"], pads=[1, 1, 1, 1])],
                                 side, [], [helper.make_tensor_value_info(f"{side}_out", TensorProto.FLOAT, None)])
        branch[f"{side}_branch"] = body
    g.nodes.append(helper.make_node("If", ["flag"], ["chosen"], name="if", **branch))
    g.nodes.append(helper.make_node("Conv", [r, shared], ["c1"], name="c1", pads=[1, 1, 1, 1]))
    main = g.conv("c2", g.op("Relu", "relu_c1", ["c1"]), 8, 8)  # c1's output: prunable
    g.const("orphan", np.ones(5))
    last = g.op("Relu", "relu_out", [g.op("Add", "sum", ["chosen", main])])
    flat = g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [last])])
    w = g.const("fc.w", g.rng.standard_normal((5, 8)))
    g.nodes.append(helper.make_node("Gemm", [flat, w], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        g.nodes, "cf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16]),
                        helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], g.inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("flag", [True, False])
def test_control_flow_bodies_keep_what_they_read_whole(tmp_path: Path, flag: bool) -> None:
    """What an If body reads from the outer graph keeps its channels (named in the report)
    and its weights their shape, while the rest prunes; every level loads and runs (an
    orphan initializer made the level graphs fail to load before)."""
    model = control_flow_model(tmp_path / "cf.onnx")
    report = prune(model, [0, 0.5], tmp_path / "cf.aio")
    assert any("read inside the body of node if (If)" in s["reason"] for s in report.skipped)
    feeds = {**_feeds((1, 3, 16, 16)), "flag": np.array(flag)}
    reference = _reference(model, feeds)
    with open_variants(tmp_path / "cf.aio", threads=1) as vm:
        assert vm.run(feeds)[0] == pytest.approx(reference, rel=1e-4, abs=1e-5)
        vm.select_index(1)
        half = vm.run(feeds)[0]
    assert half.shape == reference.shape and np.isfinite(half).all()
    assert report.levels[1]["weight_bytes"] < report.levels[0]["weight_bytes"]  # c1's output still prunes


def test_cli_prune_quiet_shows_no_progress(tmp_path: Path) -> None:
    """`edgert prune --quiet` (as every long command takes it): the report on stdout (with the
    groups every model keeps whole, its input and output, on one plain line), no warning for
    those, and no progress lines."""
    from conftest import run_cli

    out = tmp_path / "r.aio"
    proc = run_cli("prune", str(RESNET), "--ratios", "0,0.5", "-o", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "ratio 0.5" in proc.stdout and out.exists()
    assert "kept whole (the model's interface): graph input 'input', reaches graph output" in proc.stdout
    assert proc.stderr == "", proc.stderr  # the zoo ResNet keeps nothing else whole


def test_channel_shuffle_levels_equal_the_masked_model(tmp_path: Path) -> None:
    """Both halves of a shuffle keep the same channels and the shuffle's and the Split's shape
    constants follow each level, so the branches and the shuffled channels prune; the fourth
    split, which would cut one channel's 16 entries in two, keeps its group whole and says so.
    Each level equals the full model with the level's dropped channels masked."""
    model = shuffle_model(tmp_path / "m.onnx")
    aio = tmp_path / "m.aio"
    report = prune(model, [0, 0.25, 0.5, 0.75], aio)
    reasons = [s["reason"] for s in report.skipped]
    assert any("'split3' (Split) cuts shuffled channels (16 entries each) apart" in r for r in reasons), reasons
    meta = aiofile.read_meta(aio)
    repeats = {p["init"]: p.get("repeat", 1) for p in meta["template"]["param_axes"] if p["role"] == "consumer"}
    assert repeats["c1.w"] == 2 and repeats["c2.w"] == 4  # the second halves of shuffles 0 and 1
    feeds = _feeds((1, 3, 16, 16))
    with open_variants(aio) as vm:
        np.testing.assert_allclose(vm.run(feeds)[0], _reference(model, feeds), rtol=1e-4, atol=1e-5)
        for lv in vm.levels[1:]:
            vm.select(lv.ratio)
            np.testing.assert_allclose(vm.run(feeds)[0], _masked_reference(aio, model, lv.index, feeds),
                                       rtol=1e-4, atol=1e-5)
    assert report.levels[-1]["weight_bytes"] < 0.5 * report.levels[0]["weight_bytes"]


def test_prune_says_when_no_level_is_smaller_than_the_full_model(tmp_path: Path) -> None:
    """A model whose weights all sit in a Loop body (the greedy decoder) gets levels that are
    the full model: the CLI says why instead of writing them silently; a model that prunes
    (the zoo ResNet) gets no such line."""
    from conftest import run_cli

    proc = run_cli("prune", "zoo:greedy_decoder", "-o", str(tmp_path / "g.aio"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert ("warning: every level is the full model: 5 of the model's weights are read inside "
            "control-flow bodies (decode_loop (Loop))") in proc.stderr, proc.stderr
    report = prune(RESNET, [0, 0.5], tmp_path / "r.aio")
    assert report.unpruned is None and report.levels[1]["weight_bytes"] < report.levels[0]["weight_bytes"]


def test_a_model_without_weights_or_graph_is_refused_before_writing(tmp_path: Path) -> None:
    """A Relu-only model and an empty file: the file was written, then the CLI summary divided by zero."""
    from conftest import run_cli

    relu = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(relu, tmp_path / "relu.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name, message in (("relu", "no floating-point weights"), ("empty", "no nodes")):
        with pytest.raises(ModelError, match=message):
            prune(tmp_path / f"{name}.onnx", [0, 0.5], tmp_path / f"{name}.aio")
        assert not (tmp_path / f"{name}.aio").exists()
    proc = run_cli("prune", str(tmp_path / "relu.onnx"), "-o", str(tmp_path / "relu.aio"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "no floating-point weights" in proc.stderr


def test_lut_of_a_file_without_prunable_groups_is_one_line(tmp_path: Path) -> None:
    from edgert.variants import lut
    from edgert.variants.frequency import FrequencySetting

    rng = np.random.default_rng(0)
    conv = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(conv, tmp_path / "one.onnx")
    prune(tmp_path / "one.onnx", [0, 0.5], tmp_path / "one.aio")  # both groups are the model's interface
    with pytest.raises(UsageError, match="no prunable group"):
        lut.measure(tmp_path / "one.aio", [FrequencySetting(1.0)])
