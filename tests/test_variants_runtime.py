"""The runtime on the zoo ResNet: smaller levels are faster, switching is cheap, memory is counted."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edgert.errors import BundleError, UsageError
from edgert.variants import open as open_variants
from edgert.variants.prune import prune
from edgert.variants.runtime import SMALL_MODEL_ALLOWANCE

RESNET = Path(__file__).resolve().parents[1] / "edgert" / "zoo" / "resnet.onnx"


def test_half_level_runs_at_most_0_6_of_the_full_weights(resnet_aio: Path) -> None:
    """How much faster it runs is measured by benchmarks/variants.py against the full level in
    the same run; a test on a shared machine checks what pruning controls: the weights (and
    with them each conv's multiply-adds) the level runs, and that it runs."""
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 160, 160)).astype(np.float32)}
    with open_variants(resnet_aio, threads=1) as vm:
        full = vm.run(feeds)[0]
        vm.select(0.5)
        half = vm.run(feeds)[0]
        assert vm.level.weight_bytes <= 0.6 * vm.levels[0].weight_bytes
    assert half.shape == full.shape and np.isfinite(half).all() and not np.array_equal(half, full)


def test_switch_is_well_under_a_millisecond(resnet_aio: Path) -> None:
    feeds = {"input": np.zeros((1, 3, 160, 160), np.float32)}
    with open_variants(resnet_aio, threads=1) as vm:
        for lv in vm.levels:  # warm every level up
            vm.select(lv.ratio)
            vm.run(feeds)
        times = []
        for i in range(200):
            t0 = time.perf_counter_ns()
            vm.select(vm.levels[i % len(vm.levels)].ratio)
            times.append(time.perf_counter_ns() - t0)
        assert np.median(times) < 1e6
        assert vm.level.ratio == vm.levels[199 % len(vm.levels)].ratio


def test_memory_accounting(resnet_aio: Path) -> None:
    with open_variants(resnet_aio, full_level="shared", memory_budget=1.3) as vm:
        mem = vm.memory()
        weights = [lv.weight_bytes for lv in vm.levels]
    assert weights == sorted(weights, reverse=True) and weights[-1] < 0.15 * weights[0]
    # a 1.3x budget buys a copy for the smallest level only: 0.5 would make it 1.31x
    assert mem["strategies"] == ["view", "slice", "slice", "copy"]
    assert mem["full_weight_bytes"] < mem["resident_bytes"] <= 1.3 * mem["full_weight_bytes"]
    assert mem["resident_bytes"] == mem["full_weight_bytes"] + mem["copied_bytes"]
    # measured, not derived: ORT's own copies and structures are outside resident_bytes
    assert isinstance(mem["opened_anon_bytes"], int) and mem["opened_anon_bytes"] > 0


def test_private_full_level_and_private_or_shared_smaller_levels(resnet_aio: Path, tmp_path: Path) -> None:
    """By default the full level is ORT's own copy (fully optimised), and the three smaller
    levels' own weights (0.56 + 0.25 + 0.06 of the full level) fit the 1.3x budget, so they
    are private too; a budget they do not fit makes them share the map."""
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 160, 160)).astype(np.float32)}
    with open_variants(resnet_aio) as private, open_variants(resnet_aio, full_level="shared") as shared:
        mem = private.memory()
        for lv in private.levels:
            private.select_index(lv.index)
            shared.select_index(lv.index)
            np.testing.assert_allclose(private.run(feeds)[0], shared.run(feeds)[0], rtol=1e-4, atol=1e-5)
    assert mem["strategies"] == ["private"] * 4 and mem["copied_bytes"] == 0
    assert mem["resident_bytes"] == sum(lv.weight_bytes for lv in private.levels)
    many = tmp_path / "many.aio"  # eight levels: the smaller ones' own copies are 2.8x the full level
    prune(RESNET, [round(0.1 * i, 1) for i in range(8)], many)
    with open_variants(many, memory_budget=1.3) as vm:
        mem = vm.memory()
        assert mem["strategies"][0] == "private" and set(mem["strategies"][1:]) <= {"slice", "copy"}
        # the shared levels read whole tensors from the map (1x) plus copies within the 1.3x budget
        assert mem["full_weight_bytes"] * 2 <= mem["resident_bytes"] <= 2.3 * mem["full_weight_bytes"]
    # the default budget lets a small model (this one's weights are a few MiB) keep every
    # level's own copy, because Slice nodes cost small models more than pruning saves
    with open_variants(many) as vm:
        mem = vm.memory()
        assert mem["full_weight_bytes"] * 2.8 < SMALL_MODEL_ALLOWANCE
        assert mem["strategies"] == ["private"] * 8
    with pytest.raises(UsageError, match="full_level"):
        open_variants(resnet_aio, full_level="fast")


