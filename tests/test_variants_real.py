"""``edgert prune`` on real architectures (torchvision CNNs, ViT, BERT, GPT-2, control-flow
CNNs; seeded random weights; TorchScript exports (`dynamo=False`, as many users export) from
tests/torch_models.py and the dynamo
exports of tools/make_real_zoo.py): every level runs with finite outputs, level 0 computes
what ORT computes on the original, every level removes about its share of the weights, and
transformers lose whole attention heads: a level computes the full model with the dropped
heads' (and MLP channels') consumer weights zeroed. The fast subset runs in CI; the larger
models carry the ``slow`` marker.

Removed weight fraction: a ratio r removes r of the channels of every prunable group. A weight
pruned on one axis (the stem conv, the classifier, a depthwise filter, a transformer's
projections whose other side is the fixed residual width) loses r of its elements, one pruned
on both axes about 1 - (1 - r)^2. So a level's removed fraction must lie in
[r - 0.1, 1 - (1 - r)^2 + 0.05]: 0.1 below for weights no rule can prune (a transformer's
embeddings, groups that reach the output) and for rounding small groups (six RegNet blocks
of 8 channels keep 4 or 5 at 0.25), 0.05 above for rounding up the other way.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import needs
from torch_models import (
    export_bert,
    export_cnn,
    export_vit,
    torchvision_models,
    with_random_classifier,
)

from edgert.variants import open as open_variants
from edgert.variants.prune import prune

pytestmark = needs("torch", "torchvision")  # found without importing: collection stays fast


@pytest.fixture(scope="module", autouse=True)
def _torchvision_loads() -> None:
    try:
        torchvision_models()
    except ImportError:
        pytest.skip("needs torchvision (the torch extra)")


RATIOS = [0.0, 0.25, 0.5, 0.75]
SIDE = 64  # small inputs keep ORT's session builds and runs quick; the weights are full size
FAST = ["mobilenet_v3_small", "squeezenet1_1", "regnet_y_400mf"]
SLOW = ["resnet50", "resnext50_32x4d", "efficientnet_b0", "convnext_tiny"]


def _image(side: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((1, 3, side, side)).astype(np.float32)}


def _tokens() -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(0, 100, (1, 16), dtype=np.int64)
    mask = np.ones((1, 16), np.int64)
    mask[0, 12:] = 0  # padding: the mask path is exercised too
    return {"input_ids": ids, "attention_mask": mask}


def check_levels(model: Path, feeds: dict[str, np.ndarray], tmp_path: Path, *, ratio_check: bool = True) -> list[float]:
    """Prune ``model``, run every level; returns each level's removed weight fraction."""
    import onnxruntime as ort

    report = prune(model, RATIOS, tmp_path / "m.aio")
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(reference).max() > 0  # a model that outputs zeros would hide wrong levels
    with open_variants(tmp_path / "m.aio", threads=1) as vm:
        outputs = []
        for lv in vm.levels:
            vm.select_index(lv.index)
            outputs.append(vm.run(feeds)[0])
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(outputs[0], reference, rtol=1e-4, atol=1e-4 * scale)
    for lv, out in zip(report.levels, outputs):
        assert out.shape == reference.shape and np.isfinite(out).all(), lv["ratio"]
    assert not np.allclose(outputs[-1], reference, rtol=1e-3, atol=1e-3 * scale)  # pruning did something
    full = report.levels[0]["weight_bytes"]
    removed = [1 - lv["weight_bytes"] / full for lv in report.levels]
    if ratio_check:
        for r, got in zip(RATIOS, removed):
            assert r - 0.1 <= got <= 1 - (1 - r) ** 2 + 0.05, (r, got, report.skipped)
    return removed


