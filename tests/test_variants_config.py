"""Per-layer width configurations: encoding, checks, and on-demand sessions on the zoo ResNet.

The reference for a configuration's output is independent of the runtime's slicing: the
full (permuted) model from the file with every removed channel masked out (its producer
weights, bias and BN scale/shift set to zero), run by a plain ORT session.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgert.errors import UsageError
from edgert.variants import aiofile
from edgert.variants import config as C
from edgert.variants import config_graph
from edgert.variants import open as open_variants
from edgert.variants.adaptive_configs import ConfigAdaptiveModel


@pytest.fixture(scope="module")
def meta(resnet_aio: Path) -> dict:
    return aiofile.read_meta(resnet_aio)


def _random_config(meta: dict, seed: int) -> C.Config:
    rng = random.Random(seed)
    return C.make(meta, {g: rng.choice(ws) for g, ws in C.candidate_widths(meta).items()})


def _masked_reference(aio: Path, config: C.Config) -> ort.InferenceSession:
    """The full permuted model with the channels ``config`` removes zeroed at their producers."""
    f = aiofile.read(aio)
    meta, tensors = f.meta, {k: np.array(v) for k, v in f.tensors.items()}
    f.close()
    model = onnx.load_from_string(bytes(tensors[meta["levels"][0]["graph"]]))
    kept = config.as_dict()
    weights = {name: tensors[name].copy() for name in meta["levels"][0]["params"]}
    for p in meta["template"]["param_axes"]:
        if p["role"] not in ("producer", "bn_scale") and not (p["role"] == "channel" and p["init"].endswith(
                ("bias", "beta"))):
            continue
        start = 0
        for gid, n in p["segments"]:
            if gid in kept and kept[gid] < n:
                index = [slice(None)] * weights[p["init"]].ndim
                index[p["axis"]] = slice(start + kept[gid], start + n)
                weights[p["init"]][tuple(index)] = 0.0
            start += n
    for t in model.graph.initializer:
        if t.name in weights:
            t.CopyFrom(numpy_helper.from_array(weights[t.name], t.name))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_encoding_round_trip_and_key(meta: dict) -> None:
    config = _random_config(meta, 0)
    text = config.encode()
    assert C.decode(meta, text) == config
    shuffled = ",".join(reversed(text.split(",")))
    assert C.decode(meta, shuffled).encode() == text  # canonical whatever the order given
    assert C.decode(meta, shuffled).key == config.key and len(config.key) == 16
    other = _random_config(meta, 1)
    assert other != config and other.key != config.key
    assert C.of_level(meta, 2).as_dict() == {int(g): k for g, k in meta["levels"][2]["kept"].items()}


@pytest.mark.parametrize("text, message", [
    ("1:8", "missing groups"),
    ("garbage", "not GROUP:KEPT"),
    ("1:x", "must be an integer"),
])
def test_bad_configurations_are_refused(meta: dict, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        C.decode(meta, text)


def test_out_of_range_and_unknown_groups(meta: dict) -> None:
    kept = _random_config(meta, 0).as_dict()
    first = next(iter(kept))
    with pytest.raises(UsageError, match="out of range"):
        C.make(meta, {**kept, first: 10_000})
    with pytest.raises(UsageError, match="out of range"):
        C.make(meta, {**kept, first: 0})
    fixed = next(g["id"] for g in meta["groups"] if g["fixed"] is not None)
    with pytest.raises(UsageError, match="not prunable"):
        C.make(meta, {**kept, fixed: 1})


def test_uniform_configuration_equals_its_level(resnet_aio: Path, meta: dict) -> None:
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 160, 160)).astype(np.float32)}
    with open_variants(resnet_aio, threads=1) as vm:
        for index in (1, 3):
            vm.select_index(index)
            level = vm.run(feeds)[0]
            vm.select_config(C.of_level(meta, index))
            np.testing.assert_allclose(vm.run(feeds)[0], level, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixed_configuration_equals_masked_full_model(resnet_aio: Path, meta: dict, seed: int) -> None:
    config = _random_config(meta, seed)
    assert len(set(config.as_dict().values())) > 2  # really per-layer, not a level
    feeds = {"input": np.random.default_rng(seed).standard_normal((1, 3, 160, 160)).astype(np.float32)}
    reference = _masked_reference(resnet_aio, config).run(None, feeds)[0]
    with open_variants(resnet_aio, threads=1, graph_builder=config_graph.build) as vm:
        vm.select_config(config)
        out = vm.run(feeds)[0]
        assert vm.config == config
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
    full = _masked_reference(resnet_aio, C.of_level(meta, 0)).run(None, feeds)[0]
    assert not np.allclose(out, full, atol=1e-3)  # the masking did remove something


def test_cache_keeps_sessions_within_budget(resnet_aio: Path, meta: dict) -> None:
    configs = [_random_config(meta, s) for s in range(4)]
    feeds = {"input": np.zeros((1, 3, 160, 160), np.float32)}
    with open_variants(resnet_aio, threads=1, config_budget=None, graph_builder=config_graph.build) as vm:
        for c in configs + configs:
            vm.select_config(c)
            vm.run(feeds)
        assert vm.configs.built == 4 and len(vm.configs) == 4  # the second pass hit the cache
    with open_variants(resnet_aio, threads=1, config_budget=0.05, graph_builder=config_graph.build) as vm:
        for c in configs:
            vm.select_config(c)
        assert len(vm.configs) < 4 and configs[-1] in vm.configs
        assert vm.configs.copied_bytes <= 0.05 * vm.full_weight_bytes or len(vm.configs) == 1
        vm.select_index(0)
        assert vm.config is None


def test_cache_budget_bounds_sessions_that_copy_little(resnet_aio: Path, meta: dict) -> None:
    """Near-full configurations copy few weights, yet each ORT session holds memory (pre-packed
    copies of weights read in place): the budget charges every weight byte, so they are evicted."""
    full = C.of_level(meta, 0).as_dict()
    configs = [C.make(meta, {**full, g: k // 2}) for g, k in list(C.prunable(meta).items())[:4]]
    with open_variants(resnet_aio, threads=1, config_budget=None, graph_builder=config_graph.build) as vm:
        vm.configs.warm(configs)
        copied_by_all = vm.configs.copied_bytes
        assert copied_by_all < 0.1 * vm.full_weight_bytes  # counting copies alone kept all four
    with open_variants(resnet_aio, threads=1, config_budget=1.5, graph_builder=config_graph.build) as vm:
        vm.configs.warm(configs)
        assert len(vm.configs) == 1 and vm.configs.built == 4
        assert vm.configs.weight_bytes <= 1.5 * vm.full_weight_bytes


@pytest.mark.parametrize("call, message", [
    (lambda vm, meta: vm.select_config("1:8"), "config.Config"),
    (lambda vm, meta: vm.select_config(C.Config(((1, 0),))), "every prunable group"),
    (lambda vm, meta: vm.select_index(-1), "0..3"),
    (lambda vm, meta: vm.select_index(9), "0..3"),
    (lambda vm, meta: vm.select_index(1.0), "0..3"),
    (lambda vm, meta: vm.select(None), "finite"),
    (lambda vm, meta: vm.run(np.zeros((1, 3, 160, 160), np.float32)), "map input names"),
    (lambda vm, meta: C.make(meta, {g: k + 0.5 for g, k in C.of_level(meta, 0).kept}), "integer"),
    (lambda vm, meta: C.make(meta, None), "integer"),
])
def test_bad_runtime_arguments_are_one_line_errors(resnet_aio: Path, meta: dict, call, message: str) -> None:
    from edgert.errors import EdgertError

    with open_variants(resnet_aio, threads=1) as vm:
        with pytest.raises(EdgertError, match=message):
            call(vm, meta)


def test_numpy_scalars_are_numbers(resnet_aio: Path) -> None:
    """np.int64(1) was 'must be an integer', np.float32(0.5) 'must be a finite number'."""
    with open_variants(resnet_aio, threads=1) as vm:
        assert vm.select_index(np.int64(1)).index == 1
        assert vm.select(np.float32(0.5)).ratio == 0.5


def test_closed_model_and_bad_budgets(resnet_aio: Path) -> None:
    vm = open_variants(resnet_aio, threads=1)
    vm.close()
    for call in (lambda: vm.run({}), lambda: vm.select_index(0), lambda: vm.select_config(C.of_level(vm._file.meta, 0)),
                 lambda: vm.configs, vm.memory,  # a KeyError; old numbers
                 lambda: ConfigAdaptiveModel(vm, budget_ms=1.0, frequency_source=lambda: 1.0)):  # "no Pareto sets"
        with pytest.raises(UsageError, match="closed"):
            call()
    class ClosingFeeds(dict):
        """Closes the model while run() checks them, as a close() on another thread can."""
        def __iter__(self):
            model.close()
            return super().__iter__()

    model = open_variants(resnet_aio, threads=1)
    feeds = {s.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in s.shape], s.dtype)
             for s in model.inputs}
    assert model.run(ClosingFeeds(feeds))  # the call that raced close() still ran ('NoneType' before)
    with pytest.raises(UsageError, match="closed"):
        model.run(feeds)
    for budget, message in ((float("nan"), "finite"), (-5, "at least 0"), ("2", "finite")):
        with pytest.raises(UsageError, match=message):
            open_variants(resnet_aio, config_budget=budget)
    with pytest.raises(UsageError, match="threads"):
        open_variants(resnet_aio, threads="2")