def test_memory_budget_picks_copies_smallest_level_first(resnet_aio: Path) -> None:
    with open_variants(resnet_aio, memory_budget=1.32, full_level="shared") as vm:
        assert vm.memory()["strategies"] == ["view", "slice", "copy", "copy"]
    with open_variants(resnet_aio, memory_budget=None, full_level="shared") as vm:
        assert vm.memory()["strategies"] == ["view", "copy", "copy", "copy"]
        assert vm.memory()["resident_bytes"] > 1.8 * vm.full_weight_bytes
    with open_variants(resnet_aio, share_weights=False) as vm:
        assert vm.memory()["strategies"] == ["private"] * 4
        assert vm.memory()["resident_bytes"] == sum(lv.weight_bytes for lv in vm.levels)
    for bad, message in ((0.9, "at least 1"), (float("nan"), "finite"), ([2], "finite")):
        with pytest.raises(UsageError, match=message):
            open_variants(resnet_aio, memory_budget=bad)
    with pytest.raises(UsageError, match="'auto'"):
        open_variants(resnet_aio, memory_budget="big")


def test_ort_reads_the_weights_in_place(resnet_aio: Path) -> None:
    """The session uses the caller's buffer (changing it changes the output); through
    ``add_external_initializers`` (``in_place=False``) ORT works on its own copy."""
    from edgert.backends.ort import CallerWeightsSession
    from edgert.variants import aiofile

    f = aiofile.read(resnet_aio)
    level = f.meta["levels"][0]  # ratio 0: every weight whole
    graph = bytes(f.tensors[level["graph"]])
    weights = {name: np.array(f.tensors[spec["tensor"]]) for name, spec in level["params"].items()}
    f.close()
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 160, 160)).astype(np.float32)}
    outputs = {}
    for in_place in (True, False):
        session = CallerWeightsSession(graph, weights, location="aio", threads=1, in_place=in_place)
        before = session.run(feeds)[0]
        for w in weights.values():
            w *= 2
        outputs[in_place] = (before, session.run(feeds)[0])
        for w in weights.values():
            w /= 2
    assert not np.allclose(*outputs[True])
    np.testing.assert_array_equal(*outputs[False])


def test_unknown_ratio(resnet_aio: Path) -> None:
    with open_variants(resnet_aio) as vm:
        with pytest.raises(UsageError, match="0.25, 0.5"):
            vm.select(0.3)


def test_corrupt_file_is_refused(resnet_aio: Path, tmp_path: Path) -> None:
    raw = bytearray(resnet_aio.read_bytes())
    raw[len(raw) // 2] ^= 1
    bad = tmp_path / "bad.aio"
    bad.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum"):
        open_variants(bad)


def test_device_side_imports_neither_onnx_nor_torch(resnet_aio: Path) -> None:
    """The runtime and the selector load with onnx, torch and tvm unimportable."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'onnx', 'torch', 'tvm'}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Block())\n"
        "import numpy as np\n"
        "from edgert.variants import AdaptiveModel, open\n"
        f"vm = open({str(resnet_aio)!r})\n"
        "vm.select(0.75)\n"
        "print(vm.run({'input': np.zeros((1, 3, 160, 160), np.float32)})[0].shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 10)"


def test_prune_and_calibrate_through_the_cli(tmp_path):
    """`edgert prune` then `edgert calibrate --emulated` stores a table the runtime reads back."""
    from conftest import run_cli
    from edgert.variants import open as open_variants

    out = tmp_path / "r.aio"
    proc = run_cli("prune", "zoo:resnet", "--ratios", "0,0.5", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "ratio 0.5" in proc.stdout
    proc = run_cli("calibrate", str(out), "--emulated", "1.0,0.5", "--max-time", "0.3")
    assert proc.returncode == 0, proc.stderr
    with open_variants(out) as vm:
        table = vm.calibration
        assert table["emulated"] is True and table["ratios"] == [0.0, 0.5]
        assert len(table["p50_ms"]) == 2 and all(len(row) == 2 for row in table["p50_ms"])
    bad = run_cli("calibrate", str(out))
    assert bad.returncode == 2 and "choose one of" in bad.stderr


def test_calibrate_takes_the_size_of_a_symbolic_batch(tmp_path):
    """A file pruned from a model with a symbolic batch (the digits CNN has one) is calibrated
    with --shape N=SIZE, the option the error names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from conftest import run_cli

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (8, 3, 3, 3)), ("w2", (4, 8, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "batch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    out = tmp_path / "m.aio"
    assert run_cli("prune", str(tmp_path / "m.onnx"), "--ratios", "0,0.5", "-o", str(out)).returncode == 0
    bad = run_cli("calibrate", str(out), "--emulated", "1.0", "--max-time", "0.2")
    assert bad.returncode == 1 and "--shape N=SIZE" in bad.stderr and "Traceback" not in bad.stderr
    proc = run_cli("calibrate", str(out), "--emulated", "1.0", "--max-time", "0.2", "--shape", "N=2")
    assert proc.returncode == 0, proc.stderr
    with open_variants(out) as vm:
        assert len(vm.calibration["p50_ms"]) == 2