@pytest.mark.parametrize("name", FAST)
def test_cnn_levels(name: str, tmp_path: Path) -> None:
    check_levels(export_cnn(name, tmp_path / f"{name}.onnx", side=SIDE), _image(SIDE), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_large_cnn_levels(name: str, tmp_path: Path) -> None:
    check_levels(export_cnn(name, tmp_path / f"{name}.onnx", side=SIDE), _image(SIDE), tmp_path)


def shuffled_groups(aio: Path) -> set[int]:
    """Prunable groups whose channels some weight axis carries shuffled (``repeat`` > 1)."""
    from edgert.variants import aiofile

    meta = aiofile.read_meta(aio)
    fixed = {g["id"] for g in meta["groups"] if g["fixed"]}
    return {g for p in meta["template"]["param_axes"] if p.get("repeat", 1) > 1
            for g, _ in p["segments"]} - fixed


@pytest.mark.slow
def test_shufflenet_levels_prune_the_shuffled_channels(tmp_path: Path) -> None:
    """ShuffleNetV2 x1.0 through the TorchScript exporter: ``chunk`` is two Slices whose bounds
    are Shape arithmetic (folded first), the shuffle a Reshape/Transpose/Reshape. Both halves of
    every shuffle keep the same channels, and the channels passed through several blocks are
    pruned at each split in two; stage 2's halves of 58 channels split into 29 and then not
    again, so its later blocks stay whole. Every level removes about its ratio of the weights
    and equals the full model with its dropped channels masked."""
    model = export_cnn("shufflenet_v2_x1_0", tmp_path / "s.onnx", side=SIDE)
    check_levels(model, _image(SIDE), tmp_path)
    assert len(shuffled_groups(tmp_path / "m.aio")) >= 6
    masked_equals_levels(tmp_path / "m.aio", _image(SIDE), tmp_path)


def test_torchscript_vit_levels_prune_whole_heads(tmp_path: Path) -> None:
    """torchvision's ViT through the TorchScript exporter: the fused in_proj is unflattened by
    a Reshape whose target is computed from Shape/Slice/Mod/Concat (neither ONNX's nor ORT's
    shape inference types it), then Unsqueeze, Transpose, Squeeze and Gather pick Q, K, V.
    With the static shape arithmetic folded first, every layer's two heads of 32 follow one
    group pruned by whole heads, beside the MLP width."""
    model = export_vit(tmp_path / "vit.onnx")
    assert head_groups(model) == [(64, 32)] * 2
    removed = check_levels(model, _image(32), tmp_path, ratio_check=False)
    for r, got in zip(RATIOS[1:], removed[1:]):
        assert 0.3 * r <= got <= r, (r, got)
    masked_equals_levels(tmp_path / "m.aio", _image(32), tmp_path)


def test_bert_levels_prune_heads_and_mlp_width(tmp_path: Path) -> None:
    """transformers' BERT through the TorchScript exporter: heads (Reshape to (1, 16, -1, 16), Q K^T,
    the mask, P V, Reshape back) follow one group per layer pruned by whole heads, with the MLP
    width; the residual width stays."""
    pytest.importorskip("transformers")
    import onnx

    model = export_bert(tmp_path / "bert.onnx")
    proto = onnx.load(model)
    assert head_groups(model) == [(64, 16)] * 2  # one per layer: 4 heads of 16
    removed = check_levels(model, _tokens(), tmp_path, ratio_check=False)
    masked_equals_levels(tmp_path / "m.aio", _tokens(), tmp_path)
    # the embedding tables (read by Gather) keep the residual width: only the rest prunes, and
    # every pruned weight is cut on one axis (heads, MLP width), so a level removes about r of it
    tables = {n.input[0] for n in proto.graph.node if n.op_type == "Gather"}
    sizes = {t.name: np.prod(t.dims) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    prunable = 1 - sum(v for k, v in sizes.items() if k in tables) / sum(sizes.values())
    for r, got in zip(RATIOS, removed):
        assert r * prunable - 0.1 <= got <= r + 0.05, (r, got, prunable)


# ----------------------------------------------------- the real-model zoo (dynamo exports)

@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    """tools/make_real_zoo.py exports with torch.onnx's dynamo exporter (optimize=True): SE
    pooling as ReduceMean, flatten as Reshape, equal weights shared by name. Returns
    ``name -> (path, feeds)``."""
    import importlib.util
    import sys

    pytest.importorskip("transformers")
    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_real_zoo", repo / "tools" / "make_real_zoo.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool
    spec.loader.exec_module(tool)
    out = tmp_path_factory.mktemp("real_zoo")

    def get(name: str) -> tuple[Path, dict[str, np.ndarray]]:
        path = tool.build([name], out)[name]
        return path, tool.inputs(path)
    yield get
    shutil.rmtree(out)  # hundreds of MB of exports: not kept to the session's end


@pytest.mark.parametrize("name", ["squeezenet1_1", "mobilenet_v3_small"])
def test_zoo_cnn_levels(zoo, name: str, tmp_path: Path) -> None:
    check_levels(*zoo(name), tmp_path)


def test_zoo_shufflenet_levels_prune_the_shuffled_channels(zoo, tmp_path: Path) -> None:
    """ShuffleNetV2 x0.5 (dynamo export: Split into halves, Reshape/Transpose/Reshape shuffle):
    channel i of both halves of a shuffle is kept or dropped together and the shuffle's shape
    constants and the Split sizes are rewritten per level, so the branches and the channels
    passed through are pruned; only stage 3's blocks past its fourth split (3 channels of 32
    entries cannot be halved) stay whole. Each level removes about its ratio and equals the
    full model with the dropped channels masked where they are consumed."""
    from edgert.variants import aiofile

    path, feeds = zoo("shufflenet_v2")
    path = with_random_classifier(path, tmp_path / "shufflenet.onnx", zero_bias=True)
    check_levels(path, feeds, tmp_path)
    whole = [g for g in aiofile.read_meta(tmp_path / "m.aio")["groups"] if g["fixed"]]
    assert len(whole) <= 6, whole  # input, output, stage 3's tail (21 before shuffles were followed)
    assert len(shuffled_groups(tmp_path / "m.aio")) >= 8
    masked_equals_levels(tmp_path / "m.aio", feeds, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["regnet_y_400mf", "efficientnet_b0", "resnet50", "convnext_tiny"])
def test_zoo_large_cnn_levels(zoo, name: str, tmp_path: Path) -> None:
    check_levels(*zoo(name), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["branchy_resnet18", "cond_mobilenet_v3", "loop_resnet18"])
def test_zoo_control_flow_cnn_levels(zoo, name: str, tmp_path: Path) -> None:
    """If/Loop bodies are not analysed: what they read keeps its channels, the rest prunes."""
    removed = check_levels(*zoo(name), tmp_path, ratio_check=False)
    assert 0 < removed[1] < removed[2] < removed[3]


def head_groups(model: Path) -> list[tuple[int, int]]:
    """(size, block) of the prunable groups that are pruned by whole heads (block > 1)."""
    import onnx

    from edgert.variants.groups import analyze
    from edgert.variants.prune import fold_static_shapes, untie_constants

    graph = analyze(untie_constants(fold_static_shapes(onnx.load(model))))
    return sorted((g.size, g.block) for g in graph.prunable() if g.block > 1)


def masked_equals_levels(aio: Path, feeds: dict[str, np.ndarray], tmp_path: Path) -> None:
    """Every level computes what the full model computes with the level's dropped heads and
    MLP channels zeroed where they are consumed (out_proj columns, fc2 rows): heads are
    independent until the output projection sums them, so removing them is exactly that. The
    same holds for a CNN's channels (a dropped channel reaches the output only through the
    convs that consume it)."""
    from edgert.variants import aiofile
    from edgert.variants.prune import replace_weights
    from edgert.variants.ranges import group_offsets

    f = aiofile.read(aio)
    try:
        meta, tensors = f.meta, {k: np.array(v) for k, v in f.tensors.items()}
    finally:
        f.close()
    consumers = [p for p in meta["template"]["param_axes"] if p["role"] == "consumer"]
    with open_variants(aio, threads=1) as vm:
        for index, level in enumerate(meta["levels"][1:], 1):
            kept = {int(g): k for g, k in level["kept"].items()}
            masked = {}
            for p in consumers:
                value = masked.setdefault(p["init"], tensors[p["init"]].copy())
                repeat = p.get("repeat", 1)  # shuffled channels span that many entries each
                for gid, start, n in group_offsets(tuple(map(tuple, p["segments"])), repeat):
                    if gid in kept:
                        span = [slice(None)] * value.ndim
                        span[p["axis"]] = slice(start + kept[gid] * repeat, start + n)
                        value[tuple(span)] = 0
            replace_weights(aio, tmp_path / f"masked{index}.aio", masked)
            vm.select_index(index)
            got = vm.run(feeds)[0]
            with open_variants(tmp_path / f"masked{index}.aio", threads=1) as full:
                want = full.run(feeds)[0]  # level 0: the whole model, masked
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_zoo_vit_levels_prune_whole_heads(zoo, tmp_path: Path) -> None:
    """torchvision's ViT (dynamo export): the fused in_proj (192 -> 576) is reshaped to
    (Q/K/V, 192), moved by Unsqueeze/Transpose/Squeeze and picked by Gather; each pick is cut
    into a group of its own, and Q, K, V meet per head in Q K^T and P V: one group of three
    heads of 64 per layer, pruned by whole heads."""
    path, feeds = zoo("vit_tiny")
    model = with_random_classifier(path, tmp_path / "vit.onnx")
    assert head_groups(model) == [(192, 64)] * 4
    removed = check_levels(model, feeds, tmp_path, ratio_check=False)
    assert 0 < removed[1] < removed[2] < removed[3] <= 0.75
    masked_equals_levels(tmp_path / "m.aio", feeds, tmp_path)


def test_zoo_bert_levels_prune_whole_heads(zoo, tmp_path: Path) -> None:
    """The dynamo export splits heads with a shape computed at run time ((B, S) from Shape,
    -1, 64), folds the batch into the heads to transpose K ((B*H, S, 64), symbolic dims) and
    unfolds it with another computed shape: both layers prune whole heads of 64."""
    path, feeds = zoo("bert_2l")
    assert head_groups(path) == [(128, 64)] * 2
    removed = check_levels(path, feeds, tmp_path, ratio_check=False)
    assert 0 < removed[1] < removed[2] < removed[3] <= 0.75
    masked_equals_levels(tmp_path / "m.aio", feeds, tmp_path)


def test_zoo_vit_configuration_with_different_heads_per_layer(zoo, tmp_path: Path) -> None:
    """A per-layer width configuration (``config_graph.build``) rewrites the heads in the
    Reshape targets too: the first layer keeps one head of three, the others all, and the run
    computes the full model with the dropped heads' output projection inputs zeroed."""
    from edgert.variants import Config, aiofile, config_graph
    from edgert.variants.prune import replace_weights
    from edgert.variants.ranges import group_offsets

    path, feeds = zoo("vit_tiny")
    path = with_random_classifier(path, tmp_path / "vit.onnx")
    prune(path, RATIOS, tmp_path / "m.aio")
    f = aiofile.read(tmp_path / "m.aio")
    try:
        meta, tensors = f.meta, {k: np.array(v) for k, v in f.tensors.items()}
    finally:
        f.close()
    heads = sorted(g["id"] for g in meta["groups"] if g["block"] == 64 and not g["fixed"])
    kept = {g["id"]: g["size"] for g in meta["groups"] if not g["fixed"]}
    kept[heads[0]] = 64
    config = Config(tuple(sorted(kept.items())))
    masked = {}
    for p in meta["template"]["param_axes"]:
        if p["role"] == "consumer" and any(g == heads[0] for g, _ in p["segments"]):
            value = masked[p["init"]] = tensors[p["init"]].copy()
            for gid, start, n in group_offsets(tuple(map(tuple, p["segments"]))):
                if gid == heads[0]:
                    span = [slice(None)] * value.ndim
                    span[p["axis"]] = slice(start + 64, start + n)
                    value[tuple(span)] = 0
    replace_weights(tmp_path / "m.aio", tmp_path / "masked.aio", masked)
    with open_variants(tmp_path / "m.aio", threads=1, graph_builder=config_graph.build) as vm:
        vm.select_config(config)
        got = vm.run(feeds)[0]
    with open_variants(tmp_path / "masked.aio", threads=1) as full:
        want = full.run(feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    assert not np.allclose(got, full_output(path, feeds), rtol=1e-3, atol=1e-3)  # a head was dropped


def full_output(model: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.slow
def test_zoo_gpt2_levels_prune_whole_heads(zoo, tmp_path: Path) -> None:
    """GPT-2's fused c_attn (128 -> 384) is cut by a Split into Q, K, V (the Split's sizes
    are rewritten per level), heads are split with a constant (1, -1, 2, 64)."""
    path, feeds = zoo("gpt2_2l")
    assert head_groups(path) == [(128, 64)] * 2
    removed = check_levels(path, feeds, tmp_path, ratio_check=False)
    assert 0 < removed[1] < removed[2] < removed[3] <= 0.75
    masked_equals_levels(tmp_path / "m.aio", feeds, tmp_path)
